"""Registration maths on real images: translation, per-frame and per-tile shifts (pipeline.core.registration).

Known subpixel shifts come from a Fourier shift of a mirror-padded photograph (cropped back, so nothing
wraps around), independent of the Lanczos-3 warp the estimators fit with; noise and a gain and offset make
the pairs realistic. The images are read region by region through callables, the estimators' interface.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi
from skimage import data
from skimage.color import rgb2gray

from pipeline.core.interpolation import taps
from pipeline.core.registration import UNBOUNDED, estimate_frames, estimate_translation
from pipeline.core.tilefield import BORDER, estimate_field, estimate_field_frames, gn_step, tile_sums
from pipeline.core.tiles import BLUR, HALO, read_smoothed
from pipeline.errors import InputError
from pipeline.testing import camera, moved_capture, stereo_pair


def fourier_shifted(image: np.ndarray, shift, pad: int = 64) -> np.ndarray:
    """``image`` moved by ``shift`` (``out[i] = image[i - shift]``), band-limited, without wrap-around."""
    padded = np.pad(np.asarray(image, dtype=np.float64), pad, mode="reflect")
    moved = np.fft.ifft2(ndi.fourier_shift(np.fft.fft2(padded), shift)).real
    return moved[pad:-pad, pad:-pad]


def noisy_pair(image, shift, noise=3.0, gain=0.8, offset=10.0, seed=0):
    """A reference and a moving image that ``shift`` registers onto it: ``moving[i] = ref[i + shift]``."""
    rng = np.random.default_rng(seed)
    ref = np.asarray(image, dtype=np.float64) + rng.normal(0.0, noise, np.shape(image))
    mov = fourier_shifted(image, tuple(-v for v in shift)) * gain + offset + rng.normal(0.0, noise, np.shape(image))
    return ref, mov


def readers(*images):
    return [lambda region, image=image: image[region] for image in images]


def astronaut() -> np.ndarray:
    return rgb2gray(data.astronaut()) * 255.0


def test_the_fit_warps_as_the_interpolation_module_and_differentiates_exactly():
    mov = camera().astype(np.float64)[100:260, 100:260]
    shift, region = (1.3, -0.6), (slice(20, 120), slice(30, 130))
    (fy, wy), (fx, wx) = taps(shift[0], "lanczos3"), taps(shift[1], "lanczos3")
    ys, xs = (np.arange(r.start - BORDER, r.stop + BORDER) for r in region)
    ref = sum(wy[p] * wx[q] * mov[np.ix_(ys + fy + p, xs + fx + q)] for p in range(len(wy)) for q in range(len(wx)))
    sums = tile_sums(ref, mov, region[0].start - shift[0], region[1].start - shift[1], 0.0, np.empty((6, 5)))
    residual = sums[4, 4] - 2 * sums[2, 4] + sums[2, 2]  # sum (ref - W)^2 at gain 1, offset 0
    assert residual <= 1e-18 * sums[4, 4]
    step = np.zeros(4)
    assert gn_step(sums, 1.0, 0.0, False, step) and np.abs(step).max() < 1e-9
    h = 1e-5  # the analytic derivative of the warp: d(sum W)/ds against a central difference
    at = [tile_sums(ref, mov, region[0].start - shift[0] - dy, region[1].start - shift[1] - dx, 0.0,
                    np.empty((6, 5)))[2, 3] for dy, dx in ((h, 0), (-h, 0), (0, h), (0, -h))]
    assert np.allclose([(at[0] - at[1]) / (2 * h), (at[2] - at[3]) / (2 * h)], sums[[0, 1], 3], rtol=1e-5)


def test_a_known_shift_gain_and_offset_are_recovered():
    ref, mov = noisy_pair(camera(), (7.3, -4.6))
    estimate = estimate_translation(*readers(ref, mov), ref.shape)
    assert np.abs(np.subtract(estimate.shift, (7.3, -4.6))).max() <= 0.02
    assert estimate.gain == pytest.approx(1 / 0.8, abs=0.01)  # ref ~ gain * registered + offset
    assert estimate.offset == pytest.approx(-10 / 0.8, abs=1.0)
    # the NCC of the registered pair (the unshifted pair's is far lower: the shift must be applied first)
    assert estimate.correlation > 0.99 and estimate.spread < 0.2 and estimate.tiles >= 1 and estimate.peak > 0.1
    assert json.loads(json.dumps(estimate.as_dict()))["shift"] == list(estimate.shift)


@settings(max_examples=4)
@given(st.tuples(st.floats(-25.0, 25.0), st.floats(-25.0, 25.0)))
def test_shifts_are_recovered_within_a_fiftieth_of_a_pixel(shift):
    ref, mov = noisy_pair(astronaut(), shift, noise=2.0, gain=1.1, offset=-5.0)
    estimate = estimate_translation(*readers(ref, mov), ref.shape, tile=128)
    assert np.abs(np.subtract(estimate.shift, shift)).max() <= 0.02
    assert estimate.tiles >= 9 and estimate.spread < 0.25


def test_missing_pixels_leave_the_sums():
    ref, mov = noisy_pair(stereo_pair()[0], (-3.25, 2.6))
    ref[40:90, 100:300], mov[200:260, 50:400] = np.nan, np.nan
    scattered = np.random.default_rng(9).integers(0, 500, size=(2, 300))  # each hides its taps' neighbourhood
    mov[scattered[0], scattered[1] % 741] = np.nan
    estimate = estimate_translation(*readers(ref, mov), ref.shape, tile=128)
    assert np.abs(np.subtract(estimate.shift, (-3.25, 2.6))).max() <= 0.02


def test_a_thread_pool_map_gives_the_same_estimate():
    ref, mov = noisy_pair(camera(), (2.4, 1.7))
    alone = estimate_translation(*readers(ref, mov), ref.shape, tile=128)
    with ThreadPoolExecutor(2) as pool:
        pooled = estimate_translation(*readers(ref, mov), ref.shape, tile=128, map=pool.map)
    assert pooled == alone


def test_a_shift_beyond_max_shift_is_refused():
    ref, mov = noisy_pair(camera(), (7.3, -4.6))
    with pytest.raises(InputError, match=r"estimated shift \(7\.\d, -4\.\d\) px exceeds registration.max_shift = 5"):
        estimate_translation(*readers(ref, mov), ref.shape, max_shift=5.0)


def test_a_shift_past_half_the_region_resolves_to_the_right_candidate():
    # 180 px of a 300 px wide image: the phase-correlation peak sits at -120 as well; the overlaps decide
    moved = fourier_shifted(astronaut(), (-0.4, 0.0))
    ref, mov = astronaut()[50:450, 0:300], moved[50:450, 180:480]
    estimate = estimate_translation(*readers(ref, mov), ref.shape, tile=128)
    assert np.abs(np.subtract(estimate.shift, (0.4, 180.0))).max() <= 0.02


@pytest.mark.parametrize("which", ["both", "reference", "moving"])
def test_flat_images_are_refused(which):
    flat, textured = np.full((300, 300), 7.0), camera()[:300, :300].astype(np.float64)
    ref, mov = (flat if which in ("both", "reference") else textured), (flat if which != "reference" else textured)
    with pytest.raises(InputError, match="too flat to register: no textured tile"):
        estimate_translation(*readers(ref, mov), ref.shape)


@pytest.mark.parametrize("max_shift", [200.0, 50.0])
def test_unrelated_images_are_refused(max_shift):
    with pytest.raises(InputError, match="do not correlate"):
        estimate_translation(*readers(camera().astype(np.float64), astronaut()), (512, 512), max_shift=max_shift)


def two_part(left=(2.3, -1.7), right=(-2.6, 3.2)):
    """Camera whose left half moved by ``left`` and right half by ``right``, and a flat block at the corner."""
    rng = np.random.default_rng(3)
    image = camera().astype(np.float64)
    image[384:, 384:] = 90.0
    parts = [fourier_shifted(image, tuple(-v for v in s)) for s in (left, right)]
    mov = np.where(np.arange(512) < 256, parts[0], parts[1]) * 0.9 + 5 + rng.normal(0, 2.0, image.shape)
    ref = image + rng.normal(0, 2.0, image.shape)
    # exactly flat under the last 2 x 2 tiles, with the 5 px a tile's smoothing and gradient reach beyond it;
    # in the moving image only inside the moved block, whose edge moves with the rest
    ref[372:, 372:], mov[380:, 380:] = 90.0, 86.0
    return ref, mov


def test_two_translations_are_refused_and_the_field_recovers_each():
    left, right = (2.3, -1.7), (-2.6, 3.2)
    ref, mov = two_part(left, right)
    with pytest.raises(InputError, match=r"tiles disagree by .* registration.method: local"):
        estimate_translation(*readers(ref, mov), ref.shape, tile=128)
    field = estimate_field(*readers(ref, mov), ref.shape, (0.0, 0.0))
    assert field.shift.shape == (8, 8, 2) and field.quality.shape == (8, 8)
    assert np.array_equal(field.centres_x, 31.5 + 64 * np.arange(8))
    truth = np.where((field.centres_x < 256)[None, :, None], left, right)
    away = (np.abs(field.centres_x - 255.5) > 64)[None, :] & ~((np.arange(8) >= 6)[:, None] & (np.arange(8) >= 6))
    known = np.isfinite(field.shift).all(axis=2)
    assert known[away].mean() >= 0.7  # the sky, flat, is unknown too
    assert np.abs(field.shift - truth)[known & away].max() <= 0.1
    assert not known[6:, 6:].any() and np.isnan(field.quality[6:, 6:]).all()
    assert (field.quality[known & away] > 0.5).all()


def test_field_tiles_at_the_border_move_inward_and_residuals_beyond_half_a_tile_resolve():
    ref, mov = noisy_pair(stereo_pair()[0][:, :400], (21.3, -19.2))  # 500 x 400: the last tiles move inward
    field = estimate_field(*readers(ref, mov), ref.shape, (0.0, 0.0), tile=64, search=28)
    assert np.array_equal(field.centres_y, [31.5 + 64 * i for i in range(7)] + [467.5])
    assert np.array_equal(field.centres_x, [31.5 + 64 * i for i in range(6)] + [367.5])
    known = np.isfinite(field.shift).all(axis=2)
    assert known.mean() > 0.5
    assert np.abs(field.shift[known] - (21.3, -19.2)).max() <= 0.1


def halves(image, left, right, seed=4):
    """A reference and a moving image whose left half ``left`` and right half ``right`` register onto it."""
    ref, first = noisy_pair(image, left, seed=seed)
    _, second = noisy_pair(image, right, seed=seed)
    seam = image.shape[1] // 2
    return ref, np.concatenate([first[:, :seam], second[:, seam:]], axis=1)


def test_a_stereo_pair_is_refused_as_one_translation_and_its_field_follows_the_disparity():
    left, right = (view.astype(np.float64) for view in stereo_pair())
    with pytest.raises(InputError, match=r"tiles disagree by \d+\.\d+ px .* registration.method: local") as info:
        estimate_translation(*readers(left, right), left.shape)
    assert "\n" not in str(info.value)
    disparity = data.stereo_motorcycle()[2]  # the true one of each left pixel: 9 to 58 px (near objects larger)
    disparity = np.where(np.isfinite(disparity), disparity, np.nan)  # inf where unknown
    estimate = estimate_translation(*readers(left, right), left.shape, tolerance=UNBOUNDED)
    assert abs(estimate.shift[0]) < 0.5 and estimate.spread > 10 and estimate.correlation > 0.5
    assert np.nanpercentile(disparity, 25) < estimate.shift[1] < np.nanpercentile(disparity, 95)  # a dominant one
    field = estimate_field(*readers(left, right), left.shape, estimate.shift, tile=64, search=32)
    truth = np.array([[np.nanmedian(disparity[int(y - 31.5):int(y + 32.5), int(x - 31.5):int(x + 32.5)])
                       for x in field.centres_x] for y in field.centres_y])
    dx, known = field.shift[..., 1], np.isfinite(field.shift).all(axis=-1)
    assert known.mean() > 0.5 and np.nanpercentile(dx, 95) - np.nanpercentile(dx, 5) > 10
    assert np.median(np.abs(dx - truth)[known]) < 1.0 and np.corrcoef(dx[known], truth[known])[0, 1] > 0.8


def test_a_small_pair_gets_several_tiles_whose_disagreement_is_refused():
    image = camera().astype(np.float64)[100:300, 100:420]  # 200 x 320: under two 512 px tiles per axis
    ref, mov = noisy_pair(image, (2.0, 3.0))
    estimate = estimate_translation(*readers(ref, mov), ref.shape)
    assert np.abs(np.subtract(estimate.shift, (2.0, 3.0))).max() <= 0.02 and estimate.tiles >= 4
    for dx in (2.0, 3.0):  # halves 4 and 6 px apart
        ref, mov = halves(image, (2.0, dx), (2.0, -dx))
        with pytest.raises(InputError, match=rf"tiles disagree by {2 * dx:.0f}\.0\d px .* registration.method: local"):
            estimate_translation(*readers(ref, mov), ref.shape)


def test_tiles_far_from_the_global_shift_count_in_the_spread():
    # halves 6 px apart: past the margin of the tiles' first reads (5 px), each half's tiles are searched for
    image = np.tile(camera().astype(np.float64), (3, 3))[100:1252, 200:1352]
    ref, mov = halves(image, (2.0, 3.0), (2.0, -3.0))
    with pytest.raises(InputError, match=r"tiles disagree by 6\.0\d px"):
        estimate_translation(*readers(ref, mov), ref.shape)
    estimate = estimate_translation(*readers(ref, mov), ref.shape, tolerance=UNBOUNDED)
    assert np.abs(np.abs(np.subtract(estimate.shift, (2.0, 0.0))) - (0.0, 3.0)).max() <= 0.02  # one half's


@pytest.mark.parametrize("fraction", [0.01, 0.05])
def test_scattered_missing_pixels_are_filled_by_the_smoothing(fraction):
    # each missing pixel would hide the 12 x 12 px its blur and warp taps reach: the blur fills it instead
    ref, mov = noisy_pair(camera(), (7.3, -4.6))
    rng = np.random.default_rng(11)
    ref[rng.random(ref.shape) < fraction], mov[rng.random(mov.shape) < fraction] = np.nan, np.nan
    estimate = estimate_translation(*readers(ref, mov), ref.shape)
    assert np.abs(np.subtract(estimate.shift, (7.3, -4.6))).max() <= 0.02 and estimate.tiles >= 12


def test_the_smoothing_is_a_normalised_convolution_that_keeps_holes_and_the_image_edge():
    image = camera().astype(np.float64)[200:264, 100:164]
    image[20, 30], image[21, 31], image[40:44, 10:14] = np.nan, np.nan, np.nan  # two lone pixels and a hole
    taps = np.exp(-0.5 * (np.arange(-HALO, HALO + 1) / BLUR) ** 2)
    kernel = np.outer(taps, taps) / taps.sum() ** 2
    valid = np.isfinite(image)
    weight = ndi.correlate(valid.astype(np.float64), kernel, mode="constant")
    expected = ndi.correlate(np.where(valid, image, 0.0), kernel, mode="constant") / weight
    expected[weight < 0.5] = np.nan
    expected[:HALO], expected[-HALO:], expected[:, :HALO], expected[:, -HALO:] = (np.nan,) * 4  # taps outside
    got = read_smoothed(lambda region: image[region], (slice(0, 64), slice(0, 64)), image.shape)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-9)
    assert np.isfinite(got[20:22, 30:32]).all() and np.isnan(got[41:43, 11:13]).all()
    whole = camera().astype(np.float64)[200:264, 100:164]  # nothing missing: the plain blur, edges NaN as well
    plain = ndi.correlate(whole, kernel, mode="constant")
    plain[:HALO], plain[-HALO:], plain[:, :HALO], plain[:, -HALO:] = (np.nan,) * 4
    np.testing.assert_allclose(read_smoothed(lambda region: whole[region], (slice(0, 64), slice(0, 64)), (64, 64)),
                               plain, rtol=1e-12)


def test_a_changed_region_leaves_the_fit():
    # the second capture of a scene with a 100 x 140 region of other content: the tiles it covers are
    # outliers by their residual, left out of the fit (and of the spread: no shift explains them)
    before, after, _ = moved_capture()
    estimate = estimate_translation(*readers(before.astype(np.float64), after.astype(np.float64)), before.shape)
    assert np.abs(np.subtract(estimate.shift, (5.4, -3.7))).max() <= 0.01
    assert 8 <= estimate.tiles < 16 and estimate.spread < 0.1 and estimate.correlation > 0.99


def test_a_pair_mostly_of_other_content_is_refused_unless_tiles_may_disagree():
    # 70% of the moving image is other (textured) content: 12 of the 16 tiles match at no shift
    ref, mov = noisy_pair(camera(), (3.3, -2.1))
    mov[:, 153:] = astronaut()[:, 153:] * 0.8 + 10
    with pytest.raises(InputError, match=r"12 of 16 textured tiles match neither .* registration.method: local"):
        estimate_translation(*readers(ref, mov), ref.shape)
    estimate = estimate_translation(*readers(ref, mov), ref.shape, tolerance=UNBOUNDED)
    assert np.abs(np.subtract(estimate.shift, (3.3, -2.1))).max() <= 0.02 and estimate.tiles <= 6
    # a flat 70% (noise alone there) matches nowhere either, but it is no texture: not counted
    image = camera().astype(np.float64)
    image[:, 153:] = 90.0
    ref, mov = noisy_pair(image, (3.3, -2.1))
    estimate = estimate_translation(*readers(ref, mov), ref.shape)
    assert np.abs(np.subtract(estimate.shift, (3.3, -2.1))).max() <= 0.02 and estimate.spread < 0.1


def video(shifts, base, size=320, noise=2.0, seed=1):
    """Frames of ``base`` moved by ``shifts`` and cropped: ``frame_t[i] = base[i + shift_t]`` (plus noise)."""
    rng = np.random.default_rng(seed)
    corner = (base.shape[0] - size) // 2
    crop = (slice(corner, corner + size),) * 2
    return np.stack([fourier_shifted(base, tuple(-v for v in s))[crop] + rng.normal(0, noise, (size, size))
                     for s in shifts])


def test_frame_drift_is_recovered_per_frame():
    drift = np.array([(0.0, 0.0), (0.37, -0.81), (1.9, -1.2), (3.05, 0.4), (-2.6, 2.25)])
    frames = video(drift, astronaut())
    still = video(np.zeros_like(drift), astronaut(), seed=2)
    read_mov = lambda t, region: frames[t][region]  # noqa: E731
    read_ref = lambda t, region: still[t][region]  # noqa: E731
    each = estimate_frames(read_ref, read_mov, frames.shape)
    assert np.abs(np.array([e.shift for e in each]) - drift).max() <= 0.05
    with ThreadPoolExecutor(2) as pool:
        onto = estimate_frames(read_mov, read_mov, frames.shape, reference_frame=2, map=pool.map)
    assert np.abs(np.array([e.shift for e in onto]) - (drift - drift[2])).max() <= 0.05
    fields = estimate_field_frames(read_ref, read_mov, frames.shape, np.zeros_like(drift), tile=80)
    assert len(fields) == 5 and all(f.shift.shape == (4, 4, 2) for f in fields)
    assert np.nanmax(np.abs(fields[3].shift - drift[3])) <= 0.1


def test_reads_stay_bounded_on_a_large_image():
    # a 6000 x 6000 periodic smooth texture, shifted exactly: only the coarse bands (a centred 2048 x 2048
    # region, as max_shift asks for no more) and the tiles (with their margins) are read
    rng = np.random.default_rng(5)
    base = ndi.gaussian_filter(rng.normal(0, 60, (500, 500)), 2.0, mode="wrap")
    moved = np.fft.ifft2(ndi.fourier_shift(np.fft.fft2(base), (4.6, -7.3))).real
    sizes = []

    def reader(image):
        def read(region):
            sizes.append((region[0].stop - region[0].start) * (region[1].stop - region[1].start))
            return np.take(np.take(image, np.arange(region[0].start, region[0].stop), axis=0, mode="wrap"),
                           np.arange(region[1].start, region[1].stop), axis=1, mode="wrap")
        return read

    estimate = estimate_translation(reader(base), reader(moved), (6000, 6000), pixels=2**18)
    assert np.abs(np.subtract(estimate.shift, (-4.6, 7.3))).max() <= 0.02
    assert max(sizes) <= 2**20 and sum(sizes) <= 2 * (2048**2 + 1.5 * 2**18)


@pytest.mark.parametrize("options, match", [
    ({"upsample": 0}, "registration.upsample must be an integer >= 1"),
    ({"max_shift": -1.0}, "registration.max_shift must be a positive number"),
    ({"tile": 8}, "registration.tile must be an integer >= 16"),
])
def test_bad_options_are_refused(options, match):
    image = camera().astype(np.float64)
    with pytest.raises(InputError, match=match):
        estimate_translation(*readers(image, image), image.shape, **options)


def test_bad_frame_and_field_arguments_are_refused():
    image = camera().astype(np.float64)
    read = lambda t, region: image[region]  # noqa: E731
    with pytest.raises(InputError, match=r"registration.reference_frame must be 'each' or a frame index in \[0, 3\)"):
        estimate_frames(read, read, (3, 512, 512), reference_frame=5)
    with pytest.raises(InputError, match="registration by frames needs a"):
        estimate_frames(read, read, (512, 512))
    with pytest.raises(InputError, match="registration.search must be an integer >= 1"):
        estimate_field(*readers(image, image), image.shape, (0.0, 0.0), search=0)
    with pytest.raises(InputError, match="a read of region"):
        estimate_translation(lambda region: image, lambda region: image, (256, 256))
