"""TIFF inputs: real TIFF, BigTIFF and page-stack files written by tifffile, run through ``pipeline.job.run``.

Each run from TIFF files is compared with the same pair stored as zarr (bit for bit: the same values reach
the same kernel) and with the textbook two-pass NCC; worker processes open the file themselves.
"""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import tifffile
import xarray as xr

from pipeline.config import parse_config
from pipeline.errors import InputError
from pipeline.io import fingerprint, inspect_input, read_provenance, source_of, write_array
from pipeline.job import run
from pipeline.testing import reference_ncc, sample_pair
from support import assert_matches

LAYOUTS = {
    "tiled-zlib": dict(tile=(64, 64), compression="zlib"),
    "strips": dict(rowsperstrip=24),
    "bigtiff-tiled": dict(tile=(128, 64), bigtiff=True),
    "tiled-zstd": dict(tile=(64, 128), compression="zstd"),
    "strips-lzw": dict(rowsperstrip=16, compression="lzw"),
}


def _pair(dtype, shape=(190, 230), seed=1):
    a, b = sample_pair(shape, dtype, seed=seed)
    return np.ascontiguousarray(a), np.ascontiguousarray(b)


def _run(tmp, name, reference, moving, **settings):
    out = tmp / f"{name}.zarr"
    summary = run(parse_config({"reference": str(reference), "moving": str(moving), "output": str(out),
                                "window": 7, **settings}))
    with xr.open_zarr(out) as ds:
        return summary, ds["ncc"].values, dict(ds.attrs)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
def test_a_tiff_pair_equals_the_zarr_pair_and_the_textbook(tmp_path, layout, dtype):
    a, b = _pair(dtype)
    tifs = [tmp_path / f"{k}.tif" for k in "ab"]
    for path, image in zip(tifs, (a, b)):
        tifffile.imwrite(path, image, **LAYOUTS[layout])
    stores = [write_array(str(tmp_path / f"{k}.zarr"), image, chunks=(64, 64)) for k, image in zip("ab", (a, b))]
    blocks = {"chunks": {"y": 80, "x": 100}}
    _, from_tiff, attrs = _run(tmp_path, "tiff", *tifs, **blocks)
    _, from_zarr, _ = _run(tmp_path, "zarr", *stores, **blocks)
    np.testing.assert_array_equal(from_tiff, from_zarr)
    assert_matches(from_tiff, reference_ncc(a, b, 7))
    inputs = read_provenance(str(tmp_path / "tiff.zarr"))["inputs"]  # provenance names the format
    assert inputs["reference"]["format"] == inputs["moving"]["format"] == "tiff"
    assert inputs["reference"]["url"] == str(tifs[0])


def test_a_page_stack_is_a_video_and_a_registered_run_reads_it(tmp_path):
    frames = [_pair("uint8", (120, 150), seed=s) for s in range(3)]
    ref, mov = np.stack([f[0] for f in frames]), np.stack([f[1] for f in frames])
    tifs = [tmp_path / "r.tif", tmp_path / "m.tif"]
    for path, stack in zip(tifs, (ref, mov)):
        tifffile.imwrite(path, stack, tile=(64, 64), photometric="minisblack")
    info = inspect_input(str(tifs[0]))
    assert info.shape == ref.shape and info.dims == ("t", "y", "x") and info.zarr_chunks == (1, 64, 64)
    stores = [write_array(str(tmp_path / f"{k}.zarr"), x, chunks=(1, 64, 64)) for k, x in (("r", ref), ("m", mov))]
    shift = {"registration": {"method": "translation", "shift": [1.25, -0.5]}}
    _, from_tiff, _ = _run(tmp_path, "tiff", *tifs, **shift)
    _, from_zarr, _ = _run(tmp_path, "zarr", *stores, **shift)
    np.testing.assert_array_equal(from_tiff, from_zarr)
    assert np.isnan(from_tiff[:, :1]).all() and np.isfinite(from_tiff[:, 10:-10, 10:-10]).all()


def test_the_reader_pickles_and_reads_only_what_is_asked(tmp_path):
    a, _ = _pair("uint16")
    path = tmp_path / "a.tif"
    tifffile.imwrite(path, a, tile=(32, 32), compression="zlib")
    reader = source_of(inspect_input(str(path)))
    np.testing.assert_array_equal(reader[10:50, 40:200], a[10:50, 40:200])
    copy = pickle.loads(pickle.dumps(reader))  # a worker process: no open file travels
    np.testing.assert_array_equal(copy[100:190, 0:7], a[100:190, 0:7])
    out = np.empty((5, 6), dtype=a.dtype)
    copy.read_into([slice(3, 8), slice(9, 15)], out)
    np.testing.assert_array_equal(out, a[3:8, 9:15])


def test_the_fingerprint_follows_the_bytes_not_the_mtime(tmp_path):
    a, b = _pair("uint8")
    tifs = [tmp_path / "a.tif", tmp_path / "b.tif"]
    for path, image in zip(tifs, (a, b)):
        tifffile.imwrite(path, image, tile=(64, 64))
    before = fingerprint(str(tifs[0]))
    summary, first, _ = _run(tmp_path, "out", *tifs)
    os.utime(tifs[0], (1e9, 1e9))  # touched, same bytes
    assert fingerprint(str(tifs[0])) == before
    summary, _, _ = _run(tmp_path, "out", *tifs)
    assert summary.pairs[0].action == "up to date"
    changed = a.copy()
    changed[50, 60] ^= 1
    tifffile.imwrite(tifs[0], changed, tile=(64, 64))
    assert fingerprint(str(tifs[0])) != before
    summary, second, _ = _run(tmp_path, "out", *tifs)
    assert summary.pairs[0].action != "up to date"
    assert not np.array_equal(first, second)


def test_bad_tiff_inputs_are_one_line_errors_and_nothing_is_written(tmp_path):
    a, b = _pair("uint8")
    good = tmp_path / "b.tif"
    tifffile.imwrite(good, b, tile=(64, 64))
    not_tiff = tmp_path / "text.tif"
    not_tiff.write_text("not an image\n")
    five = tmp_path / "five.tif"  # five samples per pixel: no luminance to take
    tifffile.imwrite(five, np.stack([a] * 5, axis=-1), photometric="minisblack", planarconfig="contig")
    for path, words in ((not_tiff, "is not a readable TIFF file"), (five, "has no luminance"),
                        (tmp_path / "missing.tif", "does not exist")):
        out = tmp_path / f"out-{path.stem}.zarr"
        with pytest.raises(InputError, match=words) as caught:
            run(parse_config({"reference": str(path), "moving": str(good), "output": str(out)}))
        assert "\n" not in str(caught.value) and str(path) in str(caught.value)
        assert not out.exists()


def test_a_truncated_tiff_fails_the_run_naming_the_file(tmp_path):
    a, b = _pair("uint8", (256, 256))
    tifs = [tmp_path / "a.tif", tmp_path / "b.tif"]
    for path, image in zip(tifs, (a, b)):
        tifffile.imwrite(path, image, tile=(64, 64), compression="zlib")
    data = tifs[1].read_bytes()
    with tifffile.TiffFile(tifs[1]) as handle:  # cut the file inside its last tiles' data
        page = handle.pages[0]
        cut = int(page.dataoffsets[-3])
    tifs[1].write_bytes(data[:cut] + b"\0" * 8)
    out = tmp_path / "out.zarr"
    with pytest.raises(InputError, match="b.tif") as caught:
        run(parse_config({"reference": str(tifs[0]), "moving": str(tifs[1]), "output": str(out)}))
    assert "\n" not in str(caught.value) and "truncated" in str(caught.value)
    assert not out.exists()  # found when planned: nothing written


@pytest.mark.slow
@pytest.mark.parametrize("compute", [{"scheduler": "local", "workers": 2, "threads_per_worker": 1},
                                     {"scheduler": "processes", "workers": 2}])
def test_worker_processes_read_the_tiff_themselves(tmp_path, compute):
    """On dask.distributed worker processes (and a process pool) each task opens the file in its process; the map
    equals the threads run bit for bit."""
    a, b = _pair("uint16", (300, 260))
    tifs = [tmp_path / "a.tif", tmp_path / "b.tif"]
    for path, image in zip(tifs, (a, b)):
        tifffile.imwrite(path, image, tile=(64, 64), compression="zlib")
    blocks = {"chunks": {"y": 100, "x": 130}}
    _, threads, _ = _run(tmp_path, "threads", *tifs, **blocks)
    _, workers, _ = _run(tmp_path, "workers", *tifs, compute=compute, **blocks)
    np.testing.assert_array_equal(workers, threads)


def _pyramid(path, image, levels=3, series=()):
    """An OME-TIFF pyramid (sub-IFDs, each level half the last), after other series of its own if given."""
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tif:
        for other in series:
            tif.write(other, tile=(64, 64), metadata={"axes": "YX"})
        tif.write(image, subifds=levels - 1, tile=(64, 64), compression="zlib", metadata={"axes": "YX"})
        for level in range(1, levels):
            tif.write(image[:: 2**level, :: 2**level], subfiletype=1, tile=(64, 64), compression="zlib")


@pytest.mark.parametrize("level", [0, 1, 2])
def test_an_ome_tiff_pyramid_level_and_series_are_read_as_chosen(tmp_path, level):
    a, b = _pair("uint16", (512, 384))
    decoy = np.zeros((200, 100), np.uint16)
    tifs = [tmp_path / "a.ome.tif", tmp_path / "b.ome.tif"]
    for path, image in zip(tifs, (a, b)):
        _pyramid(path, image, series=[decoy])
    info = inspect_input(str(tifs[0]), series=1, level=level)
    assert info.shape == a[:: 2**level, :: 2**level].shape
    stores = [write_array(str(tmp_path / f"{k}.zarr"), image[:: 2**level, :: 2**level], chunks=(64, 64))
              for k, image in zip("ab", (a, b))]
    blocks = {"chunks": {"y": 48, "x": 80}}
    _, from_tiff, _ = _run(tmp_path, "tiff", *tifs, series=1, level=level, **blocks)
    _, from_zarr, _ = _run(tmp_path, "zarr", *stores, **blocks)
    np.testing.assert_array_equal(from_tiff, from_zarr)
    recorded = read_provenance(str(tmp_path / "tiff.zarr"))["inputs"]["reference"]
    assert recorded["series"] == 1 and recorded["level"] == level
    for settings, words in (({"series": 2}, "set series: to one of 0..1"),
                            ({"series": 1, "level": 3}, "set level: to one of 0..2")):
        with pytest.raises(InputError, match=words.replace(".", r"\.")) as caught:
            _run(tmp_path, "bad", *tifs, **settings)
        assert "\n" not in str(caught.value) and not (tmp_path / "bad.zarr").exists()


@pytest.mark.parametrize("planar", ["contig", "separate"])
def test_a_colour_tiff_is_read_by_the_channel_policy(tmp_path, planar):
    """RGB samples, interleaved or planar: luminance by default, one channel by index, one map per channel."""
    a, b = _pair("uint8", (160, 200))
    rgb = [np.stack([x, np.roll(x, 5, 0), 255 - x], -1).astype(np.uint8) for x in (a, b)]
    tifs = [tmp_path / "a.tif", tmp_path / "b.tif"]
    for path, image in zip(tifs, rgb):
        data = image if planar == "contig" else np.moveaxis(image, -1, 0)
        tifffile.imwrite(path, data, photometric="rgb", planarconfig=planar, tile=(64, 64))
    luma = [(x.astype(np.float64) @ np.array([0.2126, 0.7152, 0.0722])).astype(np.float32) for x in rgb]
    summary, lum, _ = _run(tmp_path, "lum", *tifs, chunks={"y": 50, "x": 70})
    assert "luminance" in summary.pairs[0].channels
    assert_matches(lum, reference_ncc(luma[0].astype(np.float64), luma[1].astype(np.float64), 7))
    _, green, _ = _run(tmp_path, "green", *tifs, channels=1)
    assert_matches(green, reference_ncc(rgb[0][..., 1], rgb[1][..., 1], 7))
    _, apart, _ = _run(tmp_path, "apart", *tifs, channels="separate", chunks={"c": 2, "y": 64, "x": 90})
    with xr.open_zarr(tmp_path / "apart.zarr") as ds:
        assert ds["ncc"].dims == ("c", "y", "x") and list(ds["c"].values) == ["R", "G", "B"]
    for c in range(3):
        assert_matches(apart[c], reference_ncc(rgb[0][..., c], rgb[1][..., c], 7))


@pytest.mark.slow
def test_worker_processes_read_a_pyramid_level_of_colour_tiffs(tmp_path):
    """A LocalCluster of two worker processes reads level 1 of RGB pyramids as a threads run does."""
    a, b = _pair("uint8", (400, 360))
    tifs = [tmp_path / "a.ome.tif", tmp_path / "b.ome.tif"]
    for path, image in zip(tifs, (a, b)):
        rgb = np.stack([image, image // 2, 255 - image], -1).astype(np.uint8)
        with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tif:
            tif.write(rgb, subifds=1, tile=(64, 64), photometric="rgb", metadata={"axes": "YXS"})
            tif.write(rgb[::2, ::2], subfiletype=1, tile=(64, 64), photometric="rgb")
    blocks = {"chunks": {"y": 64, "x": 100}, "level": 1}
    _, threads, _ = _run(tmp_path, "threads", *tifs, **blocks)
    compute = {"scheduler": "local", "workers": 2, "threads_per_worker": 1}
    _, workers, _ = _run(tmp_path, "workers", *tifs, compute=compute, **blocks)
    np.testing.assert_array_equal(workers, threads)
    assert threads.shape == (200, 180)


def test_a_damaged_tile_fails_the_run_naming_the_file_and_the_tile(tmp_path):
    """Bytes inside one tile overwritten (the file keeps its length, so the plan cannot tell): the block that
    reads it fails with one line naming the file and the tile; the output is never marked complete."""
    a, b = _pair("uint8", (256, 256))
    tifs = [tmp_path / "a.tif", tmp_path / "b.tif"]
    for path, image in zip(tifs, (a, b)):
        tifffile.imwrite(path, image, tile=(64, 64), compression="zlib")
    with tifffile.TiffFile(tifs[1]) as handle:
        offset, count = int(handle.pages[0].dataoffsets[5]), int(handle.pages[0].databytecounts[5])
    data = bytearray(tifs[1].read_bytes())
    data[offset:offset + count] = b"\xff" * count
    tifs[1].write_bytes(bytes(data))
    out = tmp_path / "out.zarr"
    with pytest.raises(InputError, match=r"b\.tif.*tile 5") as caught:
        run(parse_config({"reference": str(tifs[0]), "moving": str(tifs[1]), "output": str(out),
                          "chunks": {"y": 64, "x": 64}}))
    assert "\n" not in str(caught.value)
    assert read_provenance(str(out)).get("status") != "complete"


@pytest.mark.parametrize("byteorder", ["<", ">"])
def test_tiles_are_decoded_as_tifffile_reads_them(tmp_path, byteorder):
    """Big- and little-endian files, a tile grid that does not divide the image, predictors: every region
    equals tifffile's own read, including regions across tile edges."""
    a, _ = _pair("uint16", (190, 230))
    path = tmp_path / "a.tif"
    tifffile.imwrite(path, a, tile=(48, 64), compression="zlib", predictor=True, byteorder=byteorder)
    reader = source_of(inspect_input(str(path)))
    for ys, xs in ((slice(0, 190), slice(0, 230)), (slice(47, 49), slice(63, 129)), (slice(150, 190), slice(200, 230))):
        np.testing.assert_array_equal(reader[ys, xs], a[ys, xs])


def test_a_page_stack_whose_pages_differ_is_an_error_naming_the_odd_page(tmp_path):
    """Pages written without metadata, the fourth of another size: an error naming page 3 (not three frames read
    silently); series: 1 reads that group on purpose."""
    good = tmp_path / "good.tif"
    odd = tmp_path / "odd.tif"
    frames = [_pair("uint8", (64, 64), seed=s)[0] for s in range(3)]
    tifffile.imwrite(good, np.stack(frames), photometric="minisblack")
    with tifffile.TiffWriter(odd) as tif:
        for frame in frames:
            tif.write(frame, metadata=None)
        tif.write(np.zeros((32, 48), np.uint8), metadata=None)
    out = tmp_path / "out.zarr"
    with pytest.raises(InputError, match="pages 0-2 are 64 x 64 uint8 but page 3 is 32 x 48") as caught:
        run(parse_config({"reference": str(odd), "moving": str(good), "output": str(out)}))
    assert "\n" not in str(caught.value) and not out.exists()
    assert inspect_input(str(odd), series=1).shape == (32, 48)
