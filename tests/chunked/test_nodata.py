"""Nodata, NaN and masks through ``pipeline.local_ncc``: windows use only pixels valid in both images, the same
for every chunking. (The same through the ``lncc`` command: ``tests/cli/test_cli_nodata.py``.)"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from hypothesis import given
from hypothesis import strategies as st

from pipeline import InputError, local_ncc
from pipeline.core.masks import invalid_mask
from pipeline.testing import reference_ncc, sample_pair
from support import MAP_NAMES as NAMES
from support import assert_same, holey_pair


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
