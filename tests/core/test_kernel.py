"""Tests of the in-memory (numpy) path of ``pipeline.local_ncc``.

The oracle is ``pipeline.testing.reference_ncc`` (two-pass float64 per window) and,
for the boundary modes, an independent formula built on ``scipy.ndimage``.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage

from pipeline import InputError, local_ncc
from pipeline import testing as ptesting
from pipeline.core.kernel import local_ncc_numpy
from pipeline.core.variables import EXTRA_NAMES, OUTPUT_ATTRS
from pipeline.testing import cast_to, reference_ncc, sample_pair
from support import assert_matches

DTYPES = ["uint8", "uint16", "int16", "float32", "float64"]
BOUNDARIES = ["reflect", "nearest", "constant", "nan"]
FLATS = [0.0, np.nan]
TOL = 1e-6


# --------------------------------------------------------------------------- helpers


def flat_windows(x, window, boundary="reflect"):
    """Independent flat mask: True where every value of the padded window is equal."""
    r = window // 2
    mode = {"reflect": "symmetric", "nearest": "edge", "constant": "constant", "nan": "constant"}[boundary]
    widths = [(0, 0)] * (x.ndim - 2) + [(r, r)] * 2
    w = sliding_window_view(np.pad(x, widths, mode=mode), (window, window), axis=(-2, -1))
    return (w == w[..., :1, :1]).all(axis=(-2, -1))


def scipy_ncc(a, b, window, boundary):
    """NCC from scipy.ndimage.uniform_filter moments (scipy's boundary meanings)."""
    mode = "constant" if boundary == "nan" else boundary
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)

    def mean(z):
        return ndimage.uniform_filter(z, size=window, mode=mode, cval=0.0)

    ma, mb = mean(a), mean(b)
    out = (mean(a * b) - ma * mb) / np.sqrt((mean(a * a) - ma * ma) * (mean(b * b) - mb * mb))
    if boundary == "nan":
        r = window // 2
        out[:r], out[-r:], out[:, :r], out[:, -r:] = np.nan, np.nan, np.nan, np.nan
    return out


@st.composite
def numpy_cases(draw, dtype):
    """(a, b, window, boundary, flat) of ``dtype`` with shapes 3..40, windows 3..15 and mixed sources."""
    h = draw(st.integers(3, 40))
    w = draw(st.integers(3, 40))
    window = draw(st.sampled_from(list(range(3, min(h, w, 15) + 1, 2))))
    boundary = draw(st.sampled_from(BOUNDARIES))
    flat = draw(st.sampled_from(FLATS))
    seed = draw(st.integers(0, 2**31 - 1))
    levels = draw(st.integers(2, 6))
    source_a = draw(st.sampled_from(["textured-levels", "textured-normal", "sample"]))
    source_b = draw(st.sampled_from(["textured-levels", "sample", "same-as-a"]))
    sample_ref, sample_mov = ptesting.sample_crop((h, w), dtype, seed)
    a = {
        "textured-levels": lambda: ptesting.textured((h, w), dtype, seed, levels=levels),
        "textured-normal": lambda: ptesting.textured((h, w), dtype, seed),
        "sample": lambda: sample_ref,
    }[source_a]()
    b = {
        "textured-levels": lambda: ptesting.textured((h, w), dtype, seed + 1, levels=levels),
        "sample": lambda: sample_mov,
        "same-as-a": lambda: a.copy(),
    }[source_b]()
    return a, b, window, boundary, flat


# ----------------------------------------------------------------- reference agreement


@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=max(1, settings.default.max_examples // 2))  # x5 dtypes
@given(data=st.data())
def test_matches_reference_on_random_cases(dtype, data):
    """local_ncc equals reference_ncc within 1e-6 with the same NaN mask (hypothesis)."""
    a, b, window, boundary, flat = data.draw(numpy_cases(dtype))
    got = local_ncc(a, b, window, boundary=boundary, flat=flat)
    assert isinstance(got, np.ndarray) and got.dtype == np.float32
    assert np.all(np.abs(got[~np.isnan(got)]) <= 1.0)
    assert_matches(got, reference_ncc(a, b, window, boundary, flat))


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("window", [3, 7, 15])
@pytest.mark.parametrize("dtype", DTYPES)
def test_sample_pair_matches_reference(dtype, window, boundary):
    """Each dtype on a 64x80 sample pair matches the reference for windows 3/7/15 and all boundaries."""
    a, b = sample_pair((64, 80), dtype, seed=7)
    got = local_ncc(a, b, window, boundary=boundary)
    assert got.dtype == np.float32
    assert_matches(got, reference_ncc(a, b, window, boundary))


# (each wide integer dtype compiles its own float64 kernel: keep the list short)
@pytest.mark.parametrize("dtype", ["int8", "int32", "uint64", "float16", ">f8", ">i2"])
def test_other_dtypes_match_reference(dtype):
    """Less common integer/float dtypes and byte orders give float32 output matching the reference."""
    a, b = sample_pair((30, 34), "uint8", seed=2)
    a, b = a.astype(dtype), b.astype(dtype)
    got = local_ncc(a, b, 5)
    assert got.dtype == np.float32
    assert_matches(got, reference_ncc(a, b, 5))


def test_mixed_input_dtypes_match_reference():
    """A uint8 reference with a float32 moving image matches the reference."""
    a, b = sample_pair((30, 34), "uint8", seed=3)
    b = b.astype(np.float32) / 7.0
    assert_matches(local_ncc(a, b, 7), reference_ncc(a, b, 7))


def test_non_contiguous_views_match_reference():
    """Strided, reversed and transposed views give the same result as their copies."""
    a, b = sample_pair((40, 60), "uint16", seed=4)
    va, vb = a[::-1, ::2].T, b[::-1, ::2].T
    assert not va.flags.c_contiguous
    assert_matches(local_ncc(va, vb, 5), reference_ncc(va, vb, 5))


@pytest.mark.parametrize("dtype", ["float64", "float32", "uint16"])
def test_tall_wide_image_threads_and_restarts(dtype):
    """A 300x140 image (threaded row strips, running-sum restarts) matches the reference with 1 and 2 threads."""
    a, b = ptesting.sample_crop((300, 140), dtype, seed=11)
    exp = reference_ncc(a, b, 5)
    one = local_ncc_numpy(a, b, 5, threads=1)
    two = local_ncc_numpy(a, b, 5, threads=2)
    assert_matches(one, exp)
    assert_matches(two, exp)


# ------------------------------------------------------------------------- identities


@pytest.mark.parametrize("window", [3, 7])
@pytest.mark.parametrize("dtype", DTYPES)
def test_self_correlation_is_one(dtype, window):
    """ncc(x, x) is 1 (within 1e-6) on every non-flat window and `flat` exactly on flat ones."""
    x = np.concatenate([ptesting.textured((24, 30), dtype, 5, levels=3), sample_pair((24, 30), dtype, 5)[0]], axis=0)
    x[2:12, 3:15] = x[0, 0]  # a flat patch larger than the window
    flat = flat_windows(x, window)
    assert flat.any() and (~flat).any()  # both cases really occur
    out = local_ncc(x, x, window, flat=np.nan)
    np.testing.assert_array_equal(np.isnan(out), flat)
    assert np.max(np.abs(out[~flat] - 1.0)) <= TOL
    assert np.all(local_ncc(x, x, window, flat=0.0)[flat] == 0.0)


@given(
    seed=st.integers(0, 2**31 - 1),
    scale=st.floats(1e-2, 1e2),
    sign=st.sampled_from([1.0, -1.0]),
    offset=st.floats(-1e3, 1e3),
    window=st.sampled_from([3, 5, 9]),
    # 'constant' pads both images with 0, which is not mapped by a*x+b: the identity
    # does not hold at the edges there by construction.
    boundary=st.sampled_from(["reflect", "nearest", "nan"]),
)
def test_affine_change_of_one_image(seed, scale, sign, offset, window, boundary):
    """ncc(x, a*x+b) equals ncc(x, x) for a > 0 and is -1 (on non-flat windows) for a < 0."""
    x = ptesting.textured((24, 28), "float64", seed)
    y = sign * scale * x + offset
    same = local_ncc(x, x, window, boundary=boundary, flat=np.nan)
    got = local_ncc(x, y, window, boundary=boundary, flat=np.nan)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(same))
    valid = ~np.isnan(same)
    assert np.max(np.abs(got[valid] - sign * same[valid]), initial=0.0) <= TOL
    assert np.max(np.abs(got[valid] - sign), initial=0.0) <= TOL


@given(dtype=st.sampled_from(DTYPES), data=st.data())
def test_symmetric_in_its_arguments(dtype, data):
    """ncc(x, y) equals ncc(y, x) and both are float32 within [-1, 1]."""
    a, b, window, boundary, flat = data.draw(numpy_cases(dtype))
    ab = local_ncc(a, b, window, boundary=boundary, flat=flat)
    ba = local_ncc(b, a, window, boundary=boundary, flat=flat)
    assert ab.dtype == ba.dtype == np.float32
    assert_matches(ab, ba.astype(np.float64), tol=1e-7)
    for out in (ab, ba):
        assert np.all(np.abs(out[~np.isnan(out)]) <= 1.0)


@pytest.mark.parametrize("dtype,base,noise", [
    ("float64", 0.0, 1e-9),
    ("float64", 1e4, 1e-7),
    ("float32", 1e4, 1e-3),
    ("uint16", 0.0, 0.0),
])
@pytest.mark.parametrize("window", [3, 9, 15])
def test_nearly_collinear_windows_stay_within_one(dtype, base, noise, window):
    """Windows that are (nearly) perfectly correlated never round above 1 and stay within 1e-6 of it."""
    rng = np.random.default_rng(8)
    x = rng.uniform(0, 1000, (32, 32))
    a = (base + x).astype(dtype)
    b = (base + x + rng.normal(0, noise, x.shape)).astype(dtype) if noise else a.copy()
    out = local_ncc(a, b, window)
    assert np.all(np.abs(out) <= 1.0)
    assert np.min(out) >= 1.0 - TOL
    neg = local_ncc(a.astype(np.float64), -b.astype(np.float64), window)  # same-dtype pair: no extra compile
    assert np.all(np.abs(neg) <= 1.0) and np.max(neg) <= -1.0 + TOL


@pytest.mark.parametrize("scale", [1e-100, 1e-20, 1e20, 1e100])
def test_scale_invariance_of_float64_magnitudes(scale):
    """Multiplying a float64 image by a positive scale leaves the NCC unchanged (moderate scales)."""
    a, b = sample_pair((30, 30), "float64", seed=9)
    assert_matches(local_ncc(a * scale, b, 7), local_ncc(a, b, 7).astype(np.float64))


@pytest.mark.parametrize("scale", [1e153, 1e160, 1e300, 1e-170, 1e-300])
def test_scale_invariance_of_extreme_float64_magnitudes(scale):
    """Extreme but finite float64 magnitudes also leave the NCC unchanged (no overflow/underflow of the sums)."""
    a, b = sample_pair((30, 30), "float64", seed=9)
    assert_matches(local_ncc(a * scale, b, 7), local_ncc(a, b, 7).astype(np.float64))


# ---------------------------------------------------------------------- flat windows


@pytest.mark.parametrize("which", ["reference", "moving"])
@pytest.mark.parametrize("flat", FLATS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_flat_patch_next_to_texture_gets_flat_value(dtype, flat, which):
    """Windows fully inside a flat patch (in either image) get exactly `flat`; all others are real values."""
    rng = np.random.default_rng(21)
    a = cast_to(rng.uniform(0, 255, (40, 48)), dtype)
    b = cast_to(rng.uniform(0, 255, (40, 48)), dtype)
    target = a if which == "reference" else b
    target[10:25, 12:30] = cast_to(np.array([77.0]), dtype)[0]
    window, r = 5, 2
    inside = np.zeros(a.shape, bool)
    inside[10 + r : 25 - r, 12 + r : 30 - r] = True
    out = local_ncc(a, b, window, flat=flat)
    if np.isnan(flat):
        np.testing.assert_array_equal(np.isnan(out), inside)
    else:
        assert np.all(out[inside] == 0.0)
        assert not np.isnan(out).any()
    assert_matches(out, reference_ncc(a, b, window, "reflect", flat))


@pytest.mark.parametrize("flat", FLATS)
@pytest.mark.parametrize("dtype,base", [
    ("uint8", 100),
    ("float32", 100.0),
    ("float32", 1e4),
    ("float64", 1e4),
    ("uint16", 60000),
    ("int16", -30000),
])
def test_one_grey_level_off_is_not_flat(dtype, base, flat):
    """A flat image with one pixel one level up: only windows containing it are non-flat, matching the reference."""
    a = np.full((21, 23), base, dtype=dtype)
    a[10, 11] += 1
    b = cast_to(np.random.default_rng(2).uniform(0, 255, a.shape), dtype)
    window, r = 5, 2
    out = local_ncc(a, b, window, flat=flat)
    touched = np.zeros(a.shape, bool)
    touched[10 - r : 10 + r + 1, 11 - r : 11 + r + 1] = True
    assert np.all(np.isfinite(out[touched]))
    assert np.all(out[touched] != 0.0)
    if np.isnan(flat):
        assert np.all(np.isnan(out[~touched]))
    else:
        assert np.all(out[~touched] == 0.0)
    assert_matches(out, reference_ncc(a, b, window, "reflect", flat))


@pytest.mark.parametrize("flat", FLATS)
@pytest.mark.parametrize("dtype,base,step", [
    ("float32", 1e4, "ulp"),
    ("float32", 100.0, "ulp"),
    ("float64", 100.0, 1e-6),
])
def test_tiny_step_in_flat_patch_next_to_texture_is_not_flat(dtype, base, step, flat):
    """A flat patch beside strong texture, with one pixel one ulp (or 1e-6) up, is flat only where that pixel is
    absent."""
    rng = np.random.default_rng(23)
    a = rng.normal(0.0, 300.0, (30, 40)).astype(dtype)
    a[5:25, 18:38] = base
    up = np.nextafter(a.dtype.type(base), a.dtype.type(np.inf)) if step == "ulp" else base + step
    a[15, 28] = up
    assert a[15, 28] != a[15, 27]
    b = rng.normal(0.0, 1.0, a.shape).astype(dtype)
    window, r = 5, 2
    out = local_ncc(a, b, window, flat=flat)
    assert np.all(np.isfinite(out[15 - r : 15 + r + 1, 28 - r : 28 + r + 1]))
    flat_expected = np.zeros(a.shape, bool)
    flat_expected[5 + r : 25 - r, 18 + r : 38 - r] = True
    flat_expected[15 - r : 15 + r + 1, 28 - r : 28 + r + 1] = False
    got_flat = np.isnan(out) if np.isnan(flat) else (out == 0.0)
    np.testing.assert_array_equal(got_flat, flat_expected)
    assert_matches(out, reference_ncc(a, b, window, "reflect", flat))


@pytest.mark.parametrize("window", [3, 7, 15])
@pytest.mark.parametrize("dtype,base,spread", [
    ("float32", 1e4, 0.05),
    ("float64", 1e4, 0.01),
    ("float64", 1e4, 1e-5),
    ("uint16", 60000, 3),
])
def test_large_offset_small_variance_matches_reference(dtype, base, spread, window):
    """Values ~1e4 (floats) or ~60000 (uint16) varying by a few levels match the reference to 1e-6."""
    rng = np.random.default_rng(13)
    shape = (36, 40)
    if dtype == "uint16":
        da = rng.integers(0, spread + 1, shape)
        db = np.clip(da + rng.integers(-1, 2, shape), 0, None)
    else:
        da = rng.normal(0, spread, shape)
        db = 0.7 * da + rng.normal(0, spread, shape)
    a, b = (base + da).astype(dtype), (base + db).astype(dtype)
    got = local_ncc(a, b, window, flat=np.nan)
    assert_matches(got, reference_ncc(a, b, window, "reflect", np.nan))
    assert np.nanmax(np.abs(got)) > 0.1  # the variance really is resolved


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_tiny_variance_region_next_to_large_range_region(dtype):
    """A block mixing a large-range half and a near-constant half at a large offset matches the reference."""
    rng = np.random.default_rng(17)
    a = rng.normal(0, 100, (40, 40))
    a[:20] = 1e4 + rng.normal(0, 1e-2, (20, 40))
    b = rng.normal(0, 1, (40, 40))
    a, b = a.astype(dtype), b.astype(dtype)
    for window in (3, 7):
        assert_matches(local_ncc(a, b, window), reference_ncc(a, b, window))


# ---------------------------------------------------------------------- boundaries


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("window", [3, 7, 11])
@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_edge_rows_and_columns_match_reference(boundary, window, dtype):
    """The r+1 outermost rows and columns on each side match the reference for every mode."""
    a, b = ptesting.sample_crop((26, 31), dtype, seed=31)
    r = window // 2
    got = local_ncc(a, b, window, boundary=boundary, flat=np.nan)
    exp = reference_ncc(a, b, window, boundary, np.nan)
    k = r + 1
    for sl in (np.s_[:k, :], np.s_[-k:, :], np.s_[:, :k], np.s_[:, -k:]):
        assert_matches(got[sl], exp[sl])


@pytest.mark.parametrize("window", [3, 5, 9])
@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_boundary_modes_have_scipy_meaning(boundary, window):
    """Every mode matches an NCC built on scipy.ndimage.uniform_filter with the same mode."""
    rng = np.random.default_rng(41)
    a = rng.normal(0, 1, (23, 29))
    b = 0.5 * a + rng.normal(0, 1, a.shape)
    assert_matches(local_ncc(a, b, window, boundary=boundary), scipy_ncc(a, b, window, boundary))


def test_boundary_modes_differ_at_the_edges():
    """The four modes give different edge values (the mode is really applied) but equal interiors."""
    a, b = ptesting.sample_crop((30, 30), "float64", seed=5)
    outs = {m: local_ncc(a, b, 7, boundary=m) for m in BOUNDARIES}
    for m in BOUNDARIES:
        assert_matches(outs[m][3:-3, 3:-3], outs["reflect"][3:-3, 3:-3].astype(np.float64))
    for m1, m2 in [("reflect", "nearest"), ("reflect", "constant"), ("nearest", "constant")]:
        assert np.max(np.abs(outs[m1][:3] - outs[m2][:3])) > 1e-3


@pytest.mark.parametrize("shape,window", [
    ((20, 31), 3),
    ((20, 31), 7),
    ((15, 40), 15),
    ((2, 17, 9), 9),
    ((9, 9), 9),
])
def test_nan_boundary_blanks_exactly_radius_rows_and_cols(shape, window):
    """boundary='nan' gives exactly r NaN rows/cols on each side and no NaN inside (flat=0)."""
    a, b = ptesting.sample_crop(shape, "uint8", seed=3)
    r = window // 2
    out = local_ncc(a, b, window, boundary="nan")
    expected = np.ones(out.shape, bool)
    expected[..., r : shape[-2] - r, r : shape[-1] - r] = False
    np.testing.assert_array_equal(np.isnan(out), expected)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), boundary=st.sampled_from(BOUNDARIES), video=st.booleans())
def test_fill_border_of_a_block_equals_np_pad(data, boundary, video):
    """A block read with its halo (the in-image part only) and its border filled equals the same window of the
    whole image padded by np.pad, for any block position, images narrower than the radius included."""
    from pipeline.core.boundary import fill_border, pad

    h = data.draw(st.integers(1, 30), label="h")
    w = data.draw(st.integers(1, 30), label="w")
    radius = data.draw(st.integers(1, 12), label="radius")
    y0 = data.draw(st.integers(0, h - 1), label="y0")
    y1 = data.draw(st.integers(y0 + 1, h), label="y1")
    x0 = data.draw(st.integers(0, w - 1), label="x0")
    x1 = data.draw(st.integers(x0 + 1, w), label="x1")
    image = np.random.default_rng(h * 31 + w).integers(1, 250, ((2,) if video else ()) + (h, w)).astype(np.uint8)
    expected = pad(image, radius, boundary)[..., y0:y1 + 2 * radius, x0:x1 + 2 * radius]
    block = np.full(expected.shape, 255, dtype=np.uint8)  # garbage where the border goes
    ys, xs = slice(max(y0 - radius, 0), min(y1 + radius, h)), slice(max(x0 - radius, 0), min(x1 + radius, w))
    block[..., ys.start - (y0 - radius):ys.stop - (y0 - radius), xs.start - (x0 - radius):xs.stop - (x0 - radius)] = \
        image[..., ys, xs]
    fill_border(block, (y0, x0), (h, w), radius, boundary)
    np.testing.assert_array_equal(block, expected)


# --------------------------------------------------------------------------- video


@pytest.mark.parametrize("boundary", ["reflect", "nan"])
@pytest.mark.parametrize("dtype", ["uint8", "int16", "float32"])
def test_video_equals_stacked_frames(dtype, boundary):
    """A (t, y, x) input equals stacking the per-frame 2-D results (frames independent)."""
    a, b = ptesting.sample_crop((3, 26, 33), dtype, seed=6)
    a = a.copy()
    a[1] = a[1, 0, 0]  # an entirely flat frame must not affect its neighbours
    video = local_ncc(a, b, 5, boundary=boundary, flat=np.nan)
    frames = np.stack([local_ncc(a[t], b[t], 5, boundary=boundary, flat=np.nan) for t in range(3)])
    assert video.shape == a.shape and video.dtype == np.float32
    np.testing.assert_array_equal(video, frames)
    assert np.isnan(video[1]).all() and not np.isnan(video[0, 2:-2, 2:-2]).any()
    assert_matches(video, reference_ncc(a, b, 5, boundary, np.nan))


# ---------------------------------------------------------------------- bad inputs

_img = np.zeros((10, 12), np.uint8)


@pytest.mark.parametrize("ref,mov,window,kwargs", [
    pytest.param(_img, np.zeros((10, 11), np.uint8), 3, {}, id="shape-mismatch"),
    pytest.param(np.zeros((2, 10, 12)), _img, 3, {}, id="ndim-mismatch"),
    pytest.param(_img, _img, 4, {}, id="even-window"),
    pytest.param(_img, _img, 2, {}, id="window-2"),
    pytest.param(_img, _img, 1, {}, id="window-1"),
    pytest.param(_img, _img, 0, {}, id="window-0"),
    pytest.param(_img, _img, -3, {}, id="window-negative"),
    pytest.param(_img, _img, 3.0, {}, id="window-float"),
    pytest.param(_img, _img, True, {}, id="window-bool"),
    pytest.param(_img, _img, 11, {}, id="window-larger-than-height"),
    pytest.param(np.zeros((5, 40)), np.zeros((5, 40)), 7, {}, id="window-larger-than-one-side"),
    pytest.param(np.zeros((2, 2)), np.zeros((2, 2)), 3, {}, id="image-smaller-than-3"),
    pytest.param(_img.astype(bool), _img, 3, {}, id="bool-reference"),
    pytest.param(_img, _img.astype(bool), 3, {}, id="bool-moving"),
    pytest.param(_img.astype(np.complex64), _img.astype(np.complex64), 3, {}, id="complex64"),
    pytest.param(_img, _img.astype(np.complex128), 3, {}, id="complex128-moving"),
    pytest.param(_img.astype(object), _img.astype(object), 3, {}, id="object"),
    pytest.param(np.zeros((0, 0)), np.zeros((0, 0)), 3, {}, id="empty-2d"),
    pytest.param(np.zeros((0, 12)), np.zeros((0, 12)), 3, {}, id="empty-rows"),
    pytest.param(np.zeros((0, 10, 12)), np.zeros((0, 10, 12)), 3, {}, id="empty-frames"),
    pytest.param(np.zeros(12), np.zeros(12), 3, {}, id="1-d"),
    pytest.param(np.zeros((2, 2, 10, 12)), np.zeros((2, 2, 10, 12)), 3, {}, id="4-d"),
    pytest.param(np.float64(1.0), np.float64(1.0), 3, {}, id="0-d"),
    pytest.param(_img, _img, 3, {"boundary": "wrap"}, id="unknown-boundary"),
])
def test_bad_input_raises_input_error(ref, mov, window, kwargs):
    """Invalid pairs, windows, dtypes, shapes and boundaries raise InputError (a ValueError)."""
    with pytest.raises(InputError) as info:
        local_ncc(ref, mov, window, **kwargs)
    assert isinstance(info.value, ValueError)
    assert str(info.value)


@pytest.mark.parametrize("shape,window", [((10, 12), 9), ((9, 40), 9), ((3, 3), 3), ((1, 5, 5), 5)])
def test_largest_allowed_window_is_accepted(shape, window):
    """A window equal to the image's smaller side is valid and matches the reference."""
    a, b = ptesting.sample_crop(shape, "uint8", seed=1)
    assert_matches(local_ncc(a, b, window), reference_ncc(a, b, window))


# ------------------------------------------------------ pipeline.testing self-check


def test_textured_never_indexes_outside_the_image():
    """ptesting.textured() returns an image of the requested shape for every shape and seed."""
    for h in range(3, 41):
        for seed in range(20):
            assert ptesting.textured((h, h), "uint8", seed, levels=3).shape == (h, h)


# --------------------------------------------------- wide integers at large offsets

INT_DTYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]


def offset_reference(small_a, small_b, offsets, window, boundary, flat, invalid=None):
    """reference_ncc of ``small + offset`` images, computed on the small ints (NCC ignores a constant offset).

    'constant' pads with the images' own zeros, which are ``-offset`` in the small ints' frame: those
    windows are built here with that pad value and measured with the reference on the padded arrays.
    """
    if invalid is None:
        invalid = np.zeros(small_a.shape, bool)
    if boundary != "constant":
        return reference_ncc(small_a, small_b, window, boundary, flat, invalid)
    r = window // 2
    pa, pb = (np.pad(np.asarray(x, np.float64), r, constant_values=-float(off))
              for x, off in zip((small_a, small_b), offsets))
    padded_invalid = np.pad(invalid, r, constant_values=False)  # constant padding is valid data
    return reference_ncc(pa, pb, window, "nan", flat, padded_invalid)[r:-r, r:-r]


def with_offset(small, offset, dtype):
    """``small + offset`` exactly in ``dtype`` (no float64 on the way)."""
    dtype = np.dtype(dtype)
    return small.astype(dtype) + dtype.type(offset)


@st.composite
def offset_int_cases(draw, dtype):
    """Small random ints (with flat patches) plus per-image offsets anywhere up to ``dtype``'s limits,
    with optional nodata values and a reference mask; windows 3..15, every boundary mode."""
    info = np.iinfo(dtype)
    h = draw(st.integers(3, 32), label="h")
    w = draw(st.integers(3, 32), label="w")
    window = draw(st.sampled_from(list(range(3, min(h, w, 15) + 1, 2))), label="window")
    boundary = draw(st.sampled_from(BOUNDARIES), label="boundary")
    flat = draw(st.sampled_from(FLATS), label="flat")
    levels = draw(st.integers(1, 60), label="levels")
    lo, hi = int(info.min), int(info.max) - (levels - 1)
    offset = st.one_of(st.integers(lo, lo + 2), st.integers(hi - 2, hi), st.integers(lo, hi))
    offsets = (draw(offset, label="offset_a"), draw(offset, label="offset_b"))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1), label="seed"))
    small_a = rng.integers(0, levels, (h, w))
    small_b = draw(st.sampled_from(["independent", "related"]), label="b") == "related"
    small_b = np.clip(small_a + rng.integers(-1, 2, (h, w)), 0, levels - 1) if small_b else \
        rng.integers(0, levels, (h, w))
    y0, x0 = rng.integers(0, h), rng.integers(0, w)
    small_a[y0 : y0 + h // 2 + 1, x0 : x0 + w // 2 + 1] = rng.integers(0, levels)  # flat windows too
    nodata = [draw(st.one_of(st.none(), st.integers(0, levels - 1)), label=f"nodata_{k}") for k in "ab"]
    mask = rng.random((h, w)) > 0.2 if draw(st.booleans(), label="mask") else None
    return small_a, small_b, offsets, window, boundary, flat, nodata, mask


def offset_invalid(small_a, small_b, nodata, mask):
    """The nodata mask in the small ints' frame (True = invalid), or None."""
    invalid = np.zeros(small_a.shape, bool)
    for small, value in zip((small_a, small_b), nodata):
        if value is not None:
            invalid |= small == value
    if mask is not None:
        invalid |= ~mask
    return invalid


@pytest.mark.parametrize("dtype", INT_DTYPES)
@settings(max_examples=max(1, settings.default.max_examples // 2))  # x8 dtypes
@given(data=st.data())
def test_integers_at_any_offset_match_the_reference_of_the_small_ints(dtype, data):
    """Small ints plus offsets up to the dtype's limits (e.g. int64 near +-2**63, uint64 near 2**64), with
    nodata values and a reference mask, equal the float64 reference of the small ints: NCC ignores offsets,
    flat windows get `flat` exactly, and |NCC| <= 1."""
    small_a, small_b, offsets, window, boundary, flat, nodata, mask = data.draw(offset_int_cases(dtype))
    a, b = (with_offset(x, off, dtype) for x, off in zip((small_a, small_b), offsets))
    values = tuple(None if v is None else np.dtype(dtype).type(v + off) for v, off in zip(nodata, offsets))
    got = local_ncc(a, b, window, boundary=boundary, flat=flat, nodata=values, reference_mask=mask)
    invalid = offset_invalid(small_a, small_b, nodata, mask)
    expected = offset_reference(small_a, small_b, offsets, window, boundary, flat, invalid)
    assert got.dtype == np.float32 and np.all(np.abs(got[~np.isnan(got)]) <= 1.0)
    assert_matches(got, expected)  # with flat=NaN the flat windows must match exactly (NaN masks)


@pytest.mark.parametrize("dtype,offset", [("int64", 2**62), ("int64", -(2**63)), ("uint64", 2**63),
                                          ("uint64", 2**64 - 256), ("int32", 2**31 - 256), ("uint32", 2**32 - 256)])
def test_wide_integers_near_their_limits_are_not_flat(dtype, offset):
    """The reported bug: ``a8 + 2**62`` as int64 (or uint64 near 2**63) gave only flat windows, because the
    values went through float64 (spacing 1024 near 2**62) before the offset was taken out. The NCC is
    NCC(a8, b8), and the local stds (extras) are those of a8 and b8."""
    a8, b8 = sample_pair((40, 50), "uint8", seed=1)
    a, b = with_offset(a8, offset, dtype), with_offset(b8, offset, dtype)
    got = local_ncc(a, b, 7, flat=np.nan, extras=True)
    expected, _, std_a, std_b = reference_ncc(a8, b8, 7, flat=np.nan, extras=True)
    assert not np.isnan(expected).any()
    assert_matches(got["ncc"], expected)
    np.testing.assert_allclose(got["std_reference"], std_a, rtol=1e-6)
    np.testing.assert_allclose(got["std_moving"], std_b, rtol=1e-6)


@pytest.mark.parametrize("dtype", ["int64", "uint64"])
@pytest.mark.parametrize("boundary", ["constant", "reflect"])
def test_wide_range_block_keeps_small_windows_exact(dtype, boundary):
    """A block whose range is too wide for exact int64 sums (one pixel at the dtype's far end, or the
    zeros 'constant' pads with) still resolves windows of small ints at a large offset: those windows are
    recomputed from exact differences, not from float64 of the wide values."""
    info = np.iinfo(dtype)
    rng = np.random.default_rng(4)
    small_a, small_b = rng.integers(0, 9, (30, 36)), rng.integers(0, 9, (30, 36))
    offset = int(info.max) - 20
    a, b = with_offset(small_a, offset, dtype), with_offset(small_b, offset, dtype)
    a[15, 18] = info.min  # the range of a is now the whole dtype
    small_a = small_a.astype(np.float64)
    small_a[15, 18] = float(int(info.min) - offset)
    got = local_ncc(a, b, 5, boundary=boundary, flat=np.nan, extras=True)
    expected = offset_reference(small_a, small_b, (offset, offset), 5, boundary, np.nan)
    assert_matches(got["ncc"], expected)
    assert not np.isnan(got["ncc"][:10]).any()
    if boundary == "reflect":  # the stds, in image units, from both the running sums and the recomputed windows
        _, _, std_a, std_b = reference_ncc(small_a, small_b, 5, boundary, np.nan, extras=True)
        np.testing.assert_allclose(got["std_reference"], std_a, rtol=1e-6)
        np.testing.assert_allclose(got["std_moving"], std_b, rtol=1e-6)


@pytest.mark.parametrize("dtype", ["int32", "int64", "uint32"])
@pytest.mark.parametrize("masked", [False, True])
def test_wide_integers_with_small_values_take_the_exact_path_as_they_are(dtype, masked):
    """Values small enough for exact int64 sums (an 8-bit image in int32 fixed point: up to 2**25, negative
    ones too) need no offset copy: the result is bit for bit the one of the same values offset to start at 0,
    which the exact path computes; flat windows get ``flat`` exactly."""
    a8, b8 = sample_pair((40, 50), "uint8", seed=2)
    a = a8.astype(np.int64) * 2**16 - (2**20 if dtype != "uint32" else 0)
    b = b8.astype(np.int64) * 2**16 + 3
    a[:8, :9] = a[0, 0]  # a flat corner
    mask = np.random.default_rng(1).random(a.shape) > 0.1 if masked else None
    got = local_ncc(a.astype(dtype), b.astype(dtype), 7, flat=np.nan, reference_mask=mask)
    base = local_ncc((a - a.min()).astype(np.uint32), (b - b.min()).astype(np.uint32), 7, flat=np.nan,
                     reference_mask=mask)
    np.testing.assert_array_equal(got, base)
    assert_matches(got, reference_ncc(a.astype(np.float64), b.astype(np.float64), 7, flat=np.nan,
                                      invalid=None if mask is None else ~mask))
    assert np.isnan(got[:1, :2]).all()  # the flat corner


@settings(max_examples=60, deadline=None)
@given(data=st.data(), dtype=st.sampled_from(["uint8", "int32", "float32"]), radius=st.integers(1, 4),
       extras=st.booleans(), min_valid=st.sampled_from([0.0, 0.5, 1.0]))
def test_invalid_bands_along_the_edges_give_the_masked_result(data, dtype, radius, extras, min_valid):
    """Invalid whole rows and columns along a block's edges (a shifted image's missing border), with or without
    a stray invalid pixel inside: the windows clear of them take the unmasked kernel and the strips along them
    the masked one, and together they equal the textbook NCC with the mask (<= 1e-6, the same NaN pixels)."""
    from pipeline.core.kernel import ncc_padded

    h, w = data.draw(st.integers(2 * radius + 3, 40)), data.draw(st.integers(2 * radius + 3, 40))
    a, b = sample_pair((h, w), "uint8", seed=data.draw(st.integers(0, 20)))
    if dtype == "int32":
        b = b.astype(np.int32) * 2**16 - 2**20  # as the shifted image's fixed point
    b = b.astype(dtype)
    invalid = np.zeros((h, w), dtype=bool)
    top, bottom = data.draw(st.integers(0, h // 3)), data.draw(st.integers(0, h // 3))
    left, right = data.draw(st.integers(0, w // 3)), data.draw(st.integers(0, w // 3))
    invalid[:top], invalid[h - bottom:], invalid[:, :left], invalid[:, w - right:] = True, True, True, True
    if data.draw(st.booleans(), label="stray"):
        invalid[data.draw(st.integers(0, h - 1)), data.draw(st.integers(0, w - 1))] = True
    out = ncc_padded(a, b, radius, flat=np.nan, invalid=invalid, min_valid=min_valid, extras=extras)
    # the textbook NCC of the windows ncc_padded sees: output (i, j) is the window at padded (i + r, j + r)
    inner = (slice(radius, h - radius), slice(radius, w - radius))
    expected = reference_ncc(a, b, 2 * radius + 1, flat=np.nan, invalid=invalid, min_valid=min_valid,
                             extras=extras)
    if not extras:
        assert_matches(out, expected[inner])
        return
    assert_matches(out[0], expected[0][inner])
    for got, want in zip(out[1], expected[1:]):
        assert_matches(got, want[inner], tol=1e-5 * max(1.0, float(np.nanmax(np.abs(want), initial=0.0))))


@st.composite
def axis_chunks(draw, n):
    """A partition of an axis of length n, chunks of 1 (smaller than any radius) included."""
    cuts = sorted(draw(st.sets(st.integers(1, n - 1), max_size=5))) if n > 1 else []
    points = [0, *cuts, n]
    return tuple(q - p for p, q in zip(points[:-1], points[1:]))


@pytest.mark.parametrize("dtype", ["int32", "int64", "uint32", "uint64", "int8"])
@settings(max_examples=max(1, settings.default.max_examples // 2))
@given(data=st.data())
def test_dask_chunking_never_changes_wide_integer_results(dtype, data):
    """A chunked dask run (any chunks, chunks smaller than the radius included) equals the in-memory run to
    1e-6 with the same NaN mask, edges included, for wide integers at large offsets, masked or not, with or
    without a pixel that makes a block's range too wide for exact sums."""
    import dask.array as dask_array

    small_a, small_b, offsets, window, boundary, flat, nodata, mask = data.draw(offset_int_cases(dtype))
    a, b = (with_offset(x, off, dtype) for x, off in zip((small_a, small_b), offsets))
    if data.draw(st.booleans(), label="spike"):
        a[a.shape[0] // 2, a.shape[1] // 3] = np.iinfo(dtype).min if offsets[0] > 0 else np.iinfo(dtype).max
    chunks = (data.draw(axis_chunks(a.shape[0]), label="ychunks"), data.draw(axis_chunks(a.shape[1]), label="xchunks"))
    values = tuple(None if v is None else np.dtype(dtype).type(v + off) for v, off in zip(nodata, offsets))
    options = dict(boundary=boundary, flat=flat, nodata=values)
    in_memory = local_ncc(a, b, window, reference_mask=mask, **options)
    lazy = local_ncc(dask_array.from_array(a, chunks=chunks), dask_array.from_array(b, chunks=chunks), window,
                     reference_mask=None if mask is None else dask_array.from_array(mask, chunks=chunks), **options)
    assert_matches(lazy.compute(scheduler="synchronous"), in_memory.astype(np.float64))


# ------------------------------------------------------ API: argument types, messages, output attrs


@pytest.mark.parametrize("ref,mov,which,came", [
    ([[1, 2, 3], [4, 5, 6], [7, 8, 9]], np.zeros((3, 3)), "reference", "list"),
    (np.zeros((3, 3)), ((1, 2, 3),) * 3, "moving", "tuple"),
    (xr.DataArray(np.zeros((3, 3)), dims=("y", "x")), [[0.0] * 3] * 3, "moving", "list"),
], ids=["list-reference", "tuple-moving", "xarray-with-list-moving"])
def test_non_array_inputs_raise_type_error_naming_the_accepted_types(ref, mov, which, came):
    """Python lists or tuples raise TypeError naming the argument, the accepted types and what came."""
    with pytest.raises(TypeError) as info:
        local_ncc(ref, mov, 3)
    message = str(info.value)
    assert message.startswith(f"{which} must be a numpy.ndarray, dask.array.Array or xarray.DataArray")
    assert f"got {came}" in message and "numpy.asarray" in message


def test_api_dims_mismatch_names_api_fixes_not_config_keys():
    """From the API a dims mismatch says how to rename the DataArray, not to set a config key."""
    a, b = sample_pair((20, 30), "uint8")
    ref = xr.DataArray(a, dims=("y", "x"))
    with pytest.raises(InputError) as info:
        local_ncc(ref, xr.DataArray(b, dims=("row", "x")), 3)
    message = str(info.value)
    assert "config" not in message
    assert "give both DataArrays the same dims, e.g. moving.rename({'row': 'y'})" in message


def test_api_messages_never_mention_the_config():
    """No error reachable from local_ncc on bad arguments talks about config keys."""
    a, b = sample_pair((20, 30), "uint8")
    ref = xr.DataArray(a, dims=("y", "x"))
    calls = [
        lambda: local_ncc(ref, xr.DataArray(b, dims=("a", "b")), 3),
        lambda: local_ncc(ref, b[:, :20], 3),
        lambda: local_ncc(ref, b, 4),
        lambda: local_ncc(ref, b, 3, boundary="wrap"),
        lambda: local_ncc(ref, b, 3, flat=2.0),
        lambda: local_ncc(ref, b, 3, min_valid=1.5),
        lambda: local_ncc(a, b, 3, reference_mask=np.ones((2, 2), bool)),
        lambda: local_ncc(a.astype(bool), b, 3),
    ]
    for call in calls:
        with pytest.raises(InputError) as info:
            call()
        assert "config" not in str(info.value), str(info.value)


@pytest.mark.parametrize("extras", [False, True])
def test_xarray_output_has_its_own_attrs_not_the_references(extras):
    """The reference's attrs (units: DN) describe the image, not the unitless NCC: each output has its own."""
    a, b = sample_pair((20, 30), "uint16")
    ref = xr.DataArray(a, dims=("y", "x"), attrs={"units": "DN", "title": "left camera"})
    mov = xr.DataArray(b, dims=("y", "x"), attrs={"units": "counts"})
    before = {name: dict(attrs) for name, attrs in OUTPUT_ATTRS.items()}
    result = local_ncc(ref, mov, 5, extras=extras)
    outputs = result if extras else {"ncc": result}
    assert outputs["ncc"].attrs == {"long_name": "local normalized cross-correlation", "units": "1"}
    if extras:
        assert result.attrs == {}
        assert result["valid_fraction"].attrs["units"] == "1"
        assert result["std_reference"].attrs == {"long_name": "local standard deviation of the reference image",
                                                 "units": "DN"}
        assert result["std_moving"].attrs == {"long_name": "local standard deviation of the moving image",
                                              "units": "counts"}
    for output in outputs.values():
        output.attrs["units"] = "changed"
    assert {name: dict(attrs) for name, attrs in OUTPUT_ATTRS.items()} == before  # copies, not the constant
    assert set(OUTPUT_ATTRS) == set(EXTRA_NAMES)
