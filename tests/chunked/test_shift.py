"""Tests of the lazy shift of dask inputs (``pipeline.chunked.shift``) and of ``local_ncc(..., shift=)``.

The oracle of the dask shift is the in-memory ``shift_image`` (checked against the kernel formulas in
``tests/core/test_interpolation.py``), bit for bit; the oracle of the map is ``pipeline.testing.reference_ncc``
of the reference and the shifted moving image, with the shift's missing pixels as invalid.
"""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from pipeline import InputError, local_ncc, register
from pipeline import testing as ptesting
from pipeline.chunked.shift import apply_shift, shift_dask
from pipeline.core.interpolation import shift_image, shifted_dtype
from support import MAP_NAMES, assert_matches, assert_same

KINDS = ["linear", "cubic", "lanczos3"]
FRACTIONS = [0.0, 0.125, 0.25, 0.5, 0.7, 0.9]


def examples(n: int) -> int:
    """``n`` examples under the default hypothesis profile (40), scaled with the profile (thorough: 10x)."""
    return max(1, n * settings.default.max_examples // 40)


# --------------------------------------------------------------------------- strategies


def one_shift(limit: int = 20):
    return st.builds(lambda n, f, sign: sign * min(limit, n + f), st.integers(0, limit), st.sampled_from(FRACTIONS),
                     st.sampled_from([-1.0, 1.0]))


@st.composite
def partitions(draw, n):
    """A partition of an axis of length n: arbitrary cuts (with size-1 chunks), uniform, tiny (1-3 px) or whole."""
    style = draw(st.sampled_from(["cuts", "cuts", "uniform", "tiny", "whole"]))
    if n == 1 or style == "whole":
        return (n,)
    if style == "uniform":
        size = draw(st.integers(max(1, n // 5), n))
        return (size,) * (n // size) + ((n % size,) if n % size else ())
    if style == "tiny":  # a few chunks of 1-3 px, then the rest in one or two chunks
        sizes = draw(st.lists(st.integers(1, 3), min_size=1, max_size=4))
        out, left = [], n
        for s in sizes:
            if s < left:
                out.append(s)
                left -= s
        if left > 4 and draw(st.booleans()):
            out += [left // 2, left - left // 2]
        elif left:
            out.append(left)
        return tuple(draw(st.permutations(out)))
    cuts = set(draw(st.sets(st.integers(1, n - 1), max_size=4)))
    if cuts and draw(st.booleans()):
        c = min(cuts)
        if c + 1 < n:
            cuts.add(c + 1)
    points = [0, *sorted(cuts), n]
    return tuple(b - a for a, b in zip(points[:-1], points[1:]))


def image(shape, seed, dtype="float64"):
    return ptesting.cast_to(np.random.default_rng(seed).uniform(0, 255, size=shape), dtype)


def same(a, b) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=True)


def decoded(shifted, moving_dtype) -> np.ndarray:
    """A shifted image's values as float64, NaN where missing (8-bit images: int32 fixed point with 16
    fractional bits, int32's smallest value where missing; others float32 with NaN)."""
    shifted = np.asarray(shifted)
    bits = {1: 16}.get(np.dtype(moving_dtype).itemsize) if np.dtype(moving_dtype).kind in "iu" else None
    if bits is None:
        assert shifted.dtype == np.float32
        return shifted.astype(np.float64)
    assert shifted.dtype == np.int32
    return np.where(shifted == np.iinfo(np.int32).min, np.nan, shifted / 2.0**bits)


# --------------------------------------------------------------------------- shift_dask equals shift_image


@settings(max_examples=examples(40))
@given(data=st.data(), h=st.integers(5, 60), w=st.integers(5, 60), kind=st.sampled_from(KINDS),
       shift=st.tuples(one_shift(), one_shift()), seed=st.integers(0, 2**31 - 1),
       dtype=st.sampled_from(["uint8", "int16", "float32", "float64"]))
def test_shift_dask_equals_shift_image_bit_for_bit(data, h, w, kind, shift, seed, dtype):
    """Any chunking (chunks of 1 px, chunks shorter than the taps or the shift) gives shift_image's values."""
    x = image((h, w), seed, dtype)
    chunks = (data.draw(partitions(h)), data.draw(partitions(w)))
    lazy = shift_dask(da.from_array(x, chunks=chunks), shift, kind)
    assert isinstance(lazy, da.Array) and lazy.dtype == shifted_dtype(x.dtype)
    assert lazy.chunks == chunks
    assert same(lazy.compute(scheduler="synchronous"), shift_image(x, shift, kind))


@settings(max_examples=examples(15))
@given(data=st.data(), t=st.integers(1, 3), h=st.integers(5, 30), w=st.integers(5, 30),
       kind=st.sampled_from(KINDS), seed=st.integers(0, 2**31 - 1), per_frame=st.booleans())
def test_frames_are_shifted_by_their_own_shifts(data, t, h, w, kind, seed, per_frame):
    x = image((t, h, w), seed, "float32")
    shifts = np.array(data.draw(st.lists(st.tuples(one_shift(12), one_shift(12)), min_size=t, max_size=t)))
    shift = shifts if per_frame else shifts[0]
    chunks = (data.draw(partitions(t)), data.draw(partitions(h)), data.draw(partitions(w)))
    lazy = shift_dask(da.from_array(x, chunks=chunks), shift, kind)
    assert lazy.chunks == chunks
    got = lazy.compute(scheduler="synchronous")
    assert same(got, shift_image(x, shift, kind))
    for k in range(t):  # and that is each frame by its own shift
        assert same(got[k], shift_image(x[k], shifts[k] if per_frame else shifts[0], kind))


@settings(max_examples=examples(15))
@given(data=st.data(), h=st.integers(5, 40), w=st.integers(5, 40), kind=st.sampled_from(KINDS),
       shift=st.tuples(one_shift(8), one_shift(8)), seed=st.integers(0, 2**31 - 1),
       same_chunks=st.booleans())
def test_nodata_and_a_dask_mask_are_missing_like_in_memory(data, h, w, kind, shift, seed, same_chunks):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 6, size=(h, w)).astype(np.int16)  # many pixels equal nodata
    mask = rng.random((h, w)) > 0.1
    chunks = (data.draw(partitions(h)), data.draw(partitions(w)))
    mask_chunks = chunks if same_chunks else (data.draw(partitions(h)), data.draw(partitions(w)))
    lazy = shift_dask(da.from_array(x, chunks=chunks), shift, kind, nodata=5,
                      valid=da.from_array(mask, chunks=mask_chunks))
    assert lazy.chunks == chunks
    expected = shift_image(x, shift, kind, nodata=5, valid=mask)
    assert same(lazy.compute(scheduler="synchronous"), expected)
    plain = np.isnan(decoded(shift_image(x, shift, kind), x.dtype))
    assert (np.isnan(decoded(expected, x.dtype)) >= plain).all()  # missing pixels only add missing outputs


def test_nan_and_inf_in_a_float_image_are_missing():
    x = image((20, 24), 3)
    x[4, 5], x[10, 17], x[15, 2] = np.nan, np.inf, -np.inf
    for kind in KINDS:
        lazy = shift_dask(da.from_array(x, chunks=(3, 5)), (1.5, -2.25), kind)
        assert same(lazy.compute(), shift_image(x, (1.5, -2.25), kind))


def test_building_the_graph_computes_nothing():
    x = da.from_array(image((30, 30), 0), chunks=(7, 7))
    with dask.config.set(scheduler=_forbidden_scheduler):
        lazy = shift_dask(x, (2.5, -1.5), "lanczos3", nodata=0.0, valid=x > 10)
        apply_shift(x, x, (2.5, -1.5), "cubic", None, None)
    assert lazy.shape == (30, 30)


def _forbidden_scheduler(*args, **kwargs):
    raise RuntimeError("a dask graph was computed while only being built")


def test_a_float32_nodata_value_is_missing_in_dask_and_in_memory_alike():
    x = np.full((8, 8), 1.0, dtype=np.float32)
    x[3, 3] = 0.1
    lazy = shift_dask(da.from_array(x, chunks=(4, 4)), (0.5, 0.5), "linear", nodata=0.1)
    assert same(lazy.compute(), shift_image(x, (0.5, 0.5), "linear", nodata=0.1))


def test_the_graph_of_a_shift_beyond_the_image_does_not_grow_with_the_shift():
    x = da.from_array(image((20, 20), 0), chunks=7)
    small = len(shift_dask(x, (0.5, 0.0), "cubic").__dask_graph__())
    far = shift_dask(x, (3e4 + 0.5, 0.0), "cubic")
    assert len(far.__dask_graph__()) <= 4 * small, (len(far.__dask_graph__()), small)


# --------------------------------------------------------------------------- apply_shift errors


@pytest.mark.parametrize("shape, shift, words", [
    ((10, 12), (1.0,), ["(dy, dx)", "(1,)"]),
    ((10, 12), (1.0, 2.0, 3.0), ["(dy, dx)", "(3,)"]),
    ((10, 12), [[1.0, 2.0], [3.0, 4.0]], ["(dy, dx)", "(2, 2)"]),
    ((3, 10, 12), [[1.0, 2.0], [3.0, 4.0]], ["(3, 2)", "(2, 2)"]),
    ((3, 10, 12), [[1.0, 2.0, 3.0]] * 3, ["(3, 2)", "(3, 3)"]),
])
def test_a_shift_of_the_wrong_shape_is_an_input_error(shape, shift, words):
    a = np.zeros(shape)
    for moving in (a, da.from_array(a, chunks=5)):
        with pytest.raises(InputError) as info:
            apply_shift(a, moving, shift, "cubic", None, None)
        message = str(info.value)
        assert "\n" not in message and all(word in message for word in words), message
        with pytest.raises(InputError):
            local_ncc(a, moving, 3, shift=shift)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_shift_is_an_input_error(bad):
    a = np.zeros((3, 8, 8))
    for shift in [(0.0, bad), [[0.0, 0.0], [bad, 1.0], [0.0, 0.0]]]:
        with pytest.raises(InputError, match="finite") as info:
            apply_shift(a, da.from_array(a), shift, "linear", None, None)
        assert "\n" not in str(info.value)


def test_reference_and_moving_of_different_shapes_are_an_input_error():
    with pytest.raises(InputError, match=r"same shape.*\(10, 12\).*\(10, 13\)") as info:
        apply_shift(np.zeros((10, 12)), np.zeros((10, 13)), (0.5, 0.5), "cubic", None, None)
    assert "\n" not in str(info.value)
    with pytest.raises(InputError):
        local_ncc(np.zeros((10, 12)), da.zeros((10, 13), chunks=4), 3, shift=(0.5, 0.5))


def test_an_unknown_interpolation_is_an_input_error():
    a = image((10, 10), 1)
    for moving in (a, da.from_array(a, chunks=4)):
        with pytest.raises(InputError, match="lanczos3") as info:
            local_ncc(a, moving, 3, shift=(0.5, 0.5), interpolation="bicubic")
        assert "'bicubic'" in str(info.value) and "\n" not in str(info.value)


def test_apply_shift_keeps_only_the_reference_nodata():
    """The moving image's nodata and mask are NaN in the shifted image: the options left apply to the reference."""
    a = image((9, 9), 2)
    mask = np.ones((9, 9), dtype=bool)
    mask[4, 4] = False
    shifted, nodata, moving_mask = apply_shift(a, a, (0.0, 0.0), "cubic", (7.0, 8.0), mask)
    assert nodata == (7.0, None) and moving_mask is None
    assert same(shifted, shift_image(a, (0.0, 0.0), "cubic", nodata=8.0, valid=mask))
    shifted, nodata, _ = apply_shift(a, da.from_array(a, chunks=4), (0.0, 0.0), "cubic", 8.0, da.from_array(mask))
    assert nodata == (8.0, None) and isinstance(shifted, da.Array)
    assert same(shifted.compute(), shift_image(a, (0.0, 0.0), "cubic", nodata=8.0, valid=mask))


# --------------------------------------------------------------------------- local_ncc(..., shift=)


def expected_map(ref, mov, window, shift, kind, min_valid=0.5, boundary="reflect", nodata=None, valid=None):
    """reference_ncc of the reference and the shifted moving image, its missing pixels left out of the windows."""
    shifted = decoded(shift_image(mov, shift, kind, nodata=nodata, valid=valid), np.asarray(mov).dtype)
    invalid = np.isnan(shifted)
    return ptesting.reference_ncc(np.asarray(ref, np.float64), np.where(invalid, 0.0, shifted), window,
                                  boundary=boundary, invalid=invalid, min_valid=min_valid)


@settings(max_examples=examples(12))
@given(data=st.data(), h=st.integers(7, 40), w=st.integers(7, 40), kind=st.sampled_from(KINDS),
       shift=st.tuples(one_shift(10), one_shift(10)), seed=st.integers(0, 2**31 - 1),
       min_valid=st.sampled_from([0.0, 0.3, 0.5, 0.9, 1.0]), boundary=st.sampled_from(["reflect", "nearest", "nan"]))
def test_the_map_of_a_shifted_pair_is_the_reference_ncc(data, h, w, kind, shift, seed, min_valid, boundary):
    """numpy and dask inputs (blocks smaller than the shift and the window radius) give reference_ncc of the
    shifted moving image, with min_valid counting the pixels the shift left missing."""
    ref, mov = ptesting.sample_crop((h, w), "uint8", seed)
    window = data.draw(st.sampled_from(list(range(3, min(h, w, 11) + 1, 2))))
    options = dict(shift=shift, interpolation=kind, min_valid=min_valid, boundary=boundary)
    expected = expected_map(ref, mov, window, shift, kind, min_valid, boundary)
    got = local_ncc(ref, mov, window, **options)
    assert got.dtype == np.float32
    assert_matches(got, expected)
    chunks = (data.draw(partitions(h)), data.draw(partitions(w)))
    lazy = local_ncc(da.from_array(ref, chunks=chunks), da.from_array(mov, chunks=chunks), window, **options)
    assert isinstance(lazy, da.Array)
    assert_matches(lazy.compute(scheduler="synchronous"), got)
    mixed = local_ncc(ref, da.from_array(mov, chunks=chunks[::-1] if h == w else chunks), window, **options)
    assert_matches(mixed.compute(scheduler="synchronous"), got)


def test_min_valid_is_counted_over_the_shifted_image():
    """A 4.5 px shift leaves 5 rows missing (linear): window 5 rows reach them; min_valid decides which are NaN."""
    ref, mov = ptesting.sample_crop((30, 30), "float32", seed=4)
    shift = (4.5, 0.0)
    for min_valid in (0.0, 0.4, 0.6, 1.0):
        got = local_ncc(ref, mov, 5, shift=shift, interpolation="linear", min_valid=min_valid)
        assert_matches(got, expected_map(ref, mov, 5, shift, "linear", min_valid))
        # independent count: rows 0..4 are missing (taps at i - 4.5 -> rows i - 5 and i - 4); a window spans
        # rows i - 2 .. i + 2, mirrored at the edges (d c b a | a b c d)
        mirror = lambda k: -k - 1 if k < 0 else (59 - k if k > 29 else k)  # noqa: E731
        fraction = np.array([sum(mirror(k) >= 5 for k in range(i - 2, i + 3)) / 5 for i in range(30)])
        np.testing.assert_array_equal(np.isnan(got[:, 10]), (fraction == 0) | (fraction < min_valid - 1e-9))


def test_moving_nodata_and_mask_are_left_out_after_the_shift():
    ref, mov = ptesting.sample_crop((3, 25, 31), "uint16", seed=8)
    rng = np.random.default_rng(0)
    mask = rng.random(mov.shape) > 0.15
    shifts = np.array([[0.5, -1.5], [-2.25, 0.0], [3.0, 2.0]])
    got = local_ncc(ref, mov, 5, shift=shifts, nodata=(None, int(mov[0, 5, 5])), moving_mask=mask)
    for t in range(3):
        expected = expected_map(ref[t], mov[t], 5, shifts[t], "cubic", nodata=int(mov[0, 5, 5]), valid=mask[t])
        assert_matches(got[t], expected)
    lazy = local_ncc(da.from_array(ref, chunks=(1, 6, 7)), da.from_array(mov, chunks=(2, 4, 31)), 5, shift=shifts,
                     nodata=(None, int(mov[0, 5, 5])), moving_mask=da.from_array(mask, chunks=(3, 9, 9)))
    assert_matches(lazy.compute(), got)


def test_a_nodata_value_for_both_images_applies_to_the_reference_and_to_the_moving_image_before_the_shift():
    ref, mov = ptesting.sample_crop((28, 30), "uint8", seed=9)
    ref, mov = ref.copy(), mov.copy()
    ref[:, :4] = 0  # a nodata border on the reference
    mov[10:14, 12:15] = 0  # and a nodata hole in the moving image
    shift = (1.25, -2.5)
    got = local_ncc(ref, mov, 5, shift=shift, nodata=0)
    shifted = decoded(shift_image(mov, shift, "cubic", nodata=0), mov.dtype)
    invalid = np.isnan(shifted) | (ref == 0)
    expected = ptesting.reference_ncc(ref.astype(np.float64), np.nan_to_num(shifted), 5, invalid=invalid)
    assert_matches(got, expected)
    lazy = local_ncc(da.from_array(ref, chunks=(5, 6)), da.from_array(mov, chunks=(7, 3)), 5, shift=shift, nodata=0)
    assert_matches(lazy.compute(), got)


def test_extras_of_a_shifted_pair_are_those_of_the_reference():
    """valid_fraction and both stds (float images) are reference_ncc's of the reference and the shifted image."""
    ref, mov = ptesting.sample_crop((2, 26, 30), "float32", seed=3)
    shifts = np.array([[2.5, -0.75], [-1.0, 3.125]])
    got = local_ncc(ref, mov, 5, shift=shifts, interpolation="lanczos3", extras=True, min_valid=0.3)
    lazy = local_ncc(da.from_array(ref, chunks=(1, 4, 30)), da.from_array(mov, chunks=(2, 26, 4)), 5, shift=shifts,
                     interpolation="lanczos3", extras=True, min_valid=0.3)
    for t in range(2):
        shifted = decoded(shift_image(mov[t], shifts[t], "lanczos3"), mov.dtype)
        expected = ptesting.reference_ncc(ref[t].astype(np.float64), np.nan_to_num(shifted), 5,
                                          invalid=np.isnan(shifted), min_valid=0.3, extras=True)
        assert_same([got[name][t] for name in MAP_NAMES], expected)
        assert_same([lazy[name][t].compute() for name in MAP_NAMES], expected)


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
@pytest.mark.parametrize("lazy", [False, True])
def test_std_moving_is_in_the_moving_images_units_after_a_shift(dtype, lazy):
    ref, mov = ptesting.sample_crop((30, 32), dtype, seed=1)
    wrap = (lambda a: da.from_array(a, chunks=10)) if lazy else (lambda a: a)  # noqa: E731
    unshifted = local_ncc(ref, mov, 5, extras=True)
    shifted = local_ncc(wrap(ref), wrap(mov), 5, extras=True, shift=(0.0, 0.0))  # an integer shift: a copy
    assert_matches(np.asarray(shifted["std_moving"]), unshifted["std_moving"], tol=1e-3)


def test_a_low_range_16_bit_pair_keeps_float_precision_when_shifted():
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 20, size=(60, 60)).astype(np.uint16)
    mov = ((ref + rng.integers(0, 20, size=(60, 60))) // 2).astype(np.uint16)
    as_float = [a.astype(np.float64) for a in (ref, mov)]
    assert_matches(local_ncc(ref, mov, 3), local_ncc(*as_float, 3))  # unshifted: the same map
    assert_matches(local_ncc(ref, mov, 3, shift=(0.3, 0.3)), local_ncc(*as_float, 3, shift=(0.3, 0.3)), tol=1e-5)


@pytest.mark.parametrize("boundary", ["reflect", "nearest"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shift", [(3.5, -4.25), (-6.0, 2.5), (1.5, 7.0)])
def test_pixels_sourced_outside_the_moving_image_are_missing_in_the_map(boundary, kind, shift):
    """The edge a shift exposes is not filled with (reflected) moving values: a pixel whose source position
    i - dy lies outside the moving image has fewer than half of its window valid, so it is NaN. (With a
    reflecting boundary that needs a missing band of at least (r + 1) / 2 px, here >= 2 px for r = 3: the
    next test shows a 1-px band.)"""
    ref, mov = ptesting.sample_crop((40, 44), "float32", seed=6)
    got = local_ncc(ref, mov, 7, shift=shift, interpolation=kind, boundary=boundary)
    i, j = np.indices(ref.shape)
    outside = (i - shift[0] < 0) | (i - shift[0] > 39) | (j - shift[1] < 0) | (j - shift[1] > 43)
    assert outside.any()
    assert np.isnan(got[outside]).all()
    assert not np.isnan(got[~outside]).all()
    assert_matches(got, expected_map(ref, mov, 7, shift, kind, boundary=boundary))
    if kind == "cubic":  # blocks of 2 x 3 px, shorter than the shift and the radius
        lazy = local_ncc(da.from_array(ref, chunks=(2, 3)), da.from_array(mov, chunks=(20, 22)), 7, shift=shift,
                         interpolation=kind, boundary=boundary)
        assert_matches(lazy.compute(), got)


def test_a_one_pixel_exposed_edge_is_missing_data_like_any_other():
    """A 0.5 px linear shift leaves row 0 without a source. Like any missing pixel it only leaves the windows:
    with ``reflect`` row 0's window holds mirrored rows 1..3 twice (5 of 7 rows valid), so it has a value
    (min_valid 0.5); with ``nearest`` it repeats row 0 (3 of 7 valid) and is NaN; min_valid=0.9 drops it."""
    ref, mov = ptesting.sample_crop((20, 22), "float32", seed=2)
    shifted = shift_image(mov, (0.5, 0.0), "linear")
    assert np.isnan(shifted[0]).all() and not np.isnan(shifted[1:]).any()
    for boundary, min_valid, nan_row_0 in [("reflect", 0.5, False), ("nearest", 0.5, True), ("reflect", 0.9, True)]:
        got = local_ncc(ref, mov, 7, shift=(0.5, 0.0), interpolation="linear", boundary=boundary,
                        min_valid=min_valid)
        assert np.isnan(got[0]).all() == nan_row_0 and not np.isnan(got[0]).any() == (not nan_row_0)
        assert_matches(got, expected_map(ref, mov, 7, (0.5, 0.0), "linear", min_valid, boundary))


def shifted_photo_pair(displacement, noise=4.0, size=96, seed=0):
    """(reference, moving): a photograph crop and the same scene displaced by ``displacement`` px (an exact
    Fourier shift of a larger crop, cropped so nothing wraps) plus noise."""
    margin = 24
    big = ndimage.gaussian_filter(ptesting.camera()[280:280 + size + 2 * margin, 180:180 + size + 2 * margin]
                                  .astype(np.float64), 0.7)
    moved = np.fft.ifft2(ndimage.fourier_shift(np.fft.fft2(big), displacement)).real
    inner = (slice(margin, margin + size),) * 2
    rng = np.random.default_rng(seed)
    return big[inner], moved[inner] + rng.normal(0.0, noise, size=(size, size))


@pytest.mark.parametrize("kind", KINDS)
def test_a_registered_pair_correlates_only_once_the_shift_is_applied(kind):
    """PITFALL 21: a pair displaced by a known subpixel amount has a low map unshifted and a high one with
    ``shift=`` (the registering shift, minus the displacement); estimating the shift and not applying it, or
    applying it the wrong way round, stays low."""
    displacement = (3.4, -2.7)
    ref, mov = shifted_photo_pair(displacement)
    registering = (-displacement[0], -displacement[1])
    before = np.nanmedian(local_ncc(ref, mov, 7))
    after = local_ncc(ref, mov, 7, shift=registering, interpolation=kind)
    wrong_way = np.nanmedian(local_ncc(ref, mov, 7, shift=displacement, interpolation=kind))
    assert before < 0.3 and wrong_way < 0.3, (before, wrong_way)
    assert np.nanmedian(after) > 0.8, np.nanmedian(after)
    if kind == "cubic":  # blocks of 3 rows, shorter than the shift
        lazy = local_ncc(da.from_array(ref, chunks=(3, 50)), da.from_array(mov, chunks=(3, 50)), 7,
                         shift=registering, interpolation=kind)
        assert_matches(lazy.compute(), after)


def test_the_estimated_shift_is_the_one_to_apply():
    displacement = (3.4, -2.7)
    ref, mov = shifted_photo_pair(displacement, size=128)
    found = register(ref, mov)
    np.testing.assert_allclose(found.shift, [-3.4, 2.7], atol=0.15)
    assert np.nanmedian(local_ncc(ref, mov, 7, shift=found.shift)) > 0.8


def test_xarray_inputs_keep_their_dims_and_coords_with_a_shift():
    ref, mov = ptesting.sample_crop((2, 20, 24), "float32", seed=5)
    coords = {"time": [10, 20], "lat": np.linspace(40, 41, 20), "lon": np.linspace(5, 6, 24)}
    dims = ("time", "lat", "lon")
    xref = xr.DataArray(ref, dims=dims, coords=coords, attrs={"units": "K"})
    xmov = xr.DataArray(mov, dims=dims, coords=coords)
    shifts = np.array([[1.5, -0.5], [0.0, 2.25]])
    expected = local_ncc(ref, mov, 5, shift=shifts, interpolation="lanczos3")
    for moving in (xmov, xmov.chunk({"lat": 3, "lon": 7})):
        got = local_ncc(xref, moving, 5, shift=shifts, interpolation="lanczos3")
        assert isinstance(got, xr.DataArray) and got.name == "ncc"
        assert got.dims == dims
        for name in dims:
            np.testing.assert_array_equal(got[name].values, xref[name].values)
        assert_matches(np.asarray(got.values), expected)
    extras = local_ncc(xref, xmov, 5, shift=shifts, extras=True)
    assert isinstance(extras, xr.Dataset) and extras["ncc"].dims == dims
    assert_matches(extras["ncc"].values, local_ncc(ref, mov, 5, shift=shifts))
