"""Video inputs: real mp4 files encoded by PyAV (FFmpeg) from textured frames that move a few pixels per frame.

A video is lossy, so each run is compared with the frames as an independent decode gives them (all frames in
order, no seeking: the luma plane Y' as stored for the default luminance, imageio's pyav plugin for RGB),
stacked, stored as zarr and run alike. A small GOP (a keyframe every 8
frames) makes the reader seek: blocks asked out of order, backwards or far ahead must still be the exact
frames.
"""

from __future__ import annotations

import uuid

import av
import imageio.v3 as iio
import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import parse_config
from pipeline.errors import InputError
from pipeline.io import inspect_input, process_state, read_provenance, source_of, write_array
from pipeline.job import run
from pipeline.testing import reference_ncc, sample_pair
from support import assert_matches

WINDOW = 7
FRAMES, SHAPE, RATE, GOP = 24, (96, 128), 10, 8


def _codec() -> str:
    try:
        av.codec.Codec("libx264", "w")
        return "libx264"
    except Exception:  # an FFmpeg built without x264
        return "mpeg4"


CODEC = _codec()


def _content(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference and moving RGB frames: crops of a textured pair that move by (1, 2) px per frame; the three
    channels are the crop, another crop and its negative."""
    a, b = sample_pair((300, 330), "uint8", seed=seed)
    out = []
    for image in (a, b):
        crops = np.stack([image[150 + i:150 + i + SHAPE[0], 120 + 2 * i:120 + 2 * i + SHAPE[1]]
                          for i in range(FRAMES)])
        other = np.stack([image[40 + i:40 + i + SHAPE[0], 60 + i:60 + i + SHAPE[1]] for i in range(FRAMES)])
        out.append(np.ascontiguousarray(np.stack([crops, other, 255 - crops], axis=-1)))
    return out[0], out[1]


def _encode(path, rgb, *, faststart: bool = False):
    """``rgb`` (t, y, x, 3) uint8 as an H.264 (or MPEG-4 part 2) yuv420p video, a keyframe every GOP frames."""
    with av.open(str(path), "w", options={"movflags": "faststart"} if faststart else {}) as container:
        stream = container.add_stream(CODEC, rate=RATE)
        stream.width, stream.height, stream.pix_fmt = rgb.shape[2], rgb.shape[1], "yuv420p"
        stream.options = {"g": str(GOP)}
        for frame in rgb:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def _luma(path) -> np.ndarray:
    """Every frame's luma plane Y' as stored, decoded in order by PyAV on its own (no seeking, no conversion)."""
    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            plane = frame.planes[0]
            rows = np.frombuffer(plane, np.uint8).reshape(frame.height, plane.line_size)
            frames.append(rows[:, :frame.width].copy())
    return np.stack(frames)


def _run(out, reference, moving, **settings):
    process_state().videos.clear()  # decoders start afresh, as in a new worker process: the run must seek
    summary = run(parse_config({"reference": str(reference), "moving": str(moving), "output": str(out),
                                "window": WINDOW, **settings}))
    with xr.open_zarr(out) as ds:
        return summary, ds["ncc"].load()


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """A reference and a moving mp4, their frames decoded independently (luma and RGB) and the luma's zarr map."""
    root = tmp_path_factory.mktemp("video")
    ra, rb = _content(seed=2)
    paths = [_encode(root / f"{k}.mp4", x) for k, x in zip("ab", (ra, rb))]
    grey = [_luma(p) for p in paths]
    full = [iio.imread(p, plugin="pyav", format="gray") for p in paths]  # FFmpeg's grey: Y' in full range
    assert np.abs(full[0] - (grey[0].astype(float) - 16) * 255 / 219).max() <= 1.0  # limited range 16-235
    rgb = [iio.imread(p, plugin="pyav", format="rgb24") for p in paths]
    assert grey[0].shape == (FRAMES,) + SHAPE and rgb[0].shape == (FRAMES,) + SHAPE + (3,)
    stores = [write_array(str(root / f"{k}.zarr"), x, chunks=(1, 64, 64)) for k, x in zip("ab", grey)]
    _, from_zarr = _run(root / "zarr.zarr", *stores, chunks={"t": 3})
    return {"root": root, "paths": paths, "grey": grey, "rgb": rgb, "zarr": from_zarr.values}


@pytest.mark.parametrize("chunks", [{"t": 3}, {"t": 3, "y": 48, "x": 64}, {"t": 1}], ids=["t3", "t3-tiles", "t1"])
def test_a_video_pair_equals_its_decoded_frames_from_zarr(videos, tmp_path, chunks):
    out = tmp_path / "video.zarr"
    _, from_video = _run(out, *videos["paths"], chunks=chunks)
    assert from_video.dims == ("t", "y", "x") and from_video.shape == (FRAMES,) + SHAPE
    assert_matches(from_video.values, videos["zarr"], 1e-6)
    some = slice(0, FRAMES, 7)  # the textbook on a few frames (it holds every window in memory)
    assert_matches(from_video.values[some], reference_ncc(videos["grey"][0][some], videos["grey"][1][some], WINDOW))
    assert np.isfinite(from_video.values).all() and np.std(from_video.values) > 0.1  # textured content


def test_the_time_coordinate_is_in_seconds_and_provenance_names_the_video(videos, tmp_path):
    out = tmp_path / "video.zarr"
    _run(out, *videos["paths"])
    with xr.open_zarr(out) as ds:
        t = ds["t"]
        np.testing.assert_allclose(t.values, np.arange(FRAMES) / RATE, rtol=0, atol=1e-12)
        assert t.attrs["units"] == "s" and t.attrs["frame_rate"] == RATE
        np.testing.assert_allclose(ds["ncc"].sel(t=1.2).values, ds["ncc"].values[12])
    record = read_provenance(str(out))["inputs"]["reference"]
    assert (record["format"], record["frame_rate"], record["channels"]) == ("video", RATE, "luminance")
    assert (record["url"], record["shape"], record["dtype"]) == (str(videos["paths"][0]), [FRAMES, *SHAPE], "uint8")


READS = [(17, 19), (3, 5), (20, 24), (0, 1), (23, 24), (8, 9), (7, 8), (9, 16), (1, 2), (16, 17), (12, 13)]


def test_reads_in_any_order_are_the_exact_frames(videos):
    """Backwards, jumps over keyframes, one frame before a keyframe, the last frame: each read is exact."""
    process_state().videos.clear()
    reader = source_of(inspect_input(str(videos["paths"][0])))
    assert reader.shape == (FRAMES,) + SHAPE and reader.dtype == np.uint8
    for first, stop in READS:
        np.testing.assert_array_equal(reader[first:stop], videos["grey"][0][first:stop], err_msg=f"{first}:{stop}")
    np.testing.assert_array_equal(reader[5], videos["grey"][0][5])
    np.testing.assert_array_equal(reader[4:6, 10:20, 100:], videos["grey"][0][4:6, 10:20, 100:])


@settings(max_examples=25, deadline=None)
@given(reads=st.lists(st.tuples(st.integers(0, FRAMES - 1), st.integers(1, 5), st.integers(0, SHAPE[0] - 1),
                                st.integers(0, SHAPE[1] - 1)), min_size=1, max_size=8),
       fresh=st.booleans())
def test_reads_in_drawn_orders_are_the_exact_frames(videos, reads, fresh):
    if fresh:
        process_state().videos.clear()
    reader = source_of(inspect_input(str(videos["paths"][1])))
    for first, length, y, x in reads:
        stop = min(first + length, FRAMES)
        got = reader[first:stop, y:, :x + 1]
        np.testing.assert_array_equal(got, videos["grey"][1][first:stop, y:, :x + 1], err_msg=f"{first}:{stop}")


def test_channels_mean_reads_the_rgb_frames(videos, tmp_path):
    process_state().videos.clear()
    info = inspect_input(str(videos["paths"][0]), channels="mean")
    assert (info.shape, info.dtype, info.channels) == ((FRAMES,) + SHAPE, np.dtype(np.float32), "mean")
    means = [x.astype(np.float64).mean(axis=-1).astype(np.float32) for x in videos["rgb"]]
    reader = source_of(info)
    for first, stop in READS[:5]:
        np.testing.assert_allclose(reader[first:stop], means[0][first:stop], rtol=1e-6, atol=0)
    _, from_video = _run(tmp_path / "video.zarr", *videos["paths"], channels="mean", chunks={"t": 3})
    stores = [write_array(str(tmp_path / f"{k}.zarr"), x, chunks=(1, 64, 64)) for k, x in zip("ab", means)]
    _, from_zarr = _run(tmp_path / "zarr.zarr", *stores, chunks={"t": 3})
    assert_matches(from_video.values, from_zarr.values, 1e-6)
    with pytest.raises(AssertionError):  # the mean of R, G, B is not the luma plane
        assert_matches(from_video.values, videos["zarr"], 1e-3)


def _one_line_error(config, path, match):
    with pytest.raises(InputError, match=match) as caught:
        run(parse_config(config))
    message = str(caught.value)
    assert "\n" not in message and str(path) in message, message


def test_channels_separate_on_a_video_is_a_one_line_error(videos, tmp_path):
    out = tmp_path / "out.zarr"
    config = {"reference": str(videos["paths"][0]), "moving": str(videos["paths"][1]), "output": str(out),
              "channels": "separate"}
    _one_line_error(config, videos["paths"][0], "channels: separate")
    assert not out.exists()


def test_a_truncated_mp4_and_a_non_video_are_one_line_errors_and_nothing_is_written(videos, tmp_path):
    data = videos["paths"][1].read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])  # its index (moov, written last) is gone
    text = tmp_path / "text.mp4"
    text.write_text("not a video\n")
    for path in (cut, text, tmp_path / "missing.mp4"):
        out = tmp_path / f"out-{path.stem}.zarr"
        config = {"reference": str(videos["paths"][0]), "moving": str(path), "output": str(out)}
        _one_line_error(config, path, "is not a readable video" if path.exists() else "does not exist")
        assert not out.exists()


def test_a_video_cut_inside_its_frames_fails_the_run_naming_the_file(videos, tmp_path):
    """Its index first (faststart): the header promises 24 frames, the data ends before them. Found when the
    input is inspected (its packets counted), so the run writes nothing."""
    _, rb = _content(seed=2)
    whole = _encode(tmp_path / "whole.mp4", rb, faststart=True)
    data = whole.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.7)])
    with pytest.raises(InputError, match="truncated: its index lists 24 frames"):
        inspect_input(str(cut))
    out = tmp_path / "out.zarr"
    process_state().videos.clear()
    config = {"reference": str(videos["paths"][0]), "moving": str(cut), "output": str(out), "chunks": {"t": 3}}
    _one_line_error(config, cut, "truncated")
    assert not out.exists()


@pytest.mark.slow
def test_worker_processes_decode_the_video_themselves(videos, tmp_path):
    """On a LocalCluster of two worker processes each opens its decoders: the same map as the threads."""
    compute = {"scheduler": "local", "workers": 2, "threads_per_worker": 1}
    _, from_workers = _run(tmp_path / f"workers-{uuid.uuid4().hex}.zarr", *videos["paths"], chunks={"t": 3},
                           compute=compute)
    assert_matches(from_workers.values, videos["zarr"], 1e-6)
