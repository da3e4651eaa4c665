"""`lncc preview`: real runs' outputs drawn to PNG files, read back and checked pixel by pixel."""

from __future__ import annotations

import imageio.v3 as iio
import matplotlib
import numpy as np
import pytest
import xarray as xr

from pipeline.config import parse_config
from pipeline.errors import InputError
from pipeline.io import write_array
from pipeline.io.writers.preview import MISSING_COLOUR, NCC_COLORMAP
from pipeline.job import preview, run
from pipeline.testing import sample_pair
from support import invoke_cli


def _halves(tmp_path, frames: int | None = None):
    """A pair made to be +1 in its left half and -1 in its right (the moving image negated there), with a NaN
    block (nodata) in the middle of the left half."""
    a, _ = sample_pair((200, 320), "uint8", seed=3)
    b = a.astype(np.int16).copy()
    b[:, 160:] = 255 - b[:, 160:]
    b = b.astype(np.uint8)
    a = a.copy()
    a[80:120, 40:80] = 0  # nodata
    if frames:
        a, b = np.stack([a] * frames), np.stack([b] * frames)
    urls = [write_array(str(tmp_path / f"{k}.zarr"), x) for k, x in zip("ab", (a, b))]
    out = tmp_path / "out.zarr"
    run(parse_config({"reference": urls[0], "moving": urls[1], "output": str(out), "window": 5, "nodata": 0}))
    return out, xr.open_zarr(out)["ncc"].values


def _rgb(colour) -> np.ndarray:
    return np.round(np.asarray(colour[:3]) * 255)


def _find(png: np.ndarray, colour, tolerance=6) -> np.ndarray:
    return (np.abs(png[..., :3].astype(int) - _rgb(colour)) <= tolerance).all(-1)


def test_a_preview_shows_plus_one_minus_one_and_missing_in_their_colours(tmp_path):
    out, ncc = _halves(tmp_path)
    assert np.nanmin(ncc[:, 170:]) < -0.99 and np.nanmax(ncc[:, :150]) > 0.99 and np.isnan(ncc[90:110, 50:70]).all()
    png = tmp_path / "p.png"
    summary = preview(str(out), str(png), size=900)
    image = iio.imread(png)
    assert max(image.shape[:2]) in (899, 900, 901) and summary.factor == 1
    cmap = matplotlib.colormaps[NCC_COLORMAP]
    plus, minus = _find(image, cmap(1.0)), _find(image, cmap(0.0))
    nan = _find(image, MISSING_COLOUR, 2)
    assert plus.sum() > 2000 and minus.sum() > 2000 and nan.sum() > 200  # each a sizeable area of the map
    # +1 sits left of -1 in the picture, as in the map, and the NaN block inside the +1 half
    assert np.nonzero(plus)[1].mean() < np.nonzero(minus)[1].mean()
    ys, xs = np.nonzero(nan)
    assert np.nonzero(plus)[1].min() <= xs.mean() <= np.nonzero(minus)[1].min()


def test_with_inputs_frames_and_size(tmp_path):
    out, _ = _halves(tmp_path, frames=6)
    for args, words in (([], "frames 0"), (["--frame", "4"], "frames 4"), (["--frames", "0:6:2"], "frames 0, 2, 4"),
                        (["--with-inputs", "--size", "600"], "frames 0")):
        png = tmp_path / f"p{len(args)}.png"
        result = invoke_cli("preview", str(out), "-o", str(png), *args, cwd=tmp_path)
        assert result.returncode == 0 and words in result.stdout, result.stderr
        image = iio.imread(png)
        assert abs(max(image.shape[:2]) - (600 if "--size" in args else 1600)) <= 1, image.shape
    for args, words in ((["--frame", "9"], "--frame 9"), (["--frames", "7:9"], "selects no frame"),
                        (["--size", "10"], "--size")):
        result = invoke_cli("preview", str(out), "-o", str(tmp_path / "bad.png"), *args, cwd=tmp_path)
        assert result.returncode == 2 and words in result.stderr, result.stderr
    assert not (tmp_path / "bad.png").exists()


def test_a_preview_of_a_coarse_level_is_the_nan_aware_block_mean(tmp_path):
    """At a reduction of 4, the picture is drawn from 4 x 4 block means that skip NaN."""
    from pipeline.job.preview import _coarse

    out, ncc = _halves(tmp_path)
    coarse = _coarse(xr.open_zarr(out)["ncc"], 4, ("y", "x"))
    blocks = ncc.reshape(50, 4, 80, 4)
    with np.errstate(invalid="ignore"), pytest.warns(RuntimeWarning):
        want = np.nanmean(blocks, axis=(1, 3))
    np.testing.assert_allclose(coarse, want, rtol=0, atol=1e-6)
    with pytest.raises(InputError, match="not an lncc output"):
        preview(str(tmp_path / "a.zarr"), str(tmp_path / "x.png"))
