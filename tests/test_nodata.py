"""Nodata, NaN and masks: windows use only pixels valid in both images, the same for every chunking."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from hypothesis import given
from hypothesis import strategies as st

from pipeline import InputError, local_ncc
from pipeline.io import write_array
from pipeline.core.masks import invalid_mask
from pipeline.testing import reference_ncc, sample_pair

NAMES = ("ncc", "valid_fraction", "std_reference", "std_moving")


def holey_pair(shape, dtype, seed, hole_fraction=0.15, border=0):
    """A sample pair with NaN/Inf holes (float dtypes) and a nodata (0) border on the reference."""
    rng = np.random.default_rng(seed)
    a, b = (x.copy() for x in sample_pair(shape, dtype, seed=seed))
    if border:
        a[..., :, :border] = 0
    if np.dtype(dtype).kind == "f":
        b[rng.random(shape) < hole_fraction] = np.nan
        a[rng.random(shape) < hole_fraction / 3] = np.inf
        a[rng.random(shape) < hole_fraction / 3] = -np.inf
    mask = rng.random(shape) > hole_fraction
    return a, b, mask


def assert_same(result, expected, tol=1e-6):
    for name, got, want in zip(NAMES, result, expected):
        got = np.asarray(got, dtype=np.float64)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=name)
        scale = np.maximum(1.0, np.abs(np.nan_to_num(want)))
        assert np.nanmax(np.abs(got - want) / scale, initial=0.0) <= tol, name


@given(
    seed=st.integers(0, 10_000),
    shape=st.tuples(st.integers(8, 40), st.integers(8, 40)),
    window=st.sampled_from([3, 5, 7]),
    boundary=st.sampled_from(["reflect", "nearest", "constant", "nan"]),
    dtype=st.sampled_from(["uint8", "uint16", "float32", "float64"]),
    min_valid=st.sampled_from([0.0, 0.3, 0.5, 0.9, 1.0]),
)
def test_masked_windows_match_the_masked_reference(seed, shape, window, boundary, dtype, min_valid):
    """NCC, valid fraction and stds equal the masked float64 two-pass reference."""
    a, b, mask = holey_pair(shape, dtype, seed, border=2)
    result = local_ncc(a, b, window, boundary=boundary, nodata=(0, None), reference_mask=mask,
                       min_valid=min_valid, extras=True)
    invalid = invalid_mask(a, b, (0, None), mask)
    expected = reference_ncc(a, b, window, boundary, invalid=invalid, min_valid=min_valid, extras=True)
    assert_same([result[n] for n in NAMES], expected)


@given(
    seed=st.integers(0, 10_000),
    shape=st.tuples(st.integers(1, 2), st.integers(9, 40), st.integers(9, 40)),
    window=st.sampled_from([3, 5, 9]),
    boundary=st.sampled_from(["reflect", "nearest", "constant", "nan"]),
    dtype=st.sampled_from(["uint8", "float32"]),
    data=st.data(),
)
def test_masked_results_are_identical_for_every_chunking(seed, shape, window, boundary, dtype, data):
    """Masks and NaN are carried across chunk halos: any chunking equals the in-memory result."""
    a, b, mask = holey_pair(shape, dtype, seed)
    chunks = tuple(data.draw(st.integers(1, n), label=f"chunk{i}") for i, n in enumerate(shape))
    other = tuple(data.draw(st.integers(1, n), label=f"moving chunk{i}") for i, n in enumerate(shape))
    expected = local_ncc(a, b, window, boundary=boundary, nodata=0, moving_mask=mask, extras=True)
    lazy = local_ncc(da.from_array(a, chunks=chunks), da.from_array(b, chunks=other), window,
                     boundary=boundary, nodata=0, moving_mask=da.from_array(mask, chunks=chunks), extras=True)
    computed = da.compute(*[lazy[n] for n in NAMES])
    assert_same(computed, [expected[n].astype(np.float64) for n in NAMES])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_values_stay_inside_the_windows_that_touch_them(dtype, value):
    """One NaN/Inf changes only the windows containing it; all others equal the clean result."""
    a, b = sample_pair((60, 70), dtype, seed=4)
    dirty = a.copy()
    dirty[30, 35] = value
    r = 3
    clean = local_ncc(a, b, 2 * r + 1)
    got = local_ncc(dirty, b, 2 * r + 1, min_valid=1.0)
    near = np.zeros(a.shape, bool)
    near[30 - r : 30 + r + 1, 35 - r : 35 + r + 1] = True
    np.testing.assert_array_equal(got[~near], clean[~near])
    assert np.isnan(got[near]).all()  # min_valid=1: a window with one invalid pixel is NaN
    partial = local_ncc(dirty, b, 2 * r + 1)
    assert np.isfinite(partial).all()


def test_flat_masked_and_dissimilar_are_told_apart():
    """valid_fraction and the stds separate flat, masked and dissimilar windows."""
    rng = np.random.default_rng(0)
    a = rng.normal(100, 20, (40, 90))
    b = a.copy()
    a[:, :30] = 50.0                        # flat in the reference
    b[:, 30:60] = np.nan                    # masked in the moving image
    b[:, 60:] = rng.normal(100, 20, (40, 30))  # dissimilar
    out = local_ncc(a, b, 5, flat=np.nan, extras=True)
    rows = slice(5, 35)
    assert np.isnan(out["ncc"][rows, 5:25]).all() and (out["std_reference"][rows, 5:25] == 0).all()
    assert (out["valid_fraction"][rows, 5:25] == 1).all()
    assert np.isnan(out["ncc"][rows, 35:55]).all() and (out["valid_fraction"][rows, 35:55] == 0).all()
    assert (np.abs(out["ncc"][rows, 65:85]) < 0.9).all()
    assert (out["std_reference"][rows, 65:85] > 5).all() and (out["valid_fraction"][rows, 65:85] == 1).all()


def test_mask_of_the_wrong_shape_is_refused():
    """A mask that does not match the images raises InputError naming both shapes."""
    a, b = sample_pair((20, 30), "uint8")
    with pytest.raises(InputError, match=r"\(20, 30\).*\(20, 29\)"):
        local_ncc(a, b, 3, reference_mask=np.ones((20, 29), bool))


def test_xarray_extras_give_a_dataset():
    """With extras, an xarray input gives a Dataset of the four variables with the reference's coords."""
    a, b = sample_pair((20, 30), "uint8")
    ref = xr.DataArray(a, dims=("lat", "lon"), coords={"lat": np.arange(20.0)})
    out = local_ncc(ref, b, 3, extras=True)
    assert isinstance(out, xr.Dataset) and set(out.data_vars) == set(NAMES)
    assert out["valid_fraction"].dims == ("lat", "lon") and "lat" in out.coords


def lncc(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_cli_with_nodata_masks_and_extra_outputs(tmp_path: Path, zarr_format):
    """Through the CLI on zarr stores: per-input nodata and a mask array, with the extra variables written."""
    a, b, mask = holey_pair((90, 110), "float32", seed=9, border=6)
    write_array(str(tmp_path / "a.zarr"), a, chunks=(32, 32), zarr_format=zarr_format)
    write_array(str(tmp_path / "b.zarr"), b, chunks=(32, 32), zarr_format=zarr_format)
    write_array(str(tmp_path / "m.zarr"), mask, chunks=(32, 32), zarr_format=zarr_format)
    config = {"reference": "a.zarr", "moving": "b.zarr", "output": "out.zarr", "moving_mask": "m.zarr",
              "window": 7, "nodata": {"reference": 0}, "min_valid": 0.6, "extra_outputs": True,
              "chunks": {"y": 32, "x": 32}}
    (tmp_path / "c.yaml").write_text(json.dumps(config))
    result = lncc(tmp_path, "run", "c.yaml")
    assert result.returncode == 0, result.stderr
    ds = xr.open_zarr(tmp_path / "out.zarr")
    invalid = invalid_mask(a, b, (0, None), None, mask)
    expected = reference_ncc(a, b, 7, invalid=invalid, min_valid=0.6, extras=True)
    assert_same([ds[n].values for n in NAMES], expected)
    assert np.isnan(ds["ncc"].values[:, :2]).all()  # the nodata border


@pytest.mark.parametrize("bad", ["dtype", "shape"])
def test_cli_refuses_a_bad_mask(tmp_path: Path, bad):
    """A mask that is not bool, or not of the images' shape, exits 2 before anything is written."""
    a, b = sample_pair((40, 50), "uint8")
    write_array(str(tmp_path / "a.zarr"), a)
    write_array(str(tmp_path / "b.zarr"), b)
    mask = np.ones((40, 50), np.uint8) if bad == "dtype" else np.ones((40, 49), bool)
    write_array(str(tmp_path / "m.zarr"), mask)
    (tmp_path / "c.yaml").write_text(json.dumps({"reference": "a.zarr", "moving": "b.zarr", "output": "out.zarr",
                                                 "reference_mask": "m.zarr"}))
    result = lncc(tmp_path, "run", "c.yaml")
    assert result.returncode == 2
    assert ("expected a bool array" if bad == "dtype" else "(40, 49)") in result.stderr
    assert not (tmp_path / "out.zarr").exists()
