"""Single-image inputs: real PNG and JPEG files written by imageio, run through ``pipeline.job.run``.

Each run from image files is compared with the same pixels stored as zarr (the same values reach the same
kernel) and with the textbook two-pass NCC. Colour images go through the channel policy (Rec. 709 luminance
by default, ``mean``, a channel index, ``separate``); an alpha channel is the validity mask.
"""

from __future__ import annotations

import os
import pickle

import imageio.v3 as iio
import numpy as np
import pytest
import xarray as xr

import pipeline.io.readers.images as images
from pipeline.config import parse_config
from pipeline.errors import InputError
from pipeline.io import alpha_mask, fingerprint, inspect_input, read_provenance, source_of, write_array
from pipeline.io.readers.channels import ChannelView
from pipeline.io.readers.images import ImageSource
from pipeline.job import run
from pipeline.testing import reference_ncc, sample_crop, sample_pair
from support import assert_matches

WINDOW = 7
SHAPE = (96, 128)
BLOCKS = {"chunks": {"y": 40, "x": 50}}


def _grey(dtype="uint8", seed=1):
    a, b = sample_pair(SHAPE, dtype, seed=seed)
    return np.ascontiguousarray(a), np.ascontiguousarray(b)


def _rgb(seed=1):
    """A colour pair whose three channels are three different places of the photograph (R, G, B told apart)."""
    crops = [sample_crop(SHAPE, "uint8", seed=seed + k) for k in range(3)]
    return tuple(np.ascontiguousarray(np.stack([c[i] for c in crops], axis=-1)) for i in (0, 1))


def _luminance(rgb):
    """Rec. 709 luma of R, G, B in float64, given as float32 (what the luminance policy promises)."""
    x = rgb.astype(np.float64)
    return (0.2126 * x[..., 0] + 0.7152 * x[..., 1] + 0.0722 * x[..., 2]).astype(np.float32)


def _write(tmp, name, image, **options):
    path = tmp / name
    iio.imwrite(path, image, **options)
    return path


def _run(tmp, name, reference, moving, **settings):
    out = tmp / f"{name}.zarr"
    summary = run(parse_config({"reference": str(reference), "moving": str(moving), "output": str(out),
                                "window": WINDOW, **settings}))
    with xr.open_zarr(out) as ds:
        return summary, ds["ncc"].load()


def _zarr_run(tmp, name, a, b, **settings):
    """The same pixels stored as zarr, run alike: the map the image run must equal."""
    stores = [write_array(str(tmp / f"{name}-{k}.zarr"), x, chunks=(64, 64)) for k, x in zip("ab", (a, b))]
    return _run(tmp, name, *stores, **settings)[1]


def _one_line_error(config, *names, match):
    with pytest.raises(InputError, match=match) as caught:
        run(parse_config(config))
    message = str(caught.value)
    assert "\n" not in message, message
    for name in names:
        assert str(name) in message, message
    return message


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_a_grey_png_pair_equals_the_zarr_pair_and_the_textbook(tmp_path, dtype):
    a, b = _grey(dtype)
    pngs = [_write(tmp_path, f"{k}.png", x) for k, x in zip("ab", (a, b))]
    np.testing.assert_array_equal(iio.imread(pngs[0]), a)  # PNG is lossless, 16-bit included
    info = inspect_input(str(pngs[0]))
    assert (info.shape, info.dtype, info.dims, info.file_format) == (SHAPE, np.dtype(dtype), ("y", "x"), "image")
    _, from_png = _run(tmp_path, "png", *pngs, **BLOCKS)
    from_zarr = _zarr_run(tmp_path, "zarr", a, b, **BLOCKS)
    assert from_png.dims == ("y", "x")
    assert_matches(from_png.values, from_zarr.values, 1e-6)
    assert_matches(from_png.values, reference_ncc(a, b, WINDOW))
    record = read_provenance(str(tmp_path / "png.zarr"))["inputs"]["reference"]
    assert record["format"] == "image" and record["url"] == str(pngs[0]) and "channels" not in record


def test_an_rgb_png_is_read_as_its_rec709_luminance_by_default(tmp_path):
    a, b = _rgb()
    pngs = [_write(tmp_path, f"{k}.png", x) for k, x in zip("ab", (a, b))]
    info = inspect_input(str(pngs[0]))
    assert (info.shape, info.dtype, info.channels, info.alpha) == (SHAPE, np.dtype(np.float32), "luminance", False)
    np.testing.assert_array_equal(source_of(info)[:, :], _luminance(a))  # float64 weights, then float32
    np.testing.assert_array_equal(source_of(info)[10:30, 5:70], _luminance(a)[10:30, 5:70])
    _, from_png = _run(tmp_path, "png", *pngs, **BLOCKS)
    la, lb = _luminance(a), _luminance(b)
    assert_matches(from_png.values, _zarr_run(tmp_path, "zarr", la, lb, **BLOCKS).values, 1e-6)
    assert_matches(from_png.values, reference_ncc(la, lb, WINDOW))
    record = read_provenance(str(tmp_path / "png.zarr"))["inputs"]["reference"]
    assert (record["format"], record["channels"], record["alpha_mask"]) == ("image", "luminance", False)


def test_channels_mean_is_the_mean_of_the_colour_channels(tmp_path):
    a, b = _rgb(seed=4)
    pngs = [_write(tmp_path, f"{k}.png", x) for k, x in zip("ab", (a, b))]
    info = inspect_input(str(pngs[0]), channels="mean")
    assert (info.dtype, info.channels) == (np.dtype(np.float32), "mean")
    ma, mb = (x.astype(np.float64).mean(axis=-1).astype(np.float32) for x in (a, b))
    np.testing.assert_allclose(source_of(info)[:, :], ma, rtol=1e-6, atol=0)
    _, from_png = _run(tmp_path, "png", *pngs, channels="mean", **BLOCKS)
    assert_matches(from_png.values, _zarr_run(tmp_path, "zarr", ma, mb, **BLOCKS).values, 1e-6)
    assert_matches(from_png.values, reference_ncc(ma, mb, WINDOW))


def test_a_channel_index_reads_that_channel_as_stored(tmp_path):
    a, b = _rgb(seed=7)
    pngs = [_write(tmp_path, f"{k}.png", x) for k, x in zip("ab", (a, b))]
    info = inspect_input(str(pngs[0]), channels=1)
    assert (info.shape, info.dtype, info.channels) == (SHAPE, np.dtype(np.uint8), "1")
    green = source_of(info)[:, :]
    assert green.dtype == np.uint8
    np.testing.assert_array_equal(green, a[..., 1])
    _, from_png = _run(tmp_path, "png", *pngs, channels=1, **BLOCKS)
    assert_matches(from_png.values, _zarr_run(tmp_path, "zarr", a[..., 1], b[..., 1], **BLOCKS).values, 1e-6)
    assert_matches(from_png.values, reference_ncc(a[..., 1], b[..., 1], WINDOW))
    with pytest.raises(AssertionError):  # not the red channel, nor the luminance: the index is honoured
        assert_matches(from_png.values, reference_ncc(a[..., 0], b[..., 0], WINDOW))


def test_channels_separate_gives_one_map_per_channel_on_a_named_c_axis(tmp_path):
    a, b = _rgb(seed=10)
    pngs = [_write(tmp_path, f"{k}.png", x) for k, x in zip("ab", (a, b))]
    info = inspect_input(str(pngs[0]), channels="separate")
    assert (info.shape, info.dims, info.dtype) == ((3,) + SHAPE, ("c", "y", "x"), np.dtype(np.uint8))
    _, maps = _run(tmp_path, "png", *pngs, channels="separate", chunks={"y": 48, "x": 64})
    assert maps.dims == ("c", "y", "x")
    assert [str(c) for c in maps["c"].values] == ["R", "G", "B"]
    for i, name in enumerate("RGB"):
        assert_matches(maps.sel(c=name).values, reference_ncc(a[..., i], b[..., i], WINDOW))
    record = read_provenance(str(tmp_path / "png.zarr"))["inputs"]["reference"]
    assert (record["channels"], record["dims"], record["shape"]) == ("separate", ["c", "y", "x"], [3, *SHAPE])


def _alpha(seed):
    """An alpha channel with a transparent rectangle (NaN windows), scattered transparent pixels and
    semi-transparent ones (1 and 128: valid, only alpha 0 is invalid)."""
    rng = np.random.default_rng(seed)
    alpha = rng.choice(np.array([1, 128, 255], dtype=np.uint8), size=SHAPE)
    alpha[rng.random(SHAPE) < 0.1] = 0
    alpha[20 + seed:45 + seed, 30:90] = 0
    return alpha


def test_alpha_zero_pixels_of_an_rgba_png_are_invalid(tmp_path):
    a, b = _rgb(seed=13)
    alphas = _alpha(0), _alpha(12)
    pngs = [_write(tmp_path, f"{k}.png", np.concatenate([x, al[..., None]], axis=-1))
            for k, x, al in zip("ab", (a, b), alphas)]
    assert iio.imread(pngs[0]).shape == SHAPE + (4,)
    info = inspect_input(str(pngs[0]))
    assert (info.shape, info.channels, info.alpha) == (SHAPE, "luminance", True)
    _, from_png = _run(tmp_path, "png", *pngs, **BLOCKS)
    expected = reference_ncc(_luminance(a), _luminance(b), WINDOW, invalid=(alphas[0] == 0) | (alphas[1] == 0))
    assert np.isnan(expected).any() and np.isfinite(expected).any()
    assert_matches(from_png.values, expected)
    record = read_provenance(str(tmp_path / "png.zarr"))["inputs"]["reference"]
    assert record["alpha_mask"] is True


def test_a_reference_mask_beside_an_alpha_channel_is_a_one_line_error(tmp_path):
    a, b = _rgb(seed=16)
    image = _write(tmp_path, "a.png", np.concatenate([a, _alpha(1)[..., None]], axis=-1))
    other = _write(tmp_path, "b.png", b)
    mask = write_array(str(tmp_path / "mask.zarr"), np.ones(SHAPE, dtype=bool))
    out = tmp_path / "out.zarr"
    _one_line_error({"reference": str(image), "moving": str(other), "output": str(out), "reference_mask": mask},
                    image, mask, match="alpha channel")
    assert not out.exists()


@pytest.mark.parametrize("colour", [False, True], ids=["grey", "rgb"])
def test_a_jpeg_pair_equals_its_decoded_pixels_from_zarr(tmp_path, colour):
    a, b = _rgb(seed=19) if colour else _grey(seed=19)
    jpegs = [_write(tmp_path, f"{k}.jpg", x, quality=80) for k, x in zip("ab", (a, b))]
    decoded = [iio.imread(path) for path in jpegs]
    assert decoded[0].shape == a.shape and not np.array_equal(decoded[0], a)  # lossy: the file is the truth
    if colour:
        decoded = [_luminance(x) for x in decoded]
    _, from_jpeg = _run(tmp_path, "jpeg", *jpegs, **BLOCKS)
    assert_matches(from_jpeg.values, _zarr_run(tmp_path, "zarr", *decoded, **BLOCKS).values, 1e-6)
    assert_matches(from_jpeg.values, reference_ncc(*decoded, WINDOW))


def test_provenance_and_up_to_date_follow_the_image_bytes(tmp_path):
    a, b = _rgb(seed=22)
    pngs = [_write(tmp_path, f"{k}.png", x) for k, x in zip("ab", (a, b))]
    summary, first = _run(tmp_path, "out", *pngs)
    assert summary.pairs[0].action == "fresh"
    inputs = read_provenance(str(tmp_path / "out.zarr"))["inputs"]
    for role, path in zip(("reference", "moving"), pngs):
        assert inputs[role]["format"] == "image" and inputs[role]["url"] == str(path)
        assert inputs[role]["channels"] == "luminance" and inputs[role]["dims"] == ["y", "x"]
    before = fingerprint(str(pngs[0]))
    os.utime(pngs[0], (1e9, 1e9))  # touched, same bytes: still up to date
    assert fingerprint(str(pngs[0])) == before
    summary, _ = _run(tmp_path, "out", *pngs)
    assert summary.pairs[0].action == "up to date"
    changed = a.copy()
    changed[30:60, 40:100] = 255 - changed[30:60, 40:100]
    _write(tmp_path, "a.png", changed)
    assert fingerprint(str(pngs[0])) != before
    summary, second = _run(tmp_path, "out", *pngs)
    assert summary.pairs[0].action != "up to date"
    assert_matches(second.values, reference_ncc(_luminance(changed), _luminance(b), WINDOW))
    assert not np.array_equal(first.values, second.values, equal_nan=True)


def test_a_rewrite_keeping_size_and_mtime_is_decoded_anew(tmp_path):
    """``cp -p``, ``rsync -a`` or ``tar x`` put back a file with its old mtime: the fingerprint (the bytes)
    sees the change and the run recomputes; the map must be that of the new pixels."""
    a, b = _grey(seed=25)
    ref = _write(tmp_path, "a.png", a, compress_level=0)  # stored, not deflated: the size depends on the shape
    other = _write(tmp_path, "b.png", b)
    stat = os.stat(ref)
    _, first = _run(tmp_path, "out", ref, other)
    changed = a.copy()
    changed[20:40, 30:60] = 255 - changed[20:40, 30:60]
    _write(tmp_path, "a.png", changed, compress_level=0)
    assert os.stat(ref).st_size == stat.st_size
    os.utime(ref, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    summary, second = _run(tmp_path, "out", ref, other)
    assert summary.pairs[0].action == "fresh"  # the bytes changed: recomputed
    assert_matches(second.values, reference_ncc(changed, b, WINDOW))


def test_an_image_above_the_pixel_limit_is_refused_naming_the_limit_and_ingest(tmp_path, monkeypatch):
    a, b = _grey(seed=28)
    pngs = [_write(tmp_path, f"{k}.png", x) for k, x in zip("ab", (a, b))]
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 5000)  # read when a reader is made, not at import
    out = tmp_path / "out.zarr"
    message = _one_line_error({"reference": str(pngs[0]), "moving": str(pngs[1]), "output": str(out)}, pngs[0],
                              match="lncc ingest")
    assert "5,000" in message and "12,288" in message, message
    assert not out.exists()
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", SHAPE[0] * SHAPE[1])  # exactly at the limit: read
    _, from_png = _run(tmp_path, "at-limit", *pngs)
    assert_matches(from_png.values, reference_ncc(a, b, WINDOW))


def test_lncc_ingest_converts_an_image_above_the_pixel_limit(tmp_path, monkeypatch):
    from pipeline.job import ingest

    a, b = _grey(seed=31)
    png = _write(tmp_path, "a.png", a)
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 5000)
    with pytest.raises(InputError, match="lncc ingest"):
        inspect_input(str(png))
    ingest(str(png), str(tmp_path / "a.zarr"))
    other = write_array(str(tmp_path / "b.zarr"), b)
    _, from_ingest = _run(tmp_path, "out", tmp_path / "a.zarr", other)
    assert_matches(from_ingest.values, reference_ncc(a, b, WINDOW))


def _bad_inputs(tmp):
    """(name, reference, moving, settings, files the message names, words it says) for inputs refused up front."""
    a, b = _grey(seed=34)
    good = _write(tmp, "good.png", b)
    text = tmp / "text.png"
    text.write_text("not an image\n")
    narrow = _write(tmp, "narrow.png", a[:, :120])
    rgb = _write(tmp, "rgb.png", np.stack([a] * 3, axis=-1))
    grey = _write(tmp, "grey.png", a)
    return [
        ("text", text, good, {}, [text], "is not a readable image"),
        ("missing", tmp / "missing.png", good, {}, [tmp / "missing.png"], "does not exist"),
        ("narrow", good, narrow, {}, [good, narrow], "same shape"),
        ("separate-vs-grey", rgb, grey, {"channels": "separate"}, [rgb, grey], "same shape"),
        ("index-of-grey", grey, good, {"channels": 1}, [grey], "grey-level image"),
    ]


def test_bad_image_inputs_are_one_line_errors_and_nothing_is_written(tmp_path):
    for name, reference, moving, settings, named, words in _bad_inputs(tmp_path):
        out = tmp_path / f"out-{name}.zarr"
        _one_line_error({"reference": str(reference), "moving": str(moving), "output": str(out), **settings},
                        *named, match=words)
        assert not out.exists(), name


def test_an_rgb_image_and_a_grey_one_make_a_pair_after_the_luminance(tmp_path):
    a, b = _rgb(seed=37)
    rgb = _write(tmp_path, "a.png", a)
    grey = _write(tmp_path, "b.png", b[..., 2])
    _, from_png = _run(tmp_path, "out", rgb, grey)
    assert_matches(from_png.values, reference_ncc(_luminance(a), b[..., 2], WINDOW))


def _truncated(tmp_path):
    a, b = _grey(seed=40)
    good = _write(tmp_path, "a.png", a)
    cut = _write(tmp_path, "b.png", b)
    data = cut.read_bytes()
    cut.write_bytes(data[: len(data) // 2])  # the header stays whole: the damage shows when decoding
    return a, b, good, cut


def test_a_truncated_png_fails_the_run_naming_the_file_and_a_fixed_file_runs(tmp_path):
    a, b, good, cut = _truncated(tmp_path)
    out = tmp_path / "out.zarr"
    config = {"reference": str(good), "moving": str(cut), "output": str(out)}
    _one_line_error(config, cut, match="cannot be decoded")
    assert not out.exists() or read_provenance(str(out)).get("status") != "complete"
    _write(tmp_path, "b.png", b)  # rewritten whole: the rerun computes the map
    summary, fixed = _run(tmp_path, "out", good, cut)
    assert summary.pairs[0].action != "up to date"
    assert_matches(fixed.values, reference_ncc(a, b, WINDOW))


def test_a_truncated_png_writes_nothing(tmp_path):
    _, _, good, cut = _truncated(tmp_path)
    out = tmp_path / "out.zarr"
    _one_line_error({"reference": str(good), "moving": str(cut), "output": str(out)}, cut, match="cannot be decoded")
    assert not out.exists(), sorted(os.listdir(out))


def test_image_readers_pickle_and_read_the_same(tmp_path):
    """What a worker process receives: the reader, not the decoded pixels; it decodes the file itself."""
    a, _ = _rgb(seed=43)
    grey, _ = _grey(seed=43)
    alpha = _alpha(3)
    rgba = _write(tmp_path, "rgba.png", np.concatenate([a, alpha[..., None]], axis=-1))
    plain = _write(tmp_path, "grey.png", grey)
    base = ImageSource(str(plain))
    assert base.chunks == SHAPE and base.channel_axis is None
    copy = pickle.loads(pickle.dumps(base))
    assert len(pickle.dumps(base)) < grey.nbytes // 4  # the pixels do not travel
    np.testing.assert_array_equal(copy[10:50, 40:120], grey[10:50, 40:120])
    out = np.empty((5, 6), dtype=grey.dtype)
    copy.read_into([slice(3, 8), slice(9, 15)], out)
    np.testing.assert_array_equal(out, grey[3:8, 9:15])
    info = inspect_input(str(rgba))
    for view, expected in ((source_of(info), _luminance(a)), (source_of(alpha_mask(info)), alpha > 0)):
        assert isinstance(view, ChannelView)
        copy = pickle.loads(pickle.dumps(view))
        assert copy.shape == view.shape == SHAPE and copy.dtype == view.dtype == expected.dtype
        np.testing.assert_array_equal(copy[7:60, 11:100], view[7:60, 11:100])
        np.testing.assert_array_equal(copy[7:60, 11:100], expected[7:60, 11:100])


def test_a_cmyk_jpeg_is_read_as_colour_or_refused_never_with_k_as_alpha(tmp_path):
    from PIL import Image

    a, b = _rgb(seed=46)
    paths = [tmp_path / f"{k}.jpg" for k in "ab"]
    for path, x in zip(paths, (a, b)):
        Image.fromarray(x).convert("CMYK").save(path, quality=90)  # pillow's conversion: K = 0 everywhere
    assert Image.open(paths[0]).mode == "CMYK"
    try:
        info = inspect_input(str(paths[0]))
    except InputError as exc:  # refused, saying why: fine
        assert "CMYK" in str(exc) and "\n" not in str(exc)
        return
    assert not info.alpha, "the K channel is read as an alpha mask"
    _, from_jpeg = _run(tmp_path, "out", *paths)
    assert np.isfinite(from_jpeg.values).mean() > 0.9


def test_open_image_reads_as_a_run_reads(tmp_path):
    """The public open_image: lazy, the channel policy and alpha as a run applies them, the same map."""
    from pipeline import local_ncc, open_image

    a, b = _grey(seed=31)
    alpha = np.full(a.shape, 255, np.uint8)
    alpha[:10, :20] = 0
    rgba = np.dstack([a, a, np.roll(a, 2, 1), alpha])
    iio.imwrite(tmp_path / "a.png", rgba)
    iio.imwrite(tmp_path / "b.png", b)
    left = open_image(str(tmp_path / "a.png"))
    assert left.dims == ("y", "x") and left.dtype == np.float32 and hasattr(left.data, "dask")
    valid = open_image(str(tmp_path / "a.png"), alpha=True)
    np.testing.assert_array_equal(valid.values, alpha > 0)
    ncc = local_ncc(left, open_image(str(tmp_path / "b.png")), WINDOW, reference_mask=valid)
    _, ran = _run(tmp_path, "out", tmp_path / "a.png", tmp_path / "b.png")
    np.testing.assert_allclose(ncc.values, ran.values, rtol=0, atol=1e-6)
    with pytest.raises(InputError, match="no alpha channel"):
        open_image(str(tmp_path / "b.png"), alpha=True)
