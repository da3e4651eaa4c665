"""Registered runs through ``pipeline.job.run`` on real zarr stores, in this process: the moving image aligned
onto the reference (``registration:``) before the local NCC is computed.

Every pair is built from a real photograph moved by a known subpixel shift with a Fourier shift (of a larger
image, whose centre is then cropped so nothing wraps), with gaussian noise and a gain/offset, stored as uint8
(float32 once). Results are checked against that known truth, against an aligned pair with the same noise, and
against the in-memory API (``pipeline.local_ncc(..., shift=...)``), never against the run's own internals.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from scipy import ndimage

import pipeline
from pipeline.config import load_config
from pipeline.errors import InputError
from pipeline.io import write_array
from pipeline.job import run
from pipeline.testing import camera, reference_ncc, stereo_pair, write_config
from support import assert_matches, kill_run_after, run_cli

WINDOW = 7
TRUTH = (7.3, -4.6)


# ----------------------------------------------------------------------------------------------- helpers


def fourier_shifted(image: np.ndarray, shift) -> np.ndarray:
    """``image`` resampled at ``p + shift`` (exact band-limited shift): the moving image that ``shift``
    registers onto ``image`` in scikit-image's convention (``registered[p] = moving[p - shift]``)."""
    spectrum = np.fft.fft2(np.asarray(image, dtype=np.float64))
    return np.real(np.fft.ifft2(ndimage.fourier_shift(spectrum, [-float(s) for s in shift])))


def to_dtype(values: np.ndarray, dtype) -> np.ndarray:
    if np.dtype(dtype).kind == "f":
        return values.astype(dtype)
    return np.clip(np.round(values), 0, 255).astype(dtype)


def build_pair(shift, *, source=None, region=(slice(None), slice(None)), margin=32, noise=3.0, gain=0.8,
               offset=20.0, seed=0, dtype=np.uint8):
    """(reference, moving, aligned): ``source[region]`` shifted by ``shift`` with noise and a gain/offset, cropped
    by ``margin`` on every side. ``aligned`` is the moving image without the shift (same noise, gain, offset)."""
    rng = np.random.default_rng(seed)
    base = (camera() if source is None else source).astype(np.float64)[region]
    moved = fourier_shifted(base, shift)
    crop = (slice(margin, base.shape[0] - margin), slice(margin, base.shape[1] - margin))
    ref_noise = rng.normal(0.0, noise, base[crop].shape)
    mov_noise = rng.normal(0.0, noise, base[crop].shape)
    ref = to_dtype(base[crop] + ref_noise, dtype)
    mov = to_dtype(gain * moved[crop] + offset + mov_noise, dtype)
    aligned = to_dtype(gain * base[crop] + offset + mov_noise, dtype)
    return ref, mov, aligned


def store(tmp: Path, name: str, array: np.ndarray, chunks=(64, 64), dims=None) -> str:
    return write_array(str(tmp / f"{name}.zarr"), array, chunks=tuple(min(c, n) for c, n in
                                                                       zip(chunks, array.shape)), dims=dims)


def run_config(tmp: Path, name: str, **settings):
    """Write ``settings`` as the YAML config ``name.yaml`` and run it in this process: (summary, output path)."""
    if "pairs" not in settings:
        settings.setdefault("output", str(tmp / f"{name}.zarr"))
    settings.setdefault("window", WINDOW)
    path = write_config(tmp / f"{name}.yaml", **settings)
    return run(load_config(path)), settings.get("output")


def registration(**keys) -> dict:
    return {"method": "translation", **keys}


def read_map(out) -> np.ndarray:
    return xr.open_zarr(out)["ncc"].values


def recorded(out) -> dict:
    return xr.open_zarr(out).attrs["lncc"]["registration"]


@pytest.fixture(scope="module")
def camera_pair(tmp_path_factory):
    """The cameraman moved by TRUTH (448 x 448 uint8 in 64 x 64 zarr chunks), and its aligned twin."""
    tmp = tmp_path_factory.mktemp("camera")
    ref, mov, aligned = build_pair(TRUTH, seed=1)
    return tmp, ref, mov, aligned, store(tmp, "ref", ref), store(tmp, "mov", mov)


@pytest.fixture(scope="module")
def small_pair(tmp_path_factory):
    """A 150 x 150 crop of the cameraman moved by TRUTH, stored in 64 x 64 chunks."""
    tmp = tmp_path_factory.mktemp("small")
    ref, mov, _ = build_pair(TRUTH, region=(slice(150, 364), slice(150, 364)), seed=2)
    assert ref.shape == (150, 150)
    return tmp, ref, mov, store(tmp, "ref", ref), store(tmp, "mov", mov)


# ---------------------------------------------------------------------------------- 1. a known shift


def test_a_known_shift_is_recovered_and_the_map_is_as_good_as_an_aligned_pair(camera_pair):
    """The run estimates TRUTH within 0.02 px, writes it as ``shift`` (dims axis = [y, x]), and its map's median
    NCC is within 0.03 of a perfectly aligned pair's with the same noise, far above the unregistered run's."""
    tmp, ref, mov, aligned, ref_url, mov_url = camera_pair
    summary, out = run_config(tmp, "registered", reference=ref_url, moving=mov_url, registration=registration())
    ds = xr.open_zarr(out)
    shift = ds["shift"]
    assert shift.dims == ("axis",)
    assert list(shift["axis"].values) == ["y", "x"]
    assert shift.attrs["units"] == "pixel"
    np.testing.assert_allclose(shift.values, TRUTH, atol=0.02)
    assert summary.pairs[0].action == "fresh"

    registered = ds["ncc"].values
    valid = np.isfinite(registered)
    assert valid.mean() > 0.9  # only the strips sourced from outside the moving image are missing
    ideal = np.asarray(pipeline.local_ncc(ref, aligned, WINDOW))
    assert abs(np.median(registered[valid]) - np.median(ideal[valid])) <= 0.03
    assert np.median(ideal[valid]) > 0.6  # a pair that really correlates

    _, plain_out = run_config(tmp, "unregistered", reference=ref_url, moving=mov_url,
                              registration={"method": "none"})
    plain = read_map(plain_out)
    assert "shift" not in xr.open_zarr(plain_out)
    assert np.median(plain[valid]) < np.median(registered[valid]) - 0.4


# ------------------------------------------------------------------------ 2. chunking never changes it


CHUNKINGS = {
    "default": None,
    "whole": {"y": 150, "x": 150},
    "uneven": {"y": 32, "x": 48},
    "rows-shorter-than-dy": {"y": 5, "x": 150},
    "cols-shorter-than-dx": {"y": 150, "x": 4},
}


@pytest.mark.parametrize("interpolation", ["linear", "cubic", "lanczos3"])
def test_chunking_never_changes_the_registered_map(small_pair, interpolation):
    """Whatever the chunks (blocks shorter than the shift too), the registered map equals the in-memory API's
    ``local_ncc(ref, mov, shift=recorded)`` to 1e-6 with the same NaN, for each interpolation."""
    tmp, ref, mov, ref_url, mov_url = small_pair
    shifts = []
    for label, chunks in CHUNKINGS.items():
        name = f"{interpolation}-{label}"
        _, out = run_config(tmp, name, reference=ref_url, moving=mov_url, chunks=chunks,
                            registration=registration(interpolation=interpolation))
        shift = xr.open_zarr(out)["shift"].values
        shifts.append(shift)
        expected = pipeline.local_ncc(ref, mov, WINDOW, shift=shift, interpolation=interpolation)
        assert_matches(read_map(out), expected, tol=1e-6)
        assert recorded(out)["interpolation"] == interpolation
        if chunks is not None and len(chunks) == 2:
            assert xr.open_zarr(out).attrs["lncc"]["processing_chunks"] == [chunks["y"], chunks["x"]]
    np.testing.assert_allclose(shifts[0], TRUTH, atol=0.05)
    for shift in shifts[1:]:  # the estimate reads the inputs, not the processing blocks
        np.testing.assert_array_equal(shift, shifts[0])


def test_blocks_smaller_than_the_shift_on_both_axes(small_pair):
    """5 x 4 blocks (smaller than the shift along both axes, 1110 of them) still give the in-memory map."""
    tmp, ref, mov, ref_url, mov_url = small_pair
    summary, out = run_config(tmp, "tiny-blocks", reference=ref_url, moving=mov_url, chunks={"y": 5, "x": 4},
                              registration=registration())
    assert summary.pairs[0].blocks_total == 30 * 37  # the last 2 columns (< the radius 3) join their neighbour
    shift = xr.open_zarr(out)["shift"].values
    assert_matches(read_map(out), pipeline.local_ncc(ref, mov, WINDOW, shift=shift), tol=1e-6)


@pytest.mark.parametrize("interpolation", ["linear", "cubic", "lanczos3"])
def test_a_given_shift_is_applied_as_given(small_pair, interpolation):
    """``shift:`` in the config is applied without an estimate: recorded as given, and the map is the API's."""
    tmp, ref, mov, ref_url, mov_url = small_pair
    given = [7.25, -4.5]
    for label in ("default", "uneven", "rows-shorter-than-dy"):
        _, out = run_config(tmp, f"given-{interpolation}-{label}", reference=ref_url, moving=mov_url,
                            chunks=CHUNKINGS[label],
                            registration=registration(shift=given, interpolation=interpolation))
        ds = xr.open_zarr(out)
        np.testing.assert_array_equal(ds["shift"].values, given)
        assert ds["shift"].attrs["origin"] == "given"
        prov = recorded(out)
        assert prov["origin"] == "given" and prov["shifts"] == given and prov["estimates"] == []
        assert_matches(ds["ncc"].values, pipeline.local_ncc(ref, mov, WINDOW, shift=given,
                                                            interpolation=interpolation), tol=1e-6)


# ------------------------------------------------------------------ 3. outside the moving image: NaN


def test_pixels_sourced_outside_the_moving_image_are_missing(small_pair):
    """A given integer shift (10, -12) copies the moving image 10 rows down and 12 columns left: the pixels it
    sources from outside it are missing, and the map is the textbook NCC with exactly those pixels invalid
    (min_valid 0.5 of a 7 x 7 window: the first 10 rows and the last 12 columns are NaN, nothing else)."""
    tmp, ref, mov, ref_url, mov_url = small_pair
    _, out = run_config(tmp, "outside", reference=ref_url, moving=mov_url,
                        registration=registration(shift=[10, -12]))
    got = read_map(out)
    h, w = ref.shape
    registered = np.zeros((h, w))
    registered[10:, : w - 12] = mov[: h - 10, 12:]  # registered[p] = moving[p - shift]
    invalid = np.ones((h, w), dtype=bool)
    invalid[10:, : w - 12] = False
    expected = reference_ncc(ref, registered, WINDOW, invalid=invalid)
    assert_matches(got, expected, tol=1e-5)
    assert np.isnan(got[:10]).all() and np.isnan(got[:, w - 12:]).all()
    # everything else is finite, but near the corner, where a window has only 4 x 4 valid pixels (< 0.5)
    assert np.isfinite(got[10:, : w - 15]).all() and np.isfinite(got[13:, : w - 12]).all()


# ----------------------------------------------------------------------------- 4. masks and nodata


@pytest.fixture(scope="module")
def holes(small_pair):
    """A mask (True = valid) with two masked rectangles, and a pattern of missing pixels (three rectangles, one
    at the image's edge), over the 150 x 150 pair."""
    shape = small_pair[1].shape
    mask = np.ones(shape, dtype=bool)
    mask[40:70, 90:130] = False
    mask[120:124, 20:26] = False
    hole = np.zeros(shape, dtype=bool)
    hole[100:120, 10:50] = True
    hole[60:63, 60:64] = True
    hole[:, 146:] = True
    return mask, hole


@pytest.mark.parametrize("case", ["reference_mask",
                                  "moving_mask",
                                  "moving_nodata", "reference_nodata", "float32_nan", "uint8_float32_nan"])
def test_masks_and_nodata_give_the_in_memory_result(small_pair, holes, case):
    """A reference mask (the dask path), a moving mask, nodata on either image, or NaN holes in a float32
    moving image (with a float32 or a uint8 reference): the run's map equals ``local_ncc`` with the same masks
    or nodata and the recorded shift."""
    tmp, ref, mov, ref_url, mov_url = small_pair
    mask, hole = holes
    settings = dict(reference=ref_url, moving=mov_url, chunks={"y": 40, "x": 56}, registration=registration())
    api: dict = {}
    ref_in, mov_in = ref, mov
    if case == "reference_mask":
        settings["reference_mask"] = store(tmp, f"mask-{case}", mask)
        api["reference_mask"] = mask
    elif case == "moving_mask":
        settings["moving_mask"] = store(tmp, f"mask-{case}", mask)
        api["moving_mask"] = mask
    elif case == "moving_nodata":
        mov_in = np.where(hole, 0, mov).astype(mov.dtype)
        settings["nodata"] = {"moving": 0}
        api["nodata"] = (None, 0)
    elif case == "reference_nodata":
        ref_in = np.where(hole, 0, ref).astype(ref.dtype)
        settings["nodata"] = {"reference": 0}
        api["nodata"] = (0, None)
    else:  # NaN holes in a float32 moving image, beside a float32 (or the uint8) reference
        mov_in = np.where(hole, np.nan, mov).astype(np.float32)
        ref_in = ref.astype(np.float32) if case == "float32_nan" else ref
    if ref_in is not ref:
        settings["reference"] = store(tmp, f"ref-{case}", ref_in)
    if mov_in is not mov:
        settings["moving"] = store(tmp, f"mov-{case}", mov_in)
    _, out = run_config(tmp, case, **settings)
    shift = xr.open_zarr(out)["shift"].values
    np.testing.assert_allclose(shift, TRUTH, atol=0.05)
    got = read_map(out)
    assert_matches(got, pipeline.local_ncc(ref_in, mov_in, WINDOW, shift=shift, **api), tol=1e-6)
    assert np.isnan(got).sum() > np.isnan(pipeline.local_ncc(ref, mov, WINDOW, shift=shift)).sum()  # holes show


def test_the_chunk_cache_reuses_a_spare_whatever_the_other_spares():
    """The cause of the moving-mask failure, without a run: the process's chunk cache holding spare chunks of two
    dtypes (an image's and a mask's) reuses the matching one."""
    from pipeline.io.readers.chunks import ChunkCache

    cache, limit = ChunkCache(), 64 * 64
    # each put evicts the chunk before it, which becomes a spare: the spares are then [mask, image], and the
    # fourth put reuses the image's
    for i, chunk in enumerate([np.ones((64, 64), bool), np.zeros((64, 64), np.uint8), np.zeros((64, 64), np.uint8),
                               np.full((64, 64), 7, np.uint8)]):
        cache.put(("run", i), chunk, 4, keep_whole=True, limit=limit)
    out = np.empty((64, 64), np.uint8)
    assert cache.read(("run", 3), (slice(0, 64), slice(0, 64)), out) and (out == 7).all()


# ---------------------------------------------------------------------------------------- 5. video


FRAMES = 5


@pytest.fixture(scope="module")
def drift():
    """A (5, 160, 160) video of one scene whose camera drifts (a random walk of a few px), and its truth."""
    rng = np.random.default_rng(5)
    truth = np.cumsum(rng.normal(0.0, 1.2, size=(FRAMES, 2)), axis=0)
    region = (slice(200, 424), slice(120, 344))
    frames = [build_pair(s, region=region, seed=10 + t) for t, s in enumerate(truth)]
    ref = np.stack([f[0] for f in frames])
    mov = np.stack([f[1] for f in frames])
    assert ref.shape == (FRAMES, 160, 160)
    return truth, ref, mov


@pytest.mark.parametrize("layout", ["t-y-x", "y-x-t"])
def test_video_drift_is_recovered_per_frame(tmp_path, drift, layout):
    """Each frame's shift within 0.05 px, written as ``shift`` (t, axis) with the frames' coordinate; the map
    equals the API's with those shifts, frames first or (the dask path) frames last in storage."""
    truth, ref, mov = drift
    if layout == "t-y-x":
        dims, ref_s, mov_s = ("t", "y", "x"), ref, mov
    else:
        dims, ref_s, mov_s = ("y", "x", "t"), ref.transpose(1, 2, 0), mov.transpose(1, 2, 0)
    chunks = tuple({"t": 1, "y": 64, "x": 64}[d] for d in dims)
    times = 5.0 + 10.0 * np.arange(FRAMES)
    ref_url, mov_url = (write_array(str(tmp_path / "inputs.zarr"), np.ascontiguousarray(a), name=name, dims=dims,
                                    chunks=chunks, coords={"t": times}) for name, a in (("ref", ref_s), ("mov", mov_s)))
    summary, out = run_config(tmp_path, "video", reference=ref_url, moving=mov_url,
                              chunks={"t": 2, "y": 48, "x": 64}, registration=registration())
    ds = xr.open_zarr(out)
    assert ds["shift"].dims == ("t", "axis")
    assert ds["shift"].shape == (FRAMES, 2)
    np.testing.assert_array_equal(ds["shift"]["t"].values, times)  # the frames' coordinate
    np.testing.assert_allclose(ds["shift"].values, truth, atol=0.05)
    assert ds["ncc"].dims == dims
    got = ds["ncc"].transpose("t", "y", "x").values
    expected = pipeline.local_ncc(ref, mov, WINDOW, shift=ds["shift"].values)
    assert_matches(got, expected, tol=1e-6)
    assert len(recorded(out)["estimates"]) == FRAMES
    assert f"{FRAMES} frame shifts" in summary.pairs[0].registration


def test_video_reference_frame_registers_every_frame_onto_that_frame(tmp_path, drift):
    """``reference_frame: 0`` registers every moving frame onto reference frame 0: with reference frames 1..4
    of another scene, ``each`` cannot register (frame 1 unrelated) while ``0`` finds every frame's drift."""
    truth, ref, mov = drift
    other = stereo_pair()[0][100:260, 300:460]
    ref0 = ref.copy()
    ref0[1:] = other
    ref_url = store(tmp_path, "ref", ref0, chunks=(1, 80, 80), dims=("t", "y", "x"))
    mov_url = store(tmp_path, "mov", mov, chunks=(1, 80, 80), dims=("t", "y", "x"))
    with pytest.raises(InputError, match="frame 1"):
        run_config(tmp_path, "each", reference=ref_url, moving=mov_url, registration=registration())
    assert not (tmp_path / "each.zarr").exists()
    _, out = run_config(tmp_path, "zero", reference=ref_url, moving=mov_url,
                        registration=registration(reference_frame=0))
    shifts = xr.open_zarr(out)["shift"].values
    np.testing.assert_allclose(shifts, truth, atol=0.05)
    # every moving frame is registered to and correlated with reference frame 0
    only_frame0 = np.broadcast_to(ref0[:1], ref0.shape)
    got = read_map(out)
    assert_matches(got, pipeline.local_ncc(only_frame0, mov, WINDOW, shift=shifts), tol=1e-6)
    assert np.nanmedian(got[1:]) > 0.5  # against their own (unrelated) reference frames they would not agree


def test_video_reference_frame_through_the_dask_path(tmp_path, drift):
    """With a reference mask (the dask path), ``reference_frame: 0`` pairs every frame with reference frame 0
    and its mask as well."""
    truth, ref, mov = drift
    ref0 = ref.copy()
    ref0[1:] = stereo_pair()[0][100:260, 300:460]
    mask = np.ones(ref.shape, dtype=bool)
    mask[0, 40:60, 40:60] = False  # frame 0's mask applies to every frame's map
    ref_url = store(tmp_path, "ref", ref0, chunks=(1, 80, 80), dims=("t", "y", "x"))
    mov_url = store(tmp_path, "mov", mov, chunks=(1, 80, 80), dims=("t", "y", "x"))
    mask_url = store(tmp_path, "mask", mask, chunks=(1, 80, 80), dims=("t", "y", "x"))
    _, out = run_config(tmp_path, "zero", reference=ref_url, moving=mov_url, reference_mask=mask_url,
                        registration=registration(reference_frame=0))
    shifts = xr.open_zarr(out)["shift"].values
    expected = pipeline.local_ncc(np.broadcast_to(ref0[:1], ref0.shape), mov, WINDOW, shift=shifts,
                                  reference_mask=np.broadcast_to(mask[:1], mask.shape))
    assert_matches(read_map(out), expected, tol=1e-6)


def test_video_given_shifts(tmp_path, drift):
    """A given shift per frame is applied per frame; one for all frames applies to each; a list of the wrong
    length is an InputError naming both counts, before anything is written."""
    truth, ref, mov = drift
    ref_url = store(tmp_path, "ref", ref, chunks=(1, 80, 80), dims=("t", "y", "x"))
    mov_url = store(tmp_path, "mov", mov, chunks=(1, 80, 80), dims=("t", "y", "x"))
    given = np.round(truth, 2).tolist()
    _, out = run_config(tmp_path, "per-frame", reference=ref_url, moving=mov_url,
                        registration=registration(shift=given))
    ds = xr.open_zarr(out)
    np.testing.assert_array_equal(ds["shift"].values, given)
    assert_matches(ds["ncc"].values, pipeline.local_ncc(ref, mov, WINDOW, shift=given), tol=1e-6)

    _, out = run_config(tmp_path, "one-for-all", reference=ref_url, moving=mov_url,
                        registration=registration(shift=[1.5, -0.5]))
    np.testing.assert_array_equal(xr.open_zarr(out)["shift"].values, [[1.5, -0.5]] * FRAMES)

    with pytest.raises(InputError) as info:
        run_config(tmp_path, "wrong", reference=ref_url, moving=mov_url, registration=registration(shift=given[:3]))
    message = str(info.value)
    assert "3 shifts" in message and f"{FRAMES} frames" in message and "\n" not in message
    assert not (tmp_path / "wrong.zarr").exists()


def test_video_local_method_writes_a_field_per_frame(tmp_path, drift):
    """``method: local`` on video: ``shift_field`` (t, tile_y, tile_x, axis) and ``shift_quality`` per frame, each
    frame's tiles at that frame's drift."""
    truth, ref, mov = drift
    ref_url = store(tmp_path, "ref", ref, chunks=(1, 80, 80), dims=("t", "y", "x"))
    mov_url = store(tmp_path, "mov", mov, chunks=(1, 80, 80), dims=("t", "y", "x"))
    _, out = run_config(tmp_path, "local", reference=ref_url, moving=mov_url,
                        registration={"method": "local", "tile": 64})
    ds = xr.open_zarr(out)
    assert ds["shift_field"].dims == ("t", "tile_y", "tile_x", "axis")
    assert ds["shift_quality"].dims == ("t", "tile_y", "tile_x")
    np.testing.assert_array_equal(ds["tile_y"].values, [31.5, 95.5, 127.5])  # 160 px: the last tile moved inward
    field = ds["shift_field"].values
    known = np.isfinite(field).all(axis=-1)
    assert known.mean() > 0.5
    error = np.abs(field - truth[:, None, None, :])[known]
    assert error.max() <= 0.1
    np.testing.assert_allclose(ds["shift"].values, truth, atol=0.05)


def test_an_out_of_range_reference_frame_is_an_error_before_anything_is_written(tmp_path, drift):
    truth, ref, mov = drift
    ref_url = store(tmp_path, "ref", ref, chunks=(1, 80, 80), dims=("t", "y", "x"))
    mov_url = store(tmp_path, "mov", mov, chunks=(1, 80, 80), dims=("t", "y", "x"))
    with pytest.raises(InputError, match=r"reference_frame.*5 frames"):
        run_config(tmp_path, "frame7", reference=ref_url, moving=mov_url, registration=registration(reference_frame=7))
    assert not (tmp_path / "frame7.zarr").exists()


def test_validate_checks_the_reference_frame(tmp_path, drift):
    from pipeline.job import plan_run

    truth, ref, mov = drift
    ref_url = store(tmp_path, "ref", ref, chunks=(1, 80, 80), dims=("t", "y", "x"))
    mov_url = store(tmp_path, "mov", mov, chunks=(1, 80, 80), dims=("t", "y", "x"))
    path = write_config(tmp_path / "c.yaml", reference=ref_url, moving=mov_url, output=str(tmp_path / "o.zarr"),
                        registration=registration(reference_frame=7))
    with pytest.raises(InputError, match="reference_frame"):
        plan_run(load_config(path), estimate=False)


# -------------------------------------------------------------------------------- 6. the local method


def two_part_images(shape, left, right, seed=6):
    """A reference of ``shape`` (from the tiled cameraman) and a moving image whose left half is moved by ``left``
    and right half by ``right``."""
    source = np.tile(camera(), (3, 3))[150:150 + shape[0] + 64, 60:60 + shape[1] + 64]
    ref, first, _ = build_pair(left, source=source, seed=seed)
    _, second, _ = build_pair(right, source=source, seed=seed)
    seam = shape[1] // 2
    return ref, np.concatenate([first[:, :seam], second[:, seam:]], axis=1)


LEFT, RIGHT = (2.0, 3.0), (2.0, -3.0)


@pytest.fixture(scope="module")
def two_part(tmp_path_factory):
    """A 200 x 320 pair whose moving image's left half is moved by LEFT and right half by RIGHT."""
    tmp = tmp_path_factory.mktemp("two-part")
    ref, mov = two_part_images((200, 320), LEFT, RIGHT)
    return tmp, ref, mov, store(tmp, "ref", ref), store(tmp, "mov", mov)


def test_local_method_writes_a_shift_field(two_part):
    """``method: local`` writes ``shift_field`` (tile_y, tile_x, axis) at the tiles' centres and ``shift_quality``
    (tile_y, tile_x): each half's own shift, within 0.15 px off the seam (0.05 px off the border too); the map
    uses the global shift."""
    tmp, ref, mov, ref_url, mov_url = two_part
    _, out = run_config(tmp, "local", reference=ref_url, moving=mov_url,
                        registration={"method": "local", "tile": 64})
    ds = xr.open_zarr(out)
    field, quality = ds["shift_field"], ds["shift_quality"]
    assert field.dims == ("tile_y", "tile_x", "axis")
    assert quality.dims == ("tile_y", "tile_x")
    # 64 px tiles over 200 x 320, the last row moved inward to stay whole: starts 0, 64, 128, 136
    np.testing.assert_array_equal(ds["tile_y"].values, [31.5, 95.5, 159.5, 167.5])
    np.testing.assert_array_equal(ds["tile_x"].values, [31.5, 95.5, 159.5, 223.5, 287.5])
    assert field.shape == (4, 5, 2) and quality.shape == (4, 5)
    values, q = field.values, quality.values
    for columns, truth in ((slice(0, 2), LEFT), (slice(3, 5), RIGHT)):  # tiles 2 straddle the seam
        part, part_q = values[:, columns], q[:, columns]
        known = np.isfinite(part).all(axis=-1)
        assert known.sum() >= 6, values
        # within 0.15 px everywhere off the seam (tiles at the border lose the pixels sourced outside) ...
        np.testing.assert_allclose(part[known], np.broadcast_to(truth, part[known].shape), atol=0.15)
        assert (part_q[known] > 0.9).all() and (part_q[known] <= 1).all()
    # ... and within 0.05 px for the tiles away from both the seam and the image's border
    for row in (1, 2):
        np.testing.assert_allclose(values[row, 1], LEFT, atol=0.05)
        np.testing.assert_allclose(values[row, 3], RIGHT, atol=0.05)
    assert np.all(np.isnan(values[..., 0]) == np.isnan(q))
    shift = ds["shift"].values
    assert ds["shift"].dims == ("axis",)
    assert_matches(ds["ncc"].values, pipeline.local_ncc(ref, mov, WINDOW, shift=shift), tol=1e-6)
    assert recorded(out)["method"] == "local"


@pytest.mark.parametrize("shape, dx", [
    pytest.param((200, 320), 3.0, id="200x320-dx3"),
    pytest.param((200, 320), 2.0, id="200x320-dx2"),
    pytest.param((1152, 1152), 2.0, id="1152-dx2"),
    pytest.param((1152, 1152), 3.0, id="1152-dx3"),
])
def test_translation_of_a_two_part_pair_suggests_the_local_method(tmp_path, shape, dx):
    """One translation cannot register a pair whose left half moved by (2, +dx) and right half by (2, -dx): an
    InputError naming the pair that suggests ``method: local``, and the output path is never made."""
    ref, mov = two_part_images(shape, (2.0, dx), (2.0, -dx))
    ref_url, mov_url = store(tmp_path, "ref", ref, chunks=(256, 256)), store(tmp_path, "mov", mov, chunks=(256, 256))
    with pytest.raises(InputError) as info:
        run_config(tmp_path, "translation", reference=ref_url, moving=mov_url, registration=registration())
    message = str(info.value)
    assert "method: local" in message and ref_url in message and mov_url in message and "\n" not in message
    assert not (tmp_path / "translation.zarr").exists()


# --------------------------------------------------------------------------- other settings, batches


@pytest.mark.parametrize("settings", [
    {"extra_outputs": True},
    {"boundary": "nan", "chunks": {"y": 32, "x": 48}},
    {"boundary": "constant", "window": 9, "chunks": {"y": 32, "x": 48}},
    {"boundary": "nearest", "min_valid": 0.9, "chunks": {"y": 32, "x": 48}},
], ids=["extras", "nan", "constant-w9", "nearest-min_valid"])
def test_other_settings_give_the_in_memory_result(small_pair, settings):
    """Extra outputs (std_moving of the registered image), boundaries, window and min_valid: as the API's."""
    tmp, ref, mov, ref_url, mov_url = small_pair
    name = "settings-" + "-".join(f"{k}{v}" for k, v in settings.items() if k != "chunks")
    _, out = run_config(tmp, name, reference=ref_url, moving=mov_url, registration=registration(), **settings)
    ds = xr.open_zarr(out)
    api = {k: v for k, v in settings.items() if k in ("boundary", "min_valid")}
    expected = pipeline.local_ncc(ref, mov, settings.get("window", WINDOW), shift=ds["shift"].values,
                                  extras=settings.get("extra_outputs", False), **api)
    for name, values in (expected.items() if isinstance(expected, dict) else [("ncc", expected)]):
        assert_matches(ds[name].values, values, tol=1e-5 if name.startswith("std") else 1e-6)


def test_a_batch_registers_each_pair_on_its_own(tmp_path):
    """Two pairs of one config moved by different shifts: each output holds its own pair's shift and map."""
    region = (slice(150, 364), slice(150, 364))
    truths = [TRUTH, (-3.4, 5.2)]
    pairs, images = [], []
    for i, truth in enumerate(truths):
        ref, mov, _ = build_pair(truth, region=region, seed=20 + i)
        images.append((ref, mov))
        pairs.append({"reference": store(tmp_path, f"ref{i}", ref), "moving": store(tmp_path, f"mov{i}", mov),
                      "output": str(tmp_path / f"out{i}.zarr")})
    summary, _ = run_config(tmp_path, "batch", pairs=pairs, registration=registration())
    assert len(summary.pairs) == 2
    for pair, truth, (ref, mov), result in zip(pairs, truths, images, summary.pairs):
        ds = xr.open_zarr(pair["output"])
        np.testing.assert_allclose(ds["shift"].values, truth, atol=0.02)
        assert f"{ds['shift'].values[0]:+.3f}" in result.registration
        assert_matches(ds["ncc"].values, pipeline.local_ncc(ref, mov, WINDOW, shift=ds["shift"].values), tol=1e-6)


# -------------------------------------------------------------------------------------- 7. refusals


def _refusal(tmp, ref, mov, **keys):
    ref_url, mov_url = store(tmp, "ref", ref), store(tmp, "mov", mov)
    with pytest.raises(InputError) as info:
        run_config(tmp, "out", reference=ref_url, moving=mov_url, registration=registration(**keys))
    message = str(info.value)
    assert "\n" not in message
    assert ref_url in message and mov_url in message, message
    assert not (tmp / "out.zarr").exists()
    return message


def test_unrelated_images_are_refused(tmp_path):
    ref, _, _ = build_pair(TRUTH, region=(slice(100, 364), slice(100, 364)))
    other = stereo_pair()[0][100:300, 200:400]
    message = _refusal(tmp_path, ref, other)
    assert "do not correlate" in message or "unrelated" in message


@pytest.mark.parametrize("which", ["reference", "moving"])
def test_a_flat_image_is_refused(tmp_path, which):
    ref, mov, _ = build_pair(TRUTH, region=(slice(100, 364), slice(100, 364)))
    flat = np.full(ref.shape, 117, dtype=np.uint8)
    message = _refusal(tmp_path, flat if which == "reference" else ref, flat if which == "moving" else mov)
    assert "flat" in message


def test_registration_with_scattered_missing_pixels(camera_pair):
    """1% of the moving image's pixels missing (NaN in a float32 image) still leaves a textured photograph that
    one translation registers."""
    tmp, ref, mov, _, ref_url, _ = camera_pair
    rng = np.random.default_rng(9)
    holey = np.where(rng.random(mov.shape) < 0.01, np.nan, mov.astype(np.float32)).astype(np.float32)
    _, out = run_config(tmp, "scattered", reference=ref_url, moving=store(tmp, "holey", holey),
                        registration=registration())
    np.testing.assert_allclose(xr.open_zarr(out)["shift"].values, TRUTH, atol=0.05)


def test_a_shift_beyond_max_shift_is_refused(tmp_path):
    ref, mov, _ = build_pair((7.0, 2.0), region=(slice(100, 364), slice(100, 364)))
    message = _refusal(tmp_path, ref, mov, max_shift=3)
    assert "max_shift" in message


# ------------------------------------------------------------------------- 8. provenance and reruns


def test_provenance_records_the_registration(camera_pair):
    """The output's attrs say how the moving image was registered: enough to apply the same shift again."""
    tmp, ref, mov, _, ref_url, mov_url = camera_pair
    _, out = run_config(tmp, "provenance", reference=ref_url, moving=mov_url,
                        registration=registration(interpolation="lanczos3", upsample=50))
    attrs = xr.open_zarr(out).attrs["lncc"]
    reg = attrs["registration"]
    assert reg["method"] == "translation" and reg["interpolation"] == "lanczos3" and reg["origin"] == "estimated"
    assert "scikit-image" in reg["convention"] and "p - shift" in reg["convention"]
    np.testing.assert_allclose(reg["shifts"], TRUTH, atol=0.02)
    (estimate,) = reg["estimates"]
    assert estimate["shift"] == reg["shifts"]
    assert estimate["correlation"] > 0.9 and estimate["tiles"] >= 1
    assert estimate["gain"] == pytest.approx(1 / 0.8, rel=0.05)  # ref ~ gain * registered + offset
    json.dumps(reg)  # JSON-safe
    assert attrs["config"]["registration"]["upsample"] == 50
    assert attrs["status"] == "complete"


def test_a_rerun_is_up_to_date_with_the_recorded_shift(camera_pair):
    """A rerun is up to date and reports the recorded shift (not a new estimate); the proof: a shift edited into
    the output's record is what the up-to-date rerun reports, where an estimate would find TRUTH again."""
    tmp, ref, mov, _, ref_url, mov_url = camera_pair
    settings = dict(reference=ref_url, moving=mov_url, registration=registration())
    first, out = run_config(tmp, "rerun", **settings)
    assert first.pairs[0].action == "fresh" and "recorded" not in first.pairs[0].registration
    second, _ = run_config(tmp, "rerun", **settings)
    assert second.pairs[0].action == "up to date" and second.pairs[0].blocks_computed == 0
    assert "recorded" in second.pairs[0].registration
    assert second.pairs[0].registration.split(" (")[0] == first.pairs[0].registration.split(" (")[0]

    group = zarr.open_group(out, mode="r+")
    attrs = dict(group.attrs["lncc"])
    attrs["registration"] = {**attrs["registration"], "shifts": [1.0, 2.0]}
    group.attrs["lncc"] = attrs
    third, _ = run_config(tmp, "rerun", **settings)
    assert third.pairs[0].action == "up to date"
    assert "(+1.000, +2.000)" in third.pairs[0].registration


@pytest.mark.parametrize("change", [{"interpolation": "linear"}, {"upsample": 10}, {"max_shift": 50}])
def test_changing_a_registration_setting_recomputes(small_pair, change):
    """Any registration setting is part of the config hash: after a change the output is not up to date; it
    is remade with the new settings."""
    tmp, ref, mov, ref_url, mov_url = small_pair
    name = "change-" + "-".join(change)
    run_config(tmp, name, reference=ref_url, moving=mov_url, registration=registration())
    summary, out = run_config(tmp, name, reference=ref_url, moving=mov_url, registration=registration(**change))
    assert summary.pairs[0].action == "fresh"
    assert "recorded" not in summary.pairs[0].registration
    kind = change.get("interpolation", "cubic")
    assert recorded(out)["interpolation"] == kind
    shift = xr.open_zarr(out)["shift"].values
    assert_matches(read_map(out), pipeline.local_ncc(ref, mov, WINDOW, shift=shift, interpolation=kind), tol=1e-6)


def test_switching_registration_off_drops_the_shift_layers(two_part):
    """A run without registration over a registered (local) output replaces it: no stale ``shift`` or field."""
    tmp, ref, mov, ref_url, mov_url = two_part
    run_config(tmp, "switch", reference=ref_url, moving=mov_url, registration={"method": "local"})
    summary, out = run_config(tmp, "switch", reference=ref_url, moving=mov_url)
    assert summary.pairs[0].action == "fresh" and summary.pairs[0].registration is None
    ds = xr.open_zarr(out)
    assert not {"shift", "shift_field", "shift_quality", "tile_y", "tile_x", "axis"} & set(ds.variables)
    assert "registration" not in ds.attrs["lncc"]
    assert_matches(ds["ncc"].values, pipeline.local_ncc(ref, mov, WINDOW), tol=1e-6)


# ---------------------------------------------------------------------- kill -9 of a registered run


@pytest.mark.slow
def test_kill_minus_9_mid_run_then_the_rerun_resumes_to_the_fresh_result(tmp_path):
    """``lncc run`` of a registered pair killed with SIGKILL part way; the rerun resumes with the recorded shift
    (its summary says so, the shift is unchanged) and its map equals a fresh run's bit for bit."""
    n = 1536
    base = np.tile(camera().astype(np.float64), (n // 512, n // 512))  # periodic: the Fourier shift wraps nothing
    rng = np.random.default_rng(8)
    ref = to_dtype(base + rng.normal(0, 3, base.shape), np.uint8)
    mov = to_dtype(0.8 * fourier_shifted(base, (3.3, -2.6)) + 20 + rng.normal(0, 3, base.shape), np.uint8)
    ref_url, mov_url = store(tmp_path, "ref", ref, chunks=(128, 128)), store(tmp_path, "mov", mov, chunks=(128, 128))
    out = tmp_path / "out.zarr"
    settings = dict(reference=ref_url, moving=mov_url, output=str(out), window=WINDOW, chunks={"y": 96, "x": 96},
                    registration=registration(interpolation="lanczos3"),
                    compute={"scheduler": "threads", "workers": 1})
    cfg = write_config(tmp_path / "c.yaml", **settings)
    with (tmp_path / "stderr.txt").open("w") as stderr:
        done = kill_run_after(cfg, out, 20, cwd=tmp_path, timeout=90, poll=0.02, stderr=stderr)
    assert 20 <= done < 256
    before = recorded(out)
    assert xr.open_zarr(out).attrs["lncc"]["status"] != "complete"

    rerun = run_cli("run", str(cfg), cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resumed: {256 - done} of 256 blocks computed" in rerun.stdout, rerun.stdout
    assert "recorded" in rerun.stdout
    after = recorded(out)
    assert after["shifts"] == before["shifts"]
    np.testing.assert_allclose(after["shifts"], (3.3, -2.6), atol=0.02)

    fresh_out = tmp_path / "fresh.zarr"
    run(load_config(write_config(tmp_path / "fresh.yaml", **{**settings, "output": str(fresh_out)})))
    assert recorded(fresh_out)["shifts"] == after["shifts"]
    np.testing.assert_array_equal(read_map(out), read_map(fresh_out))
    np.testing.assert_array_equal(xr.open_zarr(out)["shift"].values, xr.open_zarr(fresh_out)["shift"].values)


@pytest.mark.slow
@pytest.mark.parametrize("compute", [{"scheduler": "local", "workers": 2, "threads_per_worker": 1},
                                     {"scheduler": "processes", "workers": 2}])
def test_worker_processes_give_the_threads_result(small_pair, compute):
    """A registered run on dask.distributed worker processes (and a process pool): each worker reads its blocks
    through the pickled shifted reader; the map equals the threads run bit for bit."""
    tmp, ref, mov, ref_url, mov_url = small_pair
    settings = dict(reference=ref_url, moving=mov_url, chunks={"y": 40, "x": 56}, registration=registration())
    _, threads = run_config(tmp, f"threads-{compute['scheduler']}", **settings)
    _, workers = run_config(tmp, f"workers-{compute['scheduler']}", compute=compute, **settings)
    np.testing.assert_array_equal(xr.open_zarr(workers)["shift"].values, xr.open_zarr(threads)["shift"].values)
    np.testing.assert_array_equal(read_map(workers), read_map(threads))
