"""`lncc ingest`: any input converted once into chunked zarr, resumable after a kill, never over a user's files.

Real files (TIFF by tifffile, PNG by imageio, mp4 by PyAV), real zarr stores, the CLI in process and, for the
kill, a real subprocess killed with SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import xarray as xr
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import parse_config
from pipeline.io import read_provenance
from pipeline.job import ingest, run
from pipeline.testing import sample_pair
from support import REPO, invoke_cli


def _tiff_pair(tmp_path, shape=(300, 260), dtype="uint16"):
    a, b = sample_pair(shape, dtype, seed=3)
    paths = [tmp_path / "a.tif", tmp_path / "b.tif"]
    for path, image in zip(paths, (a, b)):
        tifffile.imwrite(path, image, tile=(64, 64), compression="zlib")
    return a, b, [str(p) for p in paths]


def _ncc(tmp_path, name, reference, moving, **extra):
    out = tmp_path / f"{name}.zarr"
    run(parse_config({"reference": str(reference), "moving": str(moving), "output": str(out), "window": 7, **extra}))
    return xr.open_zarr(out)["ncc"].values


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_an_ingested_pair_runs_as_its_source_did(tmp_path, zarr_format):
    a, b, tifs = _tiff_pair(tmp_path)
    dests = []
    for path, name in zip(tifs, "ab"):
        dest = str(tmp_path / f"{name}.zarr")
        summary = ingest(path, dest, chunks={"y": 70, "x": 50}, zarr_format=zarr_format)
        assert summary.action == "fresh" and summary.written == summary.blocks > 1
        dests.append(dest)
    image = xr.open_zarr(dests[0], consolidated=False)["image"]
    assert image.dims == ("y", "x") and image.dtype == np.uint16 and image.encoding["chunks"] == (70, 50)
    np.testing.assert_array_equal(image.values, a)
    assert zarr.open_group(dests[0], mode="r").metadata.zarr_format == zarr_format
    np.testing.assert_array_equal(_ncc(tmp_path, "from-zarr", *dests), _ncc(tmp_path, "from-tiff", *tifs))
    assert ingest(tifs[0], dests[0], chunks={"y": 70, "x": 50}, zarr_format=zarr_format).action == "up to date"


def test_colour_video_and_frames_keep_their_policy_and_coordinates(tmp_path):
    import av

    a, _ = sample_pair((64, 80), "uint8", seed=5)
    frames = [np.stack([np.roll(a, k, 1), a, 255 - a], -1).astype(np.uint8) for k in range(12)]
    path = tmp_path / "v.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 80, 64, "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    summary = ingest(str(path), str(tmp_path / "v.zarr"), channels="mean")
    assert summary.channels == "mean" and summary.dims == ("t", "y", "x")
    ds = xr.open_zarr(tmp_path / "v.zarr", consolidated=False)
    np.testing.assert_allclose(ds["t"].values, np.arange(12) / 24)
    assert ds["t"].attrs["units"] == "s" and ds["t"].attrs["frame_rate"] == 24
    decoded = iio.imread(path, plugin="pyav", format="rgb24").astype(np.float64).mean(-1)
    np.testing.assert_allclose(ds["image"].values, decoded.astype(np.float32), atol=1e-4)
    rgba = np.dstack([frames[0], np.where(a > 100, 255, 0).astype(np.uint8)])
    iio.imwrite(tmp_path / "c.png", rgba)
    summary = ingest(str(tmp_path / "c.png"), str(tmp_path / "c.zarr"), channels="separate")
    ds = xr.open_zarr(tmp_path / "c.zarr", consolidated=False)
    assert ds["image"].dims == ("c", "y", "x") and list(ds["c"].values) == ["R", "G", "B"] and summary.mask
    np.testing.assert_array_equal(ds["valid"].values[1], a > 100)
    np.testing.assert_array_equal(ds["image"].values, np.moveaxis(frames[0], -1, 0))


@settings(max_examples=6, deadline=None)
@given(stop_after=st.integers(1, 11))
def test_an_interrupted_ingest_resumes_with_the_blocks_not_done(tmp_path_factory, stop_after):
    tmp_path = tmp_path_factory.mktemp("resume")
    a, _, tifs = _tiff_pair(tmp_path, (256, 192), "uint8")
    dest = str(tmp_path / "a.zarr")

    def interrupt(done, total):
        if done >= stop_after:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ingest(tifs[0], dest, chunks={"y": 32, "x": 64}, progress=interrupt)
    assert zarr.open_group(dest, mode="r").attrs["lncc_ingest"]["status"] == "running"
    summary = ingest(tifs[0], dest, chunks={"y": 32, "x": 64})
    assert summary.action == "resume" and 0 < summary.written <= summary.blocks - stop_after
    np.testing.assert_array_equal(xr.open_zarr(dest, consolidated=False)["image"].values, a)


def test_ingest_never_writes_over_what_it_did_not_write(tmp_path):
    _, _, tifs = _tiff_pair(tmp_path, (128, 128), "uint8")
    user = tmp_path / "mine.zarr"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    for dest, words in ((str(user), "lncc did not write"), (tifs[0], "is, holds or lies inside the source"),
                        (str(tmp_path / "a.tif" / "x.zarr"), "is, holds or lies inside the source")):
        result = invoke_cli("ingest", tifs[0], dest, cwd=tmp_path)
        assert result.returncode == 2 and words in result.stderr and len(result.stderr.splitlines()) == 1, \
            result.stderr
    assert (user / "notes.txt").read_text() == "keep me" and sorted(p.name for p in user.iterdir()) == ["notes.txt"]
    dest = str(tmp_path / "a.zarr")
    assert invoke_cli("ingest", tifs[0], dest, cwd=tmp_path).returncode == 0
    other = invoke_cli("ingest", tifs[1], dest, cwd=tmp_path)
    assert other.returncode == 2 and "--force" in other.stderr
    assert invoke_cli("ingest", tifs[1], dest, "--force", cwd=tmp_path).returncode == 0
    np.testing.assert_array_equal(xr.open_zarr(dest, consolidated=False)["image"].values, tifffile.imread(tifs[1]))
    for args, words in ((["--chunks", "y=0"], "--chunks"), (["--chunks", "z=4"], "--chunks names z"),
                        (["--channels", "hue"], "--channels"), (["--zarr-format", "4"], "--zarr-format")):
        result = invoke_cli("ingest", tifs[0], str(tmp_path / "new.zarr"), *args, cwd=tmp_path)
        assert result.returncode == 2 and words in result.stderr, result.stderr
    assert not (tmp_path / "new.zarr").exists()


def test_a_run_from_an_ingest_records_it_and_its_mask_can_be_given(tmp_path):
    a, b = sample_pair((96, 128), "uint8", seed=9)
    alpha = np.full(a.shape, 255, np.uint8)
    alpha[:30, :40] = 0
    iio.imwrite(tmp_path / "a.png", np.dstack([a, a, a, alpha]))
    iio.imwrite(tmp_path / "b.png", b)
    ingest(str(tmp_path / "a.png"), str(tmp_path / "a.zarr"))
    direct = _ncc(tmp_path, "direct", tmp_path / "a.png", tmp_path / "b.png")
    via = _ncc(tmp_path, "via", tmp_path / "a.zarr", tmp_path / "b.png", reference_mask=str(tmp_path / "a.zarr/valid"))
    np.testing.assert_array_equal(via, direct)
    assert read_provenance(str(tmp_path / "via.zarr"))["inputs"]["reference"]["format"] == "zarr"


@pytest.mark.slow
def test_a_killed_ingest_resumes(tmp_path):
    """SIGKILL in the middle of a real `lncc ingest` process; the next run writes only what was not done."""
    rng = np.random.default_rng(1)
    image = rng.integers(0, 65535, (4096, 4096), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "big.tif", image, tile=(256, 256), compression="zlib")
    dest = tmp_path / "big.zarr"
    cmd = [sys.executable, "-m", "pipeline.cli", "ingest", str(tmp_path / "big.tif"), str(dest), "--chunks",
           "y=128,x=128", "-q"]
    proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    done = dest / "_lncc" / "done" / "c"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None and len(list(done.glob("*"))) < 3:
        time.sleep(0.01)
    if proc.poll() is not None:
        pytest.skip("the ingest finished before it could be killed")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    summary = ingest(str(tmp_path / "big.tif"), str(dest), chunks={"y": 128, "x": 128})
    assert summary.action == "resume" and summary.written < summary.blocks
    np.testing.assert_array_equal(xr.open_zarr(dest, consolidated=False)["image"].values, image)
