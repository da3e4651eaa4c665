"""Zarr input inspection, output state, and whole runs through pipeline.job.run on real stores."""

from __future__ import annotations

import json
from importlib.metadata import version

import numpy as np
import pytest
import xarray as xr
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import parse_config
from pipeline.errors import InputError
from pipeline.io import PROVENANCE_KEY, inspect_input, read_provenance, write_array
from pipeline.io import output_state
from pipeline.job import run
from pipeline.io.readers.chunks import ChunkReader
from pipeline.io.writers.files import write_file
from pipeline.testing import reference_ncc, sample_pair

FORMATS = [2, 3]


def raw_zarr(path, data, zarr_format):
    """An array written with zarr alone, with no dimension names of any kind."""
    array = zarr.create_array(store=str(path), shape=data.shape, chunks=data.shape, dtype=data.dtype,
                              zarr_format=zarr_format)
    array[...] = data
    return str(path)


# --- inspect_input --------------------------------------------------------------------------------


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


def _non_zarr(tmp_path, kind):
    if kind == "directory":
        path = tmp_path / "photos"
        path.mkdir()
        (path / "readme.txt").write_text("not zarr")
    else:
        path = tmp_path / "image.png"
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(32))
    return str(path)


@pytest.mark.parametrize("kind", ["directory", "file"])
def test_inspect_non_zarr_path(tmp_path, kind):
    """A plain directory or file raises InputError naming the path."""
    url = _non_zarr(tmp_path, kind)
    with pytest.raises(InputError) as info:
        inspect_input(url)
    assert repr(url) in str(info.value)


@pytest.mark.parametrize("kind", ["directory", "file"])
def test_inspect_non_zarr_path_is_not_called_missing(tmp_path, kind):
    """An existing non-zarr path is reported as not a zarr array, not as missing."""
    url = _non_zarr(tmp_path, kind)
    with pytest.raises(InputError) as info:
        inspect_input(url)
    assert "does not exist" not in str(info.value)
    assert "not a readable zarr array" in str(info.value)


# --- output_state ---------------------------------------------------------------------------------


def test_output_state_absent(tmp_path):
    """A missing path or an empty directory is 'absent'."""
    assert output_state(str(tmp_path / "new.zarr")) == "absent"
    (tmp_path / "empty.zarr").mkdir()
    assert output_state(str(tmp_path / "empty.zarr")) == "absent"


@pytest.mark.parametrize("zarr_format", FORMATS)
def test_output_state_lncc_and_foreign_zarr(tmp_path, zarr_format):
    """A group with the provenance attribute is 'lncc'; a plain group or an array is 'foreign'."""
    marked = zarr.open_group(str(tmp_path / "marked.zarr"), mode="w", zarr_format=zarr_format)
    marked.attrs[PROVENANCE_KEY] = {"status": "complete"}
    assert output_state(str(tmp_path / "marked.zarr")) == "lncc"
    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w", zarr_format=zarr_format)
    assert output_state(str(tmp_path / "plain.zarr")) == "foreign"
    array_url = write_array(str(tmp_path / "arr.zarr"), np.ones((4, 4), np.uint8), zarr_format=zarr_format)
    assert output_state(array_url) == "foreign"


@pytest.mark.parametrize("kind", ["directory", "file"])
def test_output_state_non_zarr_is_foreign(tmp_path, kind):
    """An existing non-zarr directory with files, or a plain file, is 'foreign'."""
    assert output_state(_non_zarr(tmp_path, kind)) == "foreign"


# --- whole runs -----------------------------------------------------------------------------------


def make_pair(tmp_path, shape, zarr_format, *, dtype="uint16", seed=0, chunks=None, coords=None, dims=None):
    """Reference and moving arrays side by side in one group (with coords if given)."""
    ref, mov = sample_pair(shape, dtype, seed)
    group = str(tmp_path / f"inputs-v{zarr_format}.zarr")
    kwargs = dict(dims=dims, chunks=chunks, zarr_format=zarr_format, coords=coords)
    ref_url = write_array(group, ref, name="ref", **kwargs)
    mov_url = write_array(group, mov, name="mov", **kwargs)
    return ref, mov, ref_url, mov_url


@pytest.mark.parametrize("zarr_format", FORMATS)
def test_run_2d_output(tmp_path, zarr_format):
    """A 2-D run writes a complete, xarray-readable float32 map equal to the reference, chunked as processed."""
    shape = (100, 130)
    y = 1000.0 + 0.25 * np.arange(shape[0])
    x = 5.0 + 2.0 * np.arange(shape[1])
    ref, mov, ref_url, mov_url = make_pair(tmp_path, shape, zarr_format, chunks=(50, 50), coords={"y": y, "x": x})
    out_format = 5 - zarr_format  # the output format follows the config, not the inputs
    out = str(tmp_path / "ncc.zarr")
    cfg = parse_config({"reference": ref_url, "moving": mov_url, "output": out, "window": 7,
                        "chunks": {"y": 32, "x": 48}, "zarr_format": out_format, "compressor": "zstd"})
    summary = run(cfg)

    assert [p.output for p in summary.pairs] == [out]
    assert summary.pixels == 100 * 130
    ds = xr.open_zarr(out)
    ncc = ds["ncc"]
    assert ncc.dtype == np.float32
    assert ncc.dims == ("y", "x")
    np.testing.assert_array_equal(ncc["y"].values, y)
    np.testing.assert_array_equal(ncc["x"].values, x)
    expected = reference_ncc(ref, mov, 7)
    np.testing.assert_allclose(ncc.values, expected, rtol=0, atol=1e-6)
    assert np.std(expected) > 0.05  # a real map, not a constant

    group = zarr.open_group(out, mode="r")
    assert group.metadata.zarr_format == out_format
    assert group["ncc"].chunks == (32, 48)
    assert ncc.encoding["chunks"] == (32, 48)

    prov = read_provenance(out)
    assert prov["status"] == "complete"
    assert prov["version"] == version("lncc")
    assert prov["config"]["window"] == 7
    assert prov["config"]["chunks"] == {"y": 32, "x": 48}
    assert prov["config"]["zarr_format"] == out_format
    assert prov["config"]["reference"] == ref_url and prov["config"]["output"] == out
    assert prov["processing_chunks"] == [32, 48]
    for role, url in (("reference", ref_url), ("moving", mov_url)):
        assert prov["inputs"][role] == {"url": url, "shape": [100, 130], "dtype": "uint16", "dims": ["y", "x"],
                                        "zarr_format": zarr_format}
    assert prov["summary"]["mean"] == pytest.approx(float(np.mean(expected)), abs=1e-4)
    assert output_state(out) == "lncc"


@pytest.mark.parametrize("zarr_format", FORMATS)
def test_run_3d_output(tmp_path, zarr_format):
    """A (t, y, x) run keeps the stored dims and writes zarr chunks equal to the processing chunks."""
    ref, mov, ref_url, mov_url = make_pair(tmp_path, (5, 40, 50), zarr_format, dtype="float32", seed=2,
                                           dims=("time", "row", "col"), chunks=(1, 40, 50))
    out = str(tmp_path / "ncc3.zarr")
    cfg = parse_config({"reference": ref_url, "moving": mov_url, "output": out, "window": 5, "boundary": "nearest",
                        "chunks": {"time": 2, "row": 16, "col": 20}, "zarr_format": zarr_format})
    run(cfg)
    ncc = xr.open_zarr(out)["ncc"]
    assert ncc.dims == ("time", "row", "col")
    assert ncc.dtype == np.float32
    np.testing.assert_allclose(ncc.values, reference_ncc(ref, mov, 5, "nearest"), rtol=0, atol=1e-6)
    group = zarr.open_group(out, mode="r")
    assert group["ncc"].chunks == (2, 16, 20)
    assert group.metadata.zarr_format == zarr_format
    prov = read_provenance(out)
    assert prov["status"] == "complete"
    assert prov["inputs"]["moving"]["dims"] == ["time", "row", "col"]
    assert prov["processing_chunks"] == [2, 16, 20]


@pytest.mark.parametrize("zarr_format", [
    2,
    3,
])
def test_run_output_coords_starting_at_zero(tmp_path, zarr_format):
    """An input with coordinates 0, 1, 2, ... gives an output with exactly those coordinates."""
    shape = (20, 24)
    coords = {"y": np.arange(shape[0], dtype=np.float64), "x": np.arange(shape[1], dtype=np.float64)}
    _, _, ref_url, mov_url = make_pair(tmp_path, shape, zarr_format, coords=coords)
    out = str(tmp_path / "ncc.zarr")
    run(parse_config({"reference": ref_url, "moving": mov_url, "output": out, "window": 3,
                      "zarr_format": zarr_format}))
    ncc = xr.open_zarr(out)["ncc"]
    np.testing.assert_array_equal(ncc["y"].values, coords["y"])
    np.testing.assert_array_equal(ncc["x"].values, coords["x"])


def test_run_batch_writes_every_output(tmp_path):
    """A batch of two pairs writes both outputs, each complete and equal to its reference."""
    a1, b1, ref1, mov1 = make_pair(tmp_path, (40, 50), 3, seed=1)
    a2, b2, ref2, mov2 = make_pair(tmp_path, (30, 36), 2, seed=2)
    out1, out2 = str(tmp_path / "one.zarr"), str(tmp_path / "two.zarr")
    cfg = parse_config({"pairs": [{"reference": ref1, "moving": mov1, "output": out1},
                                  {"reference": ref2, "moving": mov2, "output": out2}], "window": 5})
    summary = run(cfg)
    assert [p.output for p in summary.pairs] == [out1, out2]
    for out, (a, b), url in ((out1, (a1, b1), ref1), (out2, (a2, b2), ref2)):
        np.testing.assert_allclose(xr.open_zarr(out)["ncc"].values, reference_ncc(a, b, 5), rtol=0, atol=1e-6)
        prov = read_provenance(out)
        assert prov["status"] == "complete"
        assert prov["inputs"]["reference"]["url"] == url


@pytest.fixture(scope="module")
def chunk_pair(tmp_path_factory):
    """One 100 x 130 pair stored with 25 x 26 zarr chunks, and its reference map (window 9)."""
    tmp = tmp_path_factory.mktemp("chunking")
    ref, mov, ref_url, mov_url = make_pair(tmp, (100, 130), 3, dtype="float32", seed=3, chunks=(25, 26))
    return tmp, ref_url, mov_url, reference_ncc(ref, mov, 9)


def _run_chunks(tmp, ref_url, mov_url, chunks, name):
    out = str(tmp / f"{name}.zarr")
    run(parse_config({"reference": ref_url, "moving": mov_url, "output": out, "window": 9, "chunks": chunks}))
    return xr.open_zarr(out)["ncc"].values


def test_chunking_never_changes_the_answer(chunk_pair):
    """The same pair with several chunk settings gives the same map (within 1e-6) as one whole-image chunk."""
    tmp, ref_url, mov_url, expected = chunk_pair
    settings = [
        {"y": 100, "x": 130},  # one chunk
        None,  # default: aligned with the zarr chunks
        {"y": 32, "x": 48},  # last chunks 4 and 34 rows/cols
        {"y": 10, "x": 13},  # many exact chunks
        {"y": 5, "x": 65},  # chunks barely longer than the radius
        {"y": 64},  # only one dim given
    ]
    whole = _run_chunks(tmp, ref_url, mov_url, settings[0], "whole")
    np.testing.assert_allclose(whole, expected, rtol=0, atol=1e-6)
    for i, chunks in enumerate(settings[1:]):
        got = _run_chunks(tmp, ref_url, mov_url, chunks, f"setting{i}")
        np.testing.assert_allclose(got, whole, rtol=0, atol=1e-6, err_msg=f"chunks {chunks}")


@pytest.mark.parametrize("chunks", [{"y": 7, "x": 130}, {"y": 100, "x": 16}], ids=["y7", "x16"])
def test_chunking_with_short_last_chunk(chunk_pair, chunks):
    """Chunks whose last block is shorter than the radius 4 (100 % 7 = 2, 130 % 16 = 2) give the same map."""
    tmp, ref_url, mov_url, expected = chunk_pair
    got = _run_chunks(tmp, ref_url, mov_url, chunks, "short-" + "-".join(map(str, chunks.values())))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_rerun_over_lncc_output(tmp_path):
    """A second run to the same output (an lncc output) needs no --force and replaces the map."""
    ref, mov, ref_url, mov_url = make_pair(tmp_path, (30, 40), 3)
    out = str(tmp_path / "ncc.zarr")
    run(parse_config({"reference": ref_url, "moving": mov_url, "output": out, "window": 3}))
    run(parse_config({"reference": ref_url, "moving": mov_url, "output": out, "window": 5}))
    assert read_provenance(out)["config"]["window"] == 5
    np.testing.assert_allclose(xr.open_zarr(out)["ncc"].values, reference_ncc(ref, mov, 5), rtol=0, atol=1e-6)


def test_run_refuses_foreign_zarr_output(tmp_path):
    """A zarr array not written by lncc at the output path is refused, with force too, and kept intact."""
    _, _, ref_url, mov_url = make_pair(tmp_path, (30, 40), 3)
    out = write_array(str(tmp_path / "theirs.zarr"), np.full((3, 3), 7, np.uint8))
    cfg = parse_config({"reference": ref_url, "moving": mov_url, "output": out})
    for force in (False, True):
        with pytest.raises(InputError, match="not written by lncc.*even with --force"):
            run(cfg, force=force)
        np.testing.assert_array_equal(zarr.open_array(out, mode="r")[...], np.full((3, 3), 7, np.uint8))


@pytest.mark.parametrize("zarr_format", FORMATS)
@pytest.mark.parametrize("compressor", ["lz4", "zstd", "none"])
@pytest.mark.parametrize("shape", [(37, 53), (3, 20, 30)])
def test_output_writer_direct_chunks_equal_zarr_writes(tmp_path, zarr_format, compressor, shape):
    """Chunks lncc encodes itself read back through zarr exactly, edge chunks and multi-chunk blocks included."""
    import dask.array as da

    from pipeline.io import OutputWriter, read_ledger
    from pipeline.io.codecs import direct_codec
    from pipeline.io import create_output
    from pipeline.core.stats import STATS_LENGTH

    rng = np.random.default_rng(1)
    values = rng.uniform(-1, 1, shape).astype(np.float32)
    values[..., 0, :3] = np.nan
    # blocks: 16-row chunks whose last block spans two chunks (as when a short chunk is merged)
    ychunks = (16, 21) if shape[-2] == 37 else (16, 4)
    chunks = shape[:-2] + (ychunks, (16, 16, 16, shape[-1] - 48) if shape[-1] > 48 else (16, shape[-1] - 16))
    template = xr.Dataset({"ncc": (("t", "y", "x")[-len(shape):], da.empty(shape, chunks=chunks, dtype=np.float32))})
    url = str(tmp_path / "out.zarr")
    create_output(url, template, {"status": "running"}, run_id="test", zarr_format=zarr_format,
                  compressor=compressor)
    assert direct_codec(zarr.open_array(store=url + "/ncc")) is not None  # the fast path is taken
    writer = OutputWriter(url, ("ncc",))
    block_chunks = template["ncc"].data.chunks
    for index in np.ndindex(*template["ncc"].data.numblocks):
        starts = [sum(c[:i]) for c, i in zip(block_chunks, index)]
        region = tuple(slice(s, s + c[i]) for s, c, i in zip(starts, block_chunks, index))
        writer.write({"ncc": values[region]}, region, index, np.ones(STATS_LENGTH))
    back = zarr.open_array(store=url + "/ncc", mode="r")[...]
    np.testing.assert_array_equal(back, values)
    assert not np.isnan(read_ledger(url)).any()
    assert not list((tmp_path / "out.zarr").rglob("*.partial"))


# --- lncc's own chunk reading and direct file writes -------------------------------------------------------------

_READ_LAYOUTS = [
    (2, None), (2, "zstd"), (2, "blosc"), (2, "lz4"),
    (3, None), (3, "zstd"), (3, "blosc"), (3, "gzip"),
]


def _stored_array(path, data, chunks, zarr_format, compressor, fill_value, drop=()):
    """A zarr array written by zarr itself, with some chunk files removed (they read as the fill value)."""
    from numcodecs import LZ4, Blosc, Zstd

    if compressor is None:
        kwargs = {"compressors": None}
    elif zarr_format == 2:
        kwargs = {"compressors": {"zstd": Zstd(level=1), "blosc": Blosc(cname="lz4", shuffle=Blosc.BITSHUFFLE),
                                  "lz4": LZ4()}[compressor]}
    else:
        from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec

        kwargs = {"compressors": {"zstd": ZstdCodec(level=1), "blosc": BloscCodec(cname="lz4"),
                                  "gzip": GzipCodec(level=1)}[compressor]}
    array = zarr.create_array(store=str(path), shape=data.shape, chunks=chunks, dtype=data.dtype,
                              zarr_format=zarr_format, fill_value=fill_value, **kwargs)
    array[...] = data
    for coords in drop:
        (path / array.metadata.encode_chunk_key(coords)).unlink(missing_ok=True)  # zarr skips fill-only chunks
    return array


@settings(max_examples=40, deadline=None)
@given(data=st.data(), layout=st.sampled_from(_READ_LAYOUTS),
       dtype=st.sampled_from(["uint8", "<u2", ">u2", "int16", "<f4", ">f8", "bool"]))
def test_chunk_reader_equals_zarr(tmp_path_factory, data, layout, dtype):
    """Any region read by lncc's own chunk reader equals zarr's read: edge chunks, missing chunks, byte orders."""

    zarr_format, compressor = layout
    ndim = data.draw(st.integers(2, 3))
    shape = tuple(data.draw(st.integers(1, 23)) for _ in range(ndim))
    chunks = tuple(data.draw(st.integers(1, n + 3)) for n in shape)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    values = (rng.integers(0, 2, shape) if dtype == "bool" else rng.uniform(0, 200, shape)).astype(dtype)
    grid = [-(-n // c) for n, c in zip(shape, chunks)]
    every = list(np.ndindex(*grid))
    drop = data.draw(st.lists(st.sampled_from(every), max_size=3, unique=True))
    fill = None if (zarr_format == 2 and data.draw(st.booleans())) else (True if dtype == "bool" else 7)
    path = tmp_path_factory.mktemp("read") / "a.zarr"
    _stored_array(path, values, chunks, zarr_format, compressor, fill, drop)
    reader = ChunkReader.for_array(zarr.open_array(store=str(path), mode="r"), str(path))
    assert reader is not None
    lo = [data.draw(st.integers(0, n - 1)) for n in shape]
    hi = [data.draw(st.integers(a + 1, n)) for a, n in zip(lo, shape)]
    key = tuple(slice(a, b) for a, b in zip(lo, hi))
    expected = zarr.open_array(store=str(path), mode="r")[key]
    got = reader[key]
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), layout=st.sampled_from(_READ_LAYOUTS), dtype=st.sampled_from(["uint8", ">u2", "<f4"]))
def test_pair_reads_through_the_chunk_cache_equal_zarr(tmp_path_factory, data, layout, dtype):
    """A sequence of overlapping region reads through a pair reader whose process keeps decoded chunks and
    chunk edges (the limit from none to all chunks, any edge width) equals zarr's reads, missing chunks included;
    a new reader of the same paths after the files changed never sees the old run's chunks."""
    from pipeline.io import open_pair

    zarr_format, compressor = layout
    ndim = data.draw(st.integers(2, 3))
    shape = tuple(data.draw(st.integers(1, 23)) for _ in range(ndim))
    chunks = tuple(data.draw(st.integers(1, n + 3)) for n in shape)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    grid = [-(-n // c) for n, c in zip(shape, chunks)]
    root = tmp_path_factory.mktemp("cache")
    infos = []
    for name in ("ref", "mov"):
        drop = data.draw(st.lists(st.sampled_from(list(np.ndindex(*grid))), max_size=2, unique=True))
        _stored_array(root / f"{name}.zarr", rng.uniform(0, 200, shape).astype(dtype), chunks, zarr_format,
                      compressor, 7, drop)
        infos.append(inspect_input(str(root / f"{name}.zarr")))
    itemsize = np.dtype(dtype).itemsize
    limit = data.draw(st.sampled_from([1, itemsize * int(np.prod(chunks)), 2**20]), label="limit")
    halo = data.draw(st.integers(1, 6), label="halo")

    def check(pair):
        expected = np.stack([zarr.open_array(store=i.url, mode="r")[...] for i in infos])
        for _ in range(data.draw(st.integers(1, 6), label="reads")):
            lo = [data.draw(st.integers(0, n - 1)) for n in shape]
            hi = [data.draw(st.integers(a + 1, n)) for a, n in zip(lo, shape)]
            region = [slice(a, b) for a, b in zip(lo, hi)]
            out = np.full((2,) + tuple(b - a for a, b in zip(lo, hi)), 99, dtype=dtype)
            pair.read_into(region, out)
            np.testing.assert_array_equal(out, expected[(slice(None),) + tuple(region)])

    check(open_pair(*infos, halo=halo, cache_bytes=limit))
    for i, info in enumerate(infos):  # new values under the same paths: a new run must read them
        zarr.open_array(store=info.url, mode="r+")[...] = rng.uniform(0, 200, shape).astype(dtype) + i
    check(open_pair(*infos, halo=halo, cache_bytes=limit))


@pytest.mark.parametrize("limit", [1, 2**20])
def test_chunk_cache_serves_each_edge_of_a_chunk(tmp_path, monkeypatch, limit):
    """After one read of a whole chunk, a read inside any of its four 2-wide edges is served from the cache
    (no chunk decoded); a read of its middle decodes it again (edges only) or not (whole chunks kept)."""
    from pipeline import io as lio

    values = np.arange(2 * 30 * 30, dtype=np.uint16).reshape(2, 30, 30)
    infos = []
    for i, name in enumerate(("ref", "mov")):
        _stored_array(tmp_path / f"{name}.zarr", values[i], (10, 10), 3, "zstd", 0, [])
        infos.append(inspect_input(str(tmp_path / f"{name}.zarr")))
    pair = lio.open_pair(*infos, halo=2, cache_bytes=limit)
    decoded = []
    original = ChunkReader._chunk
    monkeypatch.setattr(ChunkReader, "_chunk", lambda self, coords: decoded.append(coords) or original(self, coords))

    def read(ys, xs):
        out = np.zeros((2, ys.stop - ys.start, xs.stop - xs.start), dtype=np.uint16)
        pair.read_into([ys, xs], out)
        np.testing.assert_array_equal(out, values[:, ys, xs])

    read(slice(10, 19), slice(11, 20))  # chunk (1, 1) in part: its edges kept, and the whole chunk if it fits
    assert decoded == [(1, 1), (1, 1)]
    decoded.clear()
    for ys, xs in [(slice(10, 12), slice(13, 17)), (slice(18, 20), slice(10, 20)),  # top, bottom rows
                   (slice(13, 18), slice(10, 12)), (slice(12, 17), slice(18, 20))]:  # left, right columns
        read(ys, xs)
    assert decoded == []
    read(slice(13, 16), slice(13, 16))
    assert decoded == ([(1, 1), (1, 1)] if limit == 1 else [])


def test_chunk_reader_declines_layouts_it_does_not_know(tmp_path):
    """Sharded, filtered or Fortran-ordered arrays go through zarr, and open_input still reads them right."""
    import numcodecs

    from pipeline.io import open_input

    values = np.arange(40 * 30, dtype=np.uint16).reshape(40, 30)
    sharded = zarr.create_array(store=str(tmp_path / "s.zarr"), shape=values.shape, chunks=(10, 10),
                                shards=(20, 30), dtype=values.dtype)
    filtered = zarr.create_array(store=str(tmp_path / "f.zarr"), shape=values.shape, chunks=(10, 10),
                                 dtype=values.dtype, zarr_format=2, filters=[numcodecs.Delta(dtype="u2")])
    fortran = zarr.create_array(store=str(tmp_path / "o.zarr"), shape=values.shape, chunks=(10, 10),
                                dtype=values.dtype, zarr_format=2, order="F")
    for array in (sharded, filtered, fortran):
        array[...] = values
        url = str(array.store_path.store.root)
        assert ChunkReader.for_array(zarr.open_array(store=url, mode="r"), url) is None
        lazy = open_input(inspect_input(url), (16, 16))
        np.testing.assert_array_equal(lazy.values, values)


def test_run_on_a_pair_zarr_must_read_equals_the_in_memory_map(tmp_path):
    """A sharded reference and a delta-filtered moving image (layouts only zarr reads) run, each block task
    reading its own halo through zarr, to the in-memory map, with processing blocks across shard edges."""
    import numcodecs

    ref, mov = sample_pair((60, 50), "uint16", seed=17)
    sharded = zarr.create_array(store=str(tmp_path / "s.zarr"), shape=ref.shape, chunks=(10, 10),
                                shards=(20, 50), dtype=ref.dtype)
    filtered = zarr.create_array(store=str(tmp_path / "f.zarr"), shape=mov.shape, chunks=(10, 10),
                                 dtype=mov.dtype, zarr_format=2, filters=[numcodecs.Delta(dtype="u2")])
    sharded[...], filtered[...] = ref, mov
    out = str(tmp_path / "o.zarr")
    run(parse_config({"reference": str(tmp_path / "s.zarr"), "moving": str(tmp_path / "f.zarr"), "output": out,
                      "window": 7, "chunks": {"y": 30, "x": 30}}))
    got = xr.open_zarr(out)["ncc"].values
    np.testing.assert_allclose(got, reference_ncc(ref, mov, 7), atol=1e-6)


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 2**20 - 1, 2**20, 2**20 + 4096 + 7, 3 * 2**20])
@pytest.mark.parametrize("offset", [0, 1])
def test_write_file_writes_exact_bytes(tmp_path, size, offset):
    """Direct (page-cache bypassing) writes keep every byte, for unaligned sizes and unaligned sources."""
    import os

    from pipeline import io as lio

    data = np.random.default_rng(size).integers(0, 256, size + offset, dtype=np.uint8)[offset:]
    path = tmp_path / "chunk.bin"
    write_file(path, data)
    assert path.read_bytes() == data.tobytes()
    if getattr(os, "O_DIRECT", 0):
        try:  # the file system here takes O_DIRECT: then lio must not have fallen back to buffered writes
            os.close(os.open(tmp_path / "probe", os.O_WRONLY | os.O_CREAT | os.O_DIRECT))
        except OSError:
            return
        assert os.stat(tmp_path).st_dev not in lio.process_state().no_direct


# --- deferred block writes ------------------------------------------------------------------------------------------


def _blocks_output(tmp_path, shape=(64, 96), chunks=((32, 32), (32, 32, 32))):
    import dask.array as da

    from pipeline.io import create_output

    template = xr.Dataset({"ncc": (("y", "x"), da.empty(shape, chunks=chunks, dtype=np.float32))})
    url = str(tmp_path / "out.zarr")
    create_output(url, template, {"status": "running"}, run_id="test", zarr_format=3, compressor="none")
    regions = {}
    for index in np.ndindex(*template["ncc"].data.numblocks):
        starts = [sum(c[:i]) for c, i in zip(chunks, index)]
        regions[index] = tuple(slice(s, s + c[i]) for s, c, i in zip(starts, chunks, index))
    return url, regions


def test_deferred_writes_never_reuse_a_buffer_whose_write_is_in_flight(tmp_path):
    """Each thread alternates two buffers; one comes back only after its last write landed, and every block
    (distinct values, so a reused buffer would show) reads back exactly, ledger entries included."""
    import threading
    import time

    from pipeline.io import OutputWriter, finish_writes, process_state, read_ledger
    from pipeline.core.stats import STATS_LENGTH

    url, regions = _blocks_output(tmp_path)
    values = np.random.default_rng(7).uniform(-1, 1, (64, 96)).astype(np.float32)
    writer = OutputWriter(url, ("ncc",), run="reuse")
    written, addresses = [], []
    third = threading.Event()

    go = threading.Event()

    def blocks():  # one thread: the two buffers are per thread
        for index, region in regions.items():
            if len(written) == 2:
                go.wait(10)
            buffer = writer.buffer((32, 32))
            if len(written) == 2:
                third.set()
            addresses.append(buffer.ctypes.data)
            buffer[...] = values[region]
            written.append(writer.write_later({"ncc": buffer}, region, index, np.full(STATS_LENGTH, len(written))))

    # Every write thread held up: the first two blocks' writes stay queued, so the third block must wait.
    gate = threading.Event()
    stalls = [process_state().writes.pool().submit(gate.wait) for _ in range(process_state().writes.pool()._max_workers)]
    worker = threading.Thread(target=blocks)
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while len(written) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        finish_writes("some other run")  # forgets none of this run's writes
        go.set()
        assert not third.wait(0.5), "a buffer came back while its block's write was still queued"
        assert len(written) == 2 and not written[0].done()
    finally:
        gate.set()
        worker.join(30)
    assert all(s.done() for s in stalls)
    finish_writes("reuse")
    assert all(f.done() for f in written)
    assert addresses[0] != addresses[1] and addresses[0::2] == [addresses[0]] * 3
    np.testing.assert_array_equal(zarr.open_array(store=url + "/ncc", mode="r")[...], values)
    np.testing.assert_array_equal(read_ledger(url)[..., 0].ravel(), np.arange(6))


def test_a_failed_deferred_write_is_raised_once_and_its_block_stays_undone(tmp_path):
    """A write that fails in the background surfaces from finish_writes (once, and only for its own run) and
    records no ledger entry; a closed run writes nothing more."""
    import threading

    from pipeline.io import OutputWriter, finish_writes, read_ledger
    from pipeline.core.stats import STATS_LENGTH

    url, regions = _blocks_output(tmp_path)
    (tmp_path / "out.zarr" / "ncc" / "c").mkdir(parents=True, exist_ok=True)
    (tmp_path / "out.zarr" / "ncc" / "c" / "1").write_bytes(b"in the way of row 1's chunk directory")
    failing = OutputWriter(url, ("ncc",), run="failing")
    other = OutputWriter(url, ("ncc",), run="other")

    errors = []

    def blocks():  # one thread, whose buffers both runs then share
        try:
            fill()
        except Exception as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)

    def fill():
        # (1, 0) fails; written second to last, its buffer is the one this thread's next block gets.
        for index in [(0, 0), (0, 1), (1, 0), (0, 2)]:
            buffer = failing.buffer((32, 32))
            buffer[...] = 0.5
            failing.write_later({"ncc": buffer}, regions[index], index, np.ones(STATS_LENGTH))
        other.buffer((32, 32))  # the other run waits for the failed write's buffer, but is not blamed for it

    thread = threading.Thread(target=blocks)
    thread.start()
    thread.join(30)
    assert not errors
    finish_writes("other")
    with pytest.raises(OSError):
        finish_writes("failing")
    finish_writes("failing")  # reported once
    ledger = read_ledger(url)[..., -1]
    assert not np.isnan(ledger[0]).any() and np.isnan(ledger[1]).all()
    # A task of the closed run that comes late (still running after its run failed) writes nothing.
    with pytest.raises(RuntimeError, match="is over"):
        failing.write_later({"ncc": np.zeros((32, 32), np.float32)}, regions[(1, 1)], (1, 1), np.ones(STATS_LENGTH))
    assert np.isnan(read_ledger(url)[1, 1, -1])
