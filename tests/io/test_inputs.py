"""Zarr inputs as lncc sees them: shape, dtype, chunks, format, dims and coordinates from the metadata, and one
clear InputError for what is not a zarr array."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr

from pipeline.errors import InputError
from pipeline.io import inspect_input, write_array
from support import non_zarr

FORMATS = [2, 3]


def raw_zarr(path, data, zarr_format):
    """An array written with zarr alone, with no dimension names of any kind."""
    array = zarr.create_array(store=str(path), shape=data.shape, chunks=data.shape, dtype=data.dtype,
                              zarr_format=zarr_format)
    array[...] = data
    return str(path)


@pytest.mark.parametrize("zarr_format", FORMATS)
def test_inspect_reads_metadata(tmp_path, zarr_format):
    """Shape, dtype, chunks, format and the stored dim names come from the array's metadata."""
    data = np.arange(12 * 20, dtype=np.int16).reshape(12, 20)
    url = write_array(str(tmp_path / "a.zarr"), data, dims=("row", "col"), chunks=(5, 8), zarr_format=zarr_format)
    if zarr_format == 3:
        meta = json.loads((tmp_path / "a.zarr" / "zarr.json").read_text())
        assert meta["dimension_names"] == ["row", "col"]
    else:
        attrs = json.loads((tmp_path / "a.zarr" / ".zattrs").read_text())
        assert attrs["_ARRAY_DIMENSIONS"] == ["row", "col"]
    info = inspect_input(url)
    assert info.url == url
    assert info.shape == (12, 20)
    assert info.dtype == np.dtype(np.int16)
    assert info.dims == ("row", "col")
    assert info.zarr_chunks == (5, 8)
    assert info.zarr_format == zarr_format
    assert info.coords == {}


@pytest.mark.parametrize("zarr_format", FORMATS)
@pytest.mark.parametrize(("shape", "dims"), [((6, 7), ("y", "x")), ((2, 6, 7), ("t", "y", "x"))], ids=["2d", "3d"])
def test_inspect_default_dims(tmp_path, zarr_format, shape, dims):
    """Without names in the metadata the dims are (y, x) or (t, y, x)."""
    url = raw_zarr(tmp_path / "raw.zarr", np.zeros(shape, dtype=np.float32), zarr_format)
    info = inspect_input(url)
    assert info.dims == dims
    assert info.shape == shape and info.dtype == np.dtype(np.float32)


@pytest.mark.parametrize("zarr_format", FORMATS)
def test_inspect_config_dims_override_metadata(tmp_path, zarr_format):
    """dims from the config win over the names stored in the metadata."""
    url = write_array(str(tmp_path / "a.zarr"), np.zeros((3, 6, 7), np.uint8), dims=("time", "row", "col"),
                      zarr_format=zarr_format)
    assert inspect_input(url).dims == ("time", "row", "col")
    assert inspect_input(url, ["f", "v", "u"]).dims == ("f", "v", "u")


@pytest.mark.parametrize("zarr_format", FORMATS)
def test_inspect_dims_length_mismatch(tmp_path, zarr_format):
    """Config dims with the wrong number of names raise InputError naming the shape."""
    url = write_array(str(tmp_path / "a.zarr"), np.zeros((6, 7), np.uint8), zarr_format=zarr_format)
    with pytest.raises(InputError) as info:
        inspect_input(url, ["t", "y", "x"])
    assert "(6, 7)" in str(info.value) and "give 2 names" in str(info.value)


def test_inspect_4d_without_dims(tmp_path):
    """A 4-D array has no default dims: InputError."""
    url = raw_zarr(tmp_path / "a4.zarr", np.zeros((2, 2, 4, 4), np.uint8), 3)
    with pytest.raises(InputError, match="4-D"):
        inspect_input(url)


@pytest.mark.parametrize("zarr_format", FORMATS)
def test_inspect_array_inside_nested_group(tmp_path, zarr_format):
    """An array given as store.zarr/sub/arr is found, with its metadata."""
    root = zarr.open_group(str(tmp_path / "store.zarr"), mode="w", zarr_format=zarr_format)
    root.create_group("sub")
    url = write_array(str(tmp_path / "store.zarr" / "sub"), np.ones((9, 11), np.uint16), dims=("y", "x"),
                      chunks=(4, 4), zarr_format=zarr_format, name="arr")
    assert url.endswith("store.zarr/sub/arr")
    info = inspect_input(url)
    assert info.shape == (9, 11) and info.dtype == np.dtype(np.uint16)
    assert info.zarr_chunks == (4, 4) and info.zarr_format == zarr_format


@pytest.mark.parametrize("zarr_format", FORMATS)
def test_inspect_coords_from_parent_group(tmp_path, zarr_format):
    """Dimension coordinates written beside the array (xarray layout) are picked up with their values."""
    y = 100.0 + 0.5 * np.arange(9)
    x = -3.0 + 2.0 * np.arange(11)
    url = write_array(str(tmp_path / "g.zarr"), np.ones((9, 11), np.uint8), dims=("y", "x"),
                      zarr_format=zarr_format, name="img", coords={"y": y, "x": x})
    info = inspect_input(url)
    assert set(info.coords) == {"y", "x"}
    np.testing.assert_array_equal(np.asarray(info.coords["y"]), y)
    np.testing.assert_array_equal(np.asarray(info.coords["x"]), x)


@pytest.mark.parametrize("zarr_format", [
    2,
    3,
])
def test_inspect_coords_starting_at_zero(tmp_path, zarr_format):
    """Pixel-centre coordinates 0, 1, 2, ... (as the demo writes them) come back unchanged, 0 included."""
    y = np.arange(9, dtype=np.float64)
    x = np.arange(11, dtype=np.float64)
    url = write_array(str(tmp_path / "g.zarr"), np.ones((9, 11), np.uint8), dims=("y", "x"),
                      zarr_format=zarr_format, name="img", coords={"y": y, "x": x})
    info = inspect_input(url)
    np.testing.assert_array_equal(np.asarray(info.coords["y"]), y)
    np.testing.assert_array_equal(np.asarray(info.coords["x"]), x)


@pytest.mark.parametrize("zarr_format", FORMATS)
def test_inspect_group_instead_of_array(tmp_path, zarr_format):
    """A group path raises InputError that lists the arrays inside it."""
    group_url = str(tmp_path / "g.zarr")
    write_array(group_url, np.ones((5, 5), np.uint8), zarr_format=zarr_format, name="left")
    write_array(group_url, np.ones((5, 5), np.uint8), zarr_format=zarr_format, name="right")
    with pytest.raises(InputError) as info:
        inspect_input(group_url)
    message = str(info.value)
    assert "group" in message
    assert "left" in message and "right" in message


def test_inspect_missing_path(tmp_path):
    """A path that does not exist raises InputError naming it."""
    url = str(tmp_path / "missing.zarr")
    with pytest.raises(InputError) as info:
        inspect_input(url)
    assert "missing.zarr" in str(info.value) and "does not exist" in str(info.value)


@pytest.mark.parametrize("kind", ["directory", "file"])
def test_inspect_non_zarr_path(tmp_path, kind):
    """A plain directory or file raises InputError naming the path."""
    url = non_zarr(tmp_path, kind)
    with pytest.raises(InputError) as info:
        inspect_input(url)
    assert repr(url) in str(info.value)


@pytest.mark.parametrize("kind", ["directory", "file"])
def test_inspect_non_zarr_path_is_not_called_missing(tmp_path, kind):
    """An existing non-zarr path is reported as not a zarr array, not as missing."""
    url = non_zarr(tmp_path, kind)
    with pytest.raises(InputError) as info:
        inspect_input(url)
    assert "does not exist" not in str(info.value)
    assert "not a readable zarr array" in str(info.value)
