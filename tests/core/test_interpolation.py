"""Tests of the local subpixel shift kernels of ``pipeline.core.interpolation``.

The oracle is written here from the kernel formulas alone (linear ``1 - |x|``, Keys' cubic convolution with
``a = -0.5``, Lanczos-3 ``sinc(x) sinc(x / 3)`` normalised over its 6 taps), evaluated pixel by pixel in
float64 with the convention ``out[i, j] = moving at (i - dy, j - dx)``; the accuracy test compares all three
kernels with an exact Fourier shift of a band-limited photograph. Shifted 8-bit images are int32 fixed point
(16 fractional bits, int32's smallest value where missing), others float32 (NaN where missing):
:func:`decoded` reads both as float64 with NaN.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from pipeline import testing as ptesting
from pipeline.core.interpolation import (
    FRACTION_BITS,
    INTERPOLATIONS,
    MISSING,
    SUPPORT,
    as_missing,
    shift_image,
    shifted_dtype,
    taps,
)
from pipeline.errors import InputError

KINDS = ["linear", "cubic", "lanczos3"]
RADIUS = {"linear": 1, "cubic": 2, "lanczos3": 3}  # half-widths, written down here independently
FRACTIONS = [0.0, 0.125, 0.25, 0.3, 0.5, 0.7, 0.875, 0.99]


def examples(n: int) -> int:
    """``n`` examples under the default hypothesis profile (40), scaled with the profile (thorough: 10x)."""
    return max(1, n * settings.default.max_examples // 40)


# --------------------------------------------------------------------------- the independent reference


def _linear(x: float) -> float:
    return max(0.0, 1.0 - abs(x))


def _keys(x: float, a: float = -0.5) -> float:
    x = abs(x)
    if x <= 1.0:
        return (a + 2.0) * x**3 - (a + 3.0) * x**2 + 1.0
    if x < 2.0:
        return a * x**3 - 5.0 * a * x**2 + 8.0 * a * x - 4.0 * a
    return 0.0


def _sinc(x: float) -> float:
    return 1.0 if x == 0.0 else math.sin(math.pi * x) / (math.pi * x)


def _lanczos3(x: float) -> float:
    return _sinc(x) * _sinc(x / 3.0) if abs(x) < 3.0 else 0.0


FORMULA = {"linear": _linear, "cubic": _keys, "lanczos3": _lanczos3}


def axis_taps(position: float, kind: str) -> tuple[list[int], np.ndarray]:
    """The source indices and (normalised) weights that interpolate one axis at ``position``."""
    if position == math.floor(position):
        return [int(position)], np.ones(1)
    r = RADIUS[kind]
    n = math.floor(position)
    index = list(range(n - r + 1, n + r + 1))
    weights = np.array([FORMULA[kind](position - k) for k in index])
    return index, weights / weights.sum()


def reference_shift(image, shift, kind: str) -> np.ndarray:
    """``image`` shifted by ``(dy, dx)``, pixel by pixel in float64; NaN where a tap is outside or NaN."""
    image = np.asarray(image, dtype=np.float64)
    h, w = image.shape
    out = np.full((h, w), np.nan)
    for i in range(h):
        rows, wy = axis_taps(i - float(shift[0]), kind)
        if rows[0] < 0 or rows[-1] >= h:
            continue
        for j in range(w):
            cols, wx = axis_taps(j - float(shift[1]), kind)
            if cols[0] < 0 or cols[-1] >= w:
                continue
            out[i, j] = wy @ image[np.ix_(rows, cols)] @ wx  # a NaN tap gives NaN
    return out


BITS = {1: 16}  # fractional bits of the fixed-point shifted image, by the moving image's itemsize


def decoded(shifted, moving_dtype) -> np.ndarray:
    """A shifted image's values as float64, NaN where missing: int32 fixed point for 8- and 16-bit images."""
    shifted = np.asarray(shifted)
    moving_dtype = np.dtype(moving_dtype)
    if moving_dtype.kind in "iu" and moving_dtype.itemsize in BITS:
        assert shifted.dtype == np.int32
        return np.where(shifted == np.iinfo(np.int32).min, np.nan, shifted / 2.0 ** BITS[moving_dtype.itemsize])
    assert shifted.dtype == np.float32
    return shifted.astype(np.float64)


def assert_close_to_reference(got, expected, scale: float, tol: float = 1e-6, moving_dtype="float64") -> None:
    """Same missing pixels; values within ``tol * scale``, or within fixed point's half step if coarser."""
    allowed = tol * scale
    moving_dtype = np.dtype(moving_dtype)
    if moving_dtype.kind in "iu" and moving_dtype.itemsize in BITS:
        allowed = max(allowed, 0.5 / 2.0 ** BITS[moving_dtype.itemsize] + 1e-9)
    got = decoded(got, moving_dtype)
    assert got.shape == expected.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    valid = ~np.isnan(expected)
    if valid.any():
        err = np.abs(got[valid] - expected[valid]).max()
        assert err <= allowed, f"max error {err:.3g} > {allowed:.3g}"


def shifts(low: int = -20, high: int = 20):
    """Shifts of (integer + one of FRACTIONS) pixels, both signs, exact integers included."""
    one = st.builds(lambda n, f, sign: sign * (n + f), st.integers(0, max(-low, high)), st.sampled_from(FRACTIONS),
                    st.sampled_from([-1.0, 1.0]))
    return st.tuples(one, one).filter(lambda s: low <= s[0] <= high and low <= s[1] <= high)


def random_image(shape, seed=0):
    return np.random.default_rng(seed).normal(100.0, 30.0, size=shape)


# --------------------------------------------------------------------------- (a) the kernel formulas


SHIFTS = [(0.0, 0.0), (0.3, 0.7), (-0.3, -0.7), (1.25, -2.5), (-3.9, 0.1), (2.0, -1.0), (0.0, 0.5), (-4.5, 0.0),
          (7.75, -6.125)]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shift", SHIFTS)
def test_shift_image_equals_the_kernel_formula(kind, shift):
    """Every pixel is the float64 sum of the formula's weights times its taps (<= 1e-6 of the range)."""
    image = random_image((19, 23), seed=3)
    got = shift_image(image, shift, kind)
    assert_close_to_reference(got, reference_shift(image, shift, kind), np.ptp(image))


@settings(max_examples=examples(15))
@given(h=st.integers(1, 24), w=st.integers(1, 24), shift=shifts(-12, 12), kind=st.sampled_from(KINDS),
       seed=st.integers(0, 2**31 - 1), dtype=st.sampled_from(["uint8", "int16", "float32", "float64"]))
def test_shift_image_equals_the_kernel_formula_for_any_shape(h, w, shift, kind, seed, dtype):
    image = ptesting.cast_to(np.random.default_rng(seed).uniform(0, 255, size=(h, w)), dtype)
    got = shift_image(image, shift, kind)
    assert got.dtype == (np.int32 if dtype == "uint8" else np.float32)
    assert_close_to_reference(got, reference_shift(image, shift, kind), max(1.0, float(np.ptp(image.astype(float)))),
                              moving_dtype=dtype)


@pytest.mark.parametrize("kind", KINDS)
def test_a_shift_beyond_the_image_is_all_missing(kind):
    image = random_image((6, 9))
    for shift in [(6.0, 0.0), (-6.0, 0.0), (0.0, 9.5), (-0.5, -9.0), (100.25, -100.75)]:
        assert np.isnan(shift_image(image, shift, kind)).all(), shift


# --------------------------------------------------------------------------- (b) integer shifts


def rolled(image, dy: int, dx: int) -> np.ndarray:
    """``image`` moved by whole pixels: out[i, j] = image[i - dy, j - dx], NaN where that is outside."""
    h, w = image.shape
    out = np.full((h, w), np.nan, dtype=np.float32)
    ys, xs = slice(max(dy, 0), min(h + dy, h)), slice(max(dx, 0), min(w + dx, w))
    if ys.start < ys.stop and xs.start < xs.stop:
        out[ys, xs] = image[max(-dy, 0):max(-dy, 0) + ys.stop - ys.start,
                            max(-dx, 0):max(-dx, 0) + xs.stop - xs.start]
    return out


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", ["uint8", "int8", "uint16", "int16", "int32", "float32", "float64"])
def test_integer_shifts_copy_values_exactly(kind, dtype):
    """An integer shift is a copy, exact in fixed point (8/16-bit) and float32 (others), missing where it
    leaves the image."""
    rng = np.random.default_rng(7)
    image = ptesting.cast_to(rng.uniform(0, 255, size=(13, 17)), dtype)
    if dtype == "int8":
        image = (image.astype(np.int16) - 128).astype(np.int8)
    if dtype == "float64":
        image = image + rng.normal(0, 1e-3, size=image.shape)  # values float32 must round
    for dy, dx in [(0, 0), (1, 0), (0, -1), (3, -5), (-12, 16), (13, 0), (-2, -17)]:
        got = shift_image(image, (float(dy), float(dx)), kind)
        if np.dtype(dtype).itemsize == 1:
            moved = rolled(image.astype(np.float64), dy, dx)
            expected = np.where(np.isnan(moved), MISSING, np.nan_to_num(moved) * 2.0 ** BITS[image.itemsize])
            assert got.dtype == np.int32
            np.testing.assert_array_equal(got, expected.astype(np.int64), err_msg=str((dy, dx)))
        else:
            assert got.dtype == np.float32
            assert np.array_equal(got, rolled(image.astype(np.float32), dy, dx), equal_nan=True), (dy, dx)


def test_the_shifted_dtype_is_fixed_point_for_8_bit_images_only():
    assert dict(FRACTION_BITS) == BITS and MISSING == np.iinfo(np.int32).min
    for dtype in ["uint8", "int8"]:
        assert shifted_dtype(dtype) == np.int32, dtype
        assert shifted_dtype(dtype, fixed=False) == np.float32, dtype  # a run reporting the moving image's std
    for dtype in ["bool", "uint16", "int16", ">u2", "uint32", "int32", "int64", "uint64", "float16", "float32",
                  "float64"]:
        assert shifted_dtype(dtype) == np.float32, dtype
    # a pair read as one array has one dtype: fixed point only with an 8-bit moving image and a reference of 8
    # or 16 bits
    assert shifted_dtype("uint8", "uint16") == np.int32
    assert shifted_dtype("uint8", "float32") == np.float32
    assert shifted_dtype("float32", "uint8") == np.float32


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_fixed_point_is_the_rounded_value_and_float32_may_be_asked_for(kind, dtype):
    """int32 ``round(value * 2**bits)`` of the formula's value; ``dtype=float32`` gives the value itself."""
    image = ptesting.cast_to(np.random.default_rng(4).uniform(0, 255, size=(12, 14)), dtype)
    shift = (0.3, -1.6)
    expected = reference_shift(image, shift, kind)
    got = shift_image(image, shift, kind)
    valid = ~np.isnan(expected)
    np.testing.assert_array_equal(got == MISSING, ~valid)
    exact = expected[valid] * 2.0 ** BITS[image.itemsize]
    assert np.abs(got[valid] - np.round(exact)).max() <= 1  # 1: a value within rounding of a half
    assert np.abs(got[valid] - exact).max() <= 0.5 + 1e-6
    as_float = shift_image(image, shift, kind, dtype=np.float32)
    assert as_float.dtype == np.float32
    assert_close_to_reference(as_float, expected, float(np.ptp(image.astype(float))))


@pytest.mark.parametrize("dtype", [">f8", ">u2", "float16", "bool"])
def test_unusual_dtypes_are_read_by_value(dtype):
    """Big-endian, half-precision and boolean images are interpolated by their values."""
    image = np.random.default_rng(1).uniform(0, 200, size=(9, 11))
    image = (image > 100) if dtype == "bool" else image.astype(dtype)
    values = np.asarray(image, dtype=np.float64)
    for shift in [(1.0, -2.0), (0.5, -1.25)]:
        got = shift_image(image, shift, "cubic")
        assert_close_to_reference(got, reference_shift(values, shift, "cubic"), 200.0, moving_dtype=image.dtype)


def test_strided_views_are_read_as_their_values():
    base = random_image((30, 40), seed=5)
    for view in (base[::2, ::3], base[::-1, 5:20], base.T[3:17, :12]):
        for kind in KINDS:
            got = shift_image(view, (0.4, -1.3), kind)
            assert np.array_equal(got, shift_image(np.ascontiguousarray(view), (0.4, -1.3), kind), equal_nan=True)


# --------------------------------------------------------------------------- (c) missing values


def footprint(shape, shift, kind, y0: int, x0: int) -> np.ndarray:
    """The outputs whose taps include source pixel (y0, x0): |i - dy - y0| < r per fractional axis, equal per
    integer axis."""
    r = RADIUS[kind]
    i, j = np.indices(shape)
    masks = []
    for index, s, p in ((i, shift[0], y0), (j, shift[1], x0)):
        d = index - float(s) - p
        masks.append(d == 0 if float(s).is_integer() else np.abs(d) < r)
    return masks[0] & masks[1]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shift", [(0.3, -0.6), (-2.75, 1.5), (0.0, 0.4), (-1.5, 2.0), (2.0, -3.0)])
@pytest.mark.parametrize("how", ["nan", "inf", "nodata", "mask"])
def test_a_missing_pixel_makes_exactly_its_tap_footprint_missing(kind, shift, how):
    """One missing source pixel: NaN on a 2r x 2r square (a 2r line when one axis is integer, one pixel when
    both are), the rest unchanged bit for bit."""
    image = random_image((24, 26), seed=11).round()
    y0, x0 = 11, 13
    clean = shift_image(image, shift, kind)
    holed = image.copy()
    options = {}
    if how == "mask":
        options["valid"] = np.ones(image.shape, dtype=bool)
        options["valid"][y0, x0] = False
    else:
        holed[y0, x0] = {"nan": np.nan, "inf": -np.inf, "nodata": -9999.0}[how]
        options["nodata"] = -9999.0 if how == "nodata" else None
    got = shift_image(holed, shift, kind, **options)
    expected_nan = footprint(image.shape, shift, kind, y0, x0)
    r = RADIUS[kind]
    sizes = [1 if float(s).is_integer() else 2 * r for s in shift]
    assert expected_nan.sum() == sizes[0] * sizes[1]
    assert not np.isnan(clean[expected_nan]).any()  # the footprint lies inside the valid part
    np.testing.assert_array_equal(np.isnan(got), np.isnan(clean) | expected_nan)
    assert np.array_equal(got[~expected_nan], clean[~expected_nan], equal_nan=True)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shift", [(0.5, 0.5), (-3.2, 4.9), (1.0, -0.1), (5.0, 2.0)])
def test_the_missing_border_is_where_the_taps_leave_the_image(kind, shift):
    """Output i is valid iff all of its taps i - dy - r < k < i - dy + r (or k = i - dy) are in the image."""
    h, w = 15, 18
    got = shift_image(random_image((h, w)), shift, kind)
    r = RADIUS[kind]

    def inside(n, s):
        pos = np.arange(n) - float(s)
        if float(s).is_integer():
            return (pos >= 0) & (pos <= n - 1)
        return (np.floor(pos) - r + 1 >= 0) & (np.floor(pos) + r <= n - 1)

    expected_valid = inside(h, shift[0])[:, None] & inside(w, shift[1])[None, :]
    np.testing.assert_array_equal(~np.isnan(got), expected_valid)


# --------------------------------------------------------------------------- (d) constants and ramps


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=examples(10))
@given(shift=shifts(-6, 6), value=st.sampled_from([0.0, 1.0, 37.0, -2.5, 1234.0]))
def test_constants_are_reproduced(kind, shift, value):
    got = shift_image(np.full((16, 17), value), shift, kind)
    valid = ~np.isnan(got)
    assert valid.any()
    np.testing.assert_allclose(got[valid], value, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", ["linear", "cubic"])
@settings(max_examples=examples(10))
@given(dy=st.integers(-48, 48), dx=st.integers(-48, 48), cy=st.integers(-3, 3), cx=st.integers(-3, 3),
       c0=st.integers(-50, 50))
def test_linear_ramps_are_reproduced(kind, dy, dx, cy, cx, c0):
    """``c0 + cy i + cx j`` shifted by eighths of a pixel is the ramp at ``(i - dy, j - dx)``: dyadic values
    float32 holds, so the float64 sums round to them (<= 1e-9)."""
    shift = (dy / 8.0, dx / 8.0)
    i, j = np.indices((14, 15))
    ramp = c0 + cy * i + cx * j
    got = shift_image(ramp.astype(np.float64), shift, kind)
    expected = c0 + cy * (i - shift[0]) + cx * (j - shift[1])
    valid = ~np.isnan(got)
    assert valid.any()
    np.testing.assert_allclose(got[valid], expected[valid], rtol=0, atol=1e-9)


def test_lanczos3_moves_a_ramp_by_up_to_two_hundredths_of_a_pixel():
    """Normalised Lanczos-3 reproduces constants but not ramps: its taps' centroid is off the source position
    by up to ~0.02 px (0 at integer and half-pixel positions), so smooth images are shifted slightly off."""
    ramp = np.indices((12, 12))[1].astype(np.float64)
    for fraction, bias in [(0.5, 0.0), (0.3, 0.0182), (0.2, 0.0197), (0.1, 0.0137)]:
        got = shift_image(ramp, (0.0, fraction), "lanczos3")
        error = np.nanmax(np.abs(got - (ramp - fraction)))
        assert abs(error - bias) < 1e-3, (fraction, error)
        _, weights = taps(fraction, "lanczos3")
        assert abs(abs(weights @ (np.arange(-3, 3) + fraction)) - bias) < 1e-3  # taps -3..2 around -fraction


def test_cubic_reproduces_quadratics_and_linear_does_not():
    """Keys' a = -0.5 kernel is exact for quadratics (its defining property); the linear one is not."""
    i, j = np.indices((12, 12)).astype(np.float64)
    quad = 0.5 * i * i - 0.25 * i * j + 0.125 * j * j
    shift = (0.5, -0.25)
    expected = 0.5 * (i - 0.5) ** 2 - 0.25 * (i - 0.5) * (j + 0.25) + 0.125 * (j + 0.25) ** 2
    cubic = shift_image(quad, shift, "cubic")
    valid = ~np.isnan(cubic)
    np.testing.assert_allclose(cubic[valid], expected[valid], rtol=0, atol=1e-5)
    linear = shift_image(quad, shift, "linear")
    assert np.nanmax(np.abs(linear - expected)) > 0.05


# --------------------------------------------------------------------------- (e) accuracy


def band_limited_pair(shift, sigma: float = 0.8, size: int = 160, margin: int = 24):
    """(image, exactly shifted image): a blurred photograph tapered to its mean at the edges (so the periodic
    Fourier shift has nothing to wrap), shifted in the Fourier domain, both cropped to the interior."""
    photo = ndimage.gaussian_filter(ptesting.camera()[100:100 + size, 150:150 + size].astype(np.float64), sigma)
    taper = np.ones(size)
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(margin) / margin)
    taper[:margin], taper[-margin:] = ramp, ramp[::-1]
    taper2 = taper[:, None] * taper[None, :]
    mean = photo.mean()
    photo = mean + (photo - mean) * taper2
    shifted = np.fft.ifft2(ndimage.fourier_shift(np.fft.fft2(photo), shift)).real
    inner = (slice(margin, size - margin),) * 2
    return photo[inner], shifted[inner]


@pytest.mark.parametrize("shift", [(0.5, 0.5), (2.3, -1.7), (-0.25, 3.6), (0.1, 0.2), (1.9, -0.9)])
def test_lanczos_beats_cubic_beats_linear_on_a_band_limited_image(shift):
    """RMS error against the exact (Fourier) shift of a photograph with detail up to near Nyquist (a gaussian
    blur of 0.8 px). On much smoother images Lanczos-3 falls behind cubic: see the ramp test below."""
    image, exact = band_limited_pair(shift)
    errors = {}
    for kind in KINDS:
        got = shift_image(image, shift, kind)
        inner = (slice(8, -8), slice(8, -8))  # valid for every kernel: |shift| + 3 < 8
        assert not np.isnan(got[inner]).any()
        errors[kind] = float(np.sqrt(np.mean((got[inner] - exact[inner]) ** 2)))
    assert errors["lanczos3"] < errors["cubic"] < errors["linear"], errors
    assert errors["lanczos3"] < 0.05 * np.ptp(image), errors


def test_integer_shift_of_the_fourier_pair_is_exact():
    """The Fourier shift's convention is the kernels': an integer shift matches it to rounding."""
    image, exact = band_limited_pair((2.0, -3.0))
    got = shift_image(image, (2.0, -3.0), "linear")
    valid = ~np.isnan(got)
    np.testing.assert_allclose(got[valid], exact[valid], atol=1e-3)


# --------------------------------------------------------------------------- (f) taps and errors


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=examples(20))
@given(shift=st.floats(-50, 50, allow_nan=False))
def test_taps_sum_to_one_and_follow_the_formula(kind, shift):
    first, weights = taps(shift, kind)
    assert weights.dtype == np.float64
    assert abs(weights.sum() - 1.0) <= 1e-12
    position = -shift
    if position == math.floor(position):
        assert first == int(position) and weights.tolist() == [1.0]
        return
    index, expected = axis_taps(position, kind)
    assert len(weights) == 2 * RADIUS[kind] == 2 * SUPPORT[kind]
    assert first == index[0]
    np.testing.assert_allclose(weights, expected, rtol=0, atol=1e-9)


def test_the_kinds_are_the_documented_ones():
    assert tuple(INTERPOLATIONS) == tuple(KINDS)
    assert dict(SUPPORT) == RADIUS


@pytest.mark.parametrize("kind", ["nearest", "Cubic", "", "lanczos", "bilinear"])
def test_unknown_kinds_are_input_errors(kind):
    with pytest.raises(InputError, match="linear, cubic, lanczos3") as info:
        taps(0.5, kind)
    assert repr(kind) in str(info.value)
    with pytest.raises(InputError):
        shift_image(np.zeros((4, 4)), (0.5, 0.5), kind)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_shifts_are_input_errors(value):
    with pytest.raises(InputError, match="finite"):
        taps(value, "cubic")
    with pytest.raises(InputError, match="finite"):
        shift_image(np.zeros((4, 4)), (0.0, value), "linear")


# --------------------------------------------------------------------------- (g) as_missing


def test_as_missing_marks_non_finite_nodata_and_masked_pixels():
    values = np.array([[1.0, np.nan, np.inf], [-np.inf, -9999.0, 5.0]])
    mask = np.array([[True, True, True], [True, True, False]])
    original = values.copy()
    got = as_missing(values, -9999.0, mask)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(np.isnan(got), [[False, True, True], [True, True, True]])
    assert got[0, 0] == 1.0
    assert np.array_equal(values, original, equal_nan=True)  # a copy: the input is untouched
    got = as_missing(values)
    np.testing.assert_array_equal(np.isnan(got), [[False, True, True], [True, False, False]])


def test_as_missing_of_integer_images():
    values = np.array([[0, 7, 65535], [3, 0, 9]], dtype=np.uint16)
    got = as_missing(values, 0)
    np.testing.assert_array_equal(np.isnan(got), [[True, False, False], [False, True, False]])
    assert got[0, 2] == 65535.0
    assert as_missing(values) is values  # nothing can be missing: the stored values, not a float64 copy
    assert as_missing(values, float("nan")) is values
    assert not np.isnan(as_missing(values, 300000)).any()  # a value the dtype cannot hold matches nothing
    got = as_missing(values, None, np.array([[1, 0, 1], [1, 1, 0]]))  # a 0/1 mask is a bool mask
    np.testing.assert_array_equal(np.isnan(got), [[False, True, False], [False, False, True]])


def test_as_missing_with_a_nan_nodata_marks_only_non_finite_values():
    values = np.array([1.0, np.nan, 2.0])
    for nodata in (np.nan, float("nan"), np.float64("nan")):
        np.testing.assert_array_equal(np.isnan(as_missing(values, nodata)), [False, True, False])


@pytest.mark.parametrize("kind", KINDS)
def test_shift_image_marks_missing_pixels_as_as_missing_does(kind):
    """nodata, masks and non-finite values in a float32 image: an integer shift of 0 is NaN exactly where
    ``as_missing`` says a pixel is missing; elsewhere the stored value."""
    rng = np.random.default_rng(2)
    image = rng.integers(0, 5, size=(10, 12)).astype(np.float32)
    image[rng.random(image.shape) < 0.1] = np.inf
    mask = rng.random(image.shape) > 0.2
    for nodata in (0.0, 3.0, None):
        got = shift_image(image, (0.0, 0.0), kind, nodata=nodata, valid=mask)
        expected = as_missing(image, nodata, mask).astype(np.float32)
        assert np.array_equal(got, expected, equal_nan=True), nodata


def test_a_nodata_value_float32_rounds_is_missing_after_a_shift():
    image = np.array([[0.1, 1.0, 2.0], [3.0, 0.1, 4.0]], dtype=np.float32)
    expected = np.isnan(as_missing(image, 0.1))
    assert expected.tolist() == [[True, False, False], [False, True, False]]
    got = shift_image(image, (0.0, 0.0), "linear", nodata=0.1)
    np.testing.assert_array_equal(np.isnan(got), expected)


# --------------------------------------------------------------------------- (h) frames


@pytest.mark.parametrize("kind", KINDS)
def test_frames_with_their_own_shifts_equal_one_call_per_frame(kind):
    rng = np.random.default_rng(9)
    video = rng.normal(50.0, 10.0, size=(3, 14, 16)).astype(np.float32)
    mask = rng.random(video.shape) > 0.05
    per_frame = np.array([[0.5, -1.25], [2.0, 3.0], [-0.7, 0.0]])
    got = shift_image(video, per_frame, kind, nodata=50.0, valid=mask)
    assert got.shape == video.shape and got.dtype == np.float32
    for t in range(3):
        expected = shift_image(video[t], per_frame[t], kind, nodata=50.0, valid=mask[t])
        assert np.array_equal(got[t], expected, equal_nan=True), t
        assert_close_to_reference(got[t], reference_shift(as_missing(video[t], 50.0, mask[t]), per_frame[t], kind),
                                  np.nanmax(video) - np.nanmin(video))
    one = shift_image(video, (0.5, -1.25), kind)  # one pair for every frame
    for t in range(3):
        assert np.array_equal(one[t], shift_image(video[t], (0.5, -1.25), kind), equal_nan=True)
