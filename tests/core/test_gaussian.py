"""The gaussian-weighted kernel against a direct weighted two-pass reference (float64, sliding_window_view)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage

from pipeline.core.gaussian import gaussian_ncc_padded, gaussian_radius, gaussian_weights


def reference(a, b, sigma, truncate=3.5, flat=0.0, invalid=None, min_valid=0.5):
    """Per window, in float64: the weighted means, then the weighted centred moments (two passes); flat where
    the valid values of either image are all equal; NaN with less than min_valid of the weight valid."""
    w1 = gaussian_weights(sigma, truncate)
    n = w1.size
    w = np.outer(w1, w1)
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    bad = ~(np.isfinite(a) & np.isfinite(b))
    if invalid is not None:
        bad |= invalid
    va, vb, vm = (sliding_window_view(x, (n, n)) for x in (np.where(bad, 0.0, a), np.where(bad, 0.0, b), ~bad))
    ww = w * vm
    s0 = ww.sum(axis=(-1, -2))
    with np.errstate(invalid="ignore", divide="ignore"):
        ma = (ww * va).sum(axis=(-1, -2)) / s0
        mb = (ww * vb).sum(axis=(-1, -2)) / s0
        da, db = va - ma[..., None, None], vb - mb[..., None, None]
        cov = (ww * da * db).sum(axis=(-1, -2))
        r = cov / np.sqrt((ww * da * da).sum(axis=(-1, -2)) * (ww * db * db).sum(axis=(-1, -2)))
    big = np.where(vm, va, -np.inf), np.where(vm, va, np.inf), np.where(vm, vb, -np.inf), np.where(vm, vb, np.inf)
    flat_a = big[0].max(axis=(-1, -2)) == big[1].min(axis=(-1, -2))
    flat_b = big[2].max(axis=(-1, -2)) == big[3].min(axis=(-1, -2))
    out = np.clip(r, -1, 1)
    out = np.where(flat_a | flat_b, flat, out)
    out = np.where((s0 < min_valid) | ~vm.any(axis=(-1, -2)), np.nan, out)
    return out


def pad(x, radius, mode="reflect"):
    return np.pad(x, radius, mode="symmetric" if mode == "reflect" else mode)


def assert_close(got, expected, tol=1e-6):
    assert got.shape == expected.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    finite = ~np.isnan(expected)
    assert np.abs(got[finite] - expected[finite]).max(initial=0) <= tol


def test_the_weights_are_scipy_s():
    """Radius int(truncate * sigma + 0.5) and the weights of scipy.ndimage.gaussian_filter (its impulse
    response), for sigmas whose radius rounds either way."""
    for sigma, truncate in [(1.5, 3.5), (5.0, 3.5), (0.7, 4.0), (2.0, 2.0)]:
        radius = gaussian_radius(sigma, truncate)
        assert radius == int(truncate * sigma + 0.5)
        impulse = np.zeros(2 * radius + 1)
        impulse[radius] = 1.0
        expected = ndimage.gaussian_filter1d(impulse, sigma, truncate=truncate, mode="constant")
        np.testing.assert_allclose(gaussian_weights(sigma, truncate), expected, rtol=0, atol=1e-15)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="sigma"):
            gaussian_radius(bad)


@settings(max_examples=25, deadline=None)
@given(shape=st.tuples(st.integers(1, 24), st.integers(1, 24)), sigma=st.sampled_from([0.6, 1.0, 1.5, 2.3]),
       dtype=st.sampled_from(["uint8", "uint16", "int32", "float32", "float64"]), seed=st.integers(0, 10_000),
       flat_share=st.floats(0, 0.6), offset=st.sampled_from([0.0, 1e4]), flat=st.sampled_from([0.0, -0.5]))
def test_against_the_direct_weighted_two_pass_reference(shape, sigma, dtype, seed, flat_share, offset, flat):
    """Every window within 1e-6 of the reference, flat windows exactly ``flat``, for integer and float data,
    with flat patches and large offsets (where the one-pass sums alone would lose the variance)."""
    rng = np.random.default_rng(seed)
    radius = gaussian_radius(sigma)
    full = tuple(n + 2 * radius for n in shape)
    top = 200 if dtype == "uint8" else 3000
    a = rng.integers(0, top, full).astype(np.float64)
    b = 0.7 * a + rng.normal(0, 40, full)
    patch = rng.random(full) < flat_share
    a[patch] = 50.0
    b[:, : full[1] // 3] = 7.0  # a flat band in b
    if np.dtype(dtype).kind == "f":
        a, b = a + offset, b + offset
    else:
        b = np.clip(np.round(b), 0, top)
    a, b = a.astype(dtype), b.astype(dtype)
    got = gaussian_ncc_padded(a, b, sigma, flat=flat)
    assert_close(got, reference(a, b, sigma, flat=flat))


@settings(max_examples=15, deadline=None)
@given(shape=st.tuples(st.integers(2, 20), st.integers(2, 20)), sigma=st.sampled_from([0.8, 1.5]),
       seed=st.integers(0, 10_000), hole=st.floats(0, 0.7), min_valid=st.sampled_from([0.0, 0.5, 0.9]))
def test_masked_windows_weigh_only_their_valid_pixels(shape, sigma, seed, hole, min_valid):
    """With invalid pixels (a mask, and NaN in a float image) each window's weights are renormalised over the
    valid ones; below min_valid of the weight the window is NaN."""
    rng = np.random.default_rng(seed)
    radius = gaussian_radius(sigma)
    full = tuple(n + 2 * radius for n in shape)
    a = rng.normal(100, 20, full)
    b = a * -0.3 + rng.normal(0, 5, full)
    invalid = rng.random(full) < hole
    a[rng.random(full) < hole / 3] = np.nan
    got = gaussian_ncc_padded(a, b, sigma, invalid=invalid, min_valid=min_valid)
    assert_close(got, reference(a, b, sigma, invalid=invalid, min_valid=min_valid))


def test_identities_and_frames():
    """ncc(x, x) = 1 and affine invariance (a x + c, and -1 for a < 0) away from flat windows; a (t, y, x)
    block is its frames, each on its own."""
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, (3, 40, 50))
    sigma = 1.5
    same = gaussian_ncc_padded(x, x, sigma)
    np.testing.assert_allclose(same, 1.0, atol=1e-6)
    np.testing.assert_allclose(gaussian_ncc_padded(x, 3.0 * x + 7.0, sigma), 1.0, atol=1e-6)
    np.testing.assert_allclose(gaussian_ncc_padded(x, -2.0 * x + 1.0, sigma), -1.0, atol=1e-6)
    y = rng.normal(0, 1, x.shape)
    stacked = gaussian_ncc_padded(x, y, sigma)
    for k in range(3):
        np.testing.assert_array_equal(stacked[k], gaussian_ncc_padded(x[k], y[k], sigma))


@pytest.mark.parametrize("mode", ["reflect", "nearest", "constant"])
def test_padded_like_an_image_edge(mode):
    """A whole image padded by each boundary mode: every pixel, edges included, as the reference on the same
    padded image (the padding is the boundary rule; the kernel sees only a padded block)."""
    rng = np.random.default_rng(8)
    a = rng.integers(0, 255, (30, 37)).astype(np.uint8)
    b = np.clip(a * 0.5 + rng.normal(0, 30, a.shape), 0, 255).astype(np.uint8)
    sigma = 2.0
    radius = gaussian_radius(sigma)
    numpy_mode = {"reflect": "symmetric", "nearest": "edge", "constant": "constant"}[mode]
    pa, pb = (np.pad(x, radius, mode=numpy_mode) for x in (a, b))
    assert_close(gaussian_ncc_padded(pa, pb, sigma), reference(pa, pb, sigma))
