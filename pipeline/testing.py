"""Seeded sample data and the independent reference implementation.

Used by the tests, the benchmark, the demo and the kill-trial scripts, so that all of them see
the same images. Nothing here is on the production path.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .core.boundary import NUMPY_PAD_MODE

__all__ = [
    "reference_ncc",
    "camera",
    "stereo_pair",
    "sample_pair",
    "sample_crop",
    "textured",
    "cast_to",
    "write_config",
    "fourier_shifted",
    "moved_capture",
]



def reference_ncc(a: np.ndarray, b: np.ndarray, window: int, boundary: str = "reflect", flat: float = 0.0,
                  invalid: np.ndarray | None = None, min_valid: float = 0.5, extras: bool = False):
    """Two-pass per-window NCC in float64: the textbook formula, window by window.

    Slow and memory hungry (it materialises every window); meant for small
    test images. Flat means all (valid) values of the window are equal, in
    either image. With ``invalid`` (True = nodata in either image, unpadded),
    each window uses only its valid pixels and is NaN with fewer than
    ``min_valid`` of them. ``extras`` also returns valid fraction and stds.
    """
    r = window // 2
    widths = [(0, 0)] * (a.ndim - 2) + [(r, r)] * 2
    if invalid is None:
        invalid = np.zeros(np.shape(a), dtype=bool)
    pad_mode = "constant" if boundary in ("constant", "nan") else NUMPY_PAD_MODE[boundary]
    pv = ~np.pad(np.asarray(invalid, dtype=bool), widths, mode=pad_mode)
    pa = np.pad(np.asarray(a, dtype=np.float64), widths, mode=NUMPY_PAD_MODE[boundary])
    pb = np.pad(np.asarray(b, dtype=np.float64), widths, mode=NUMPY_PAD_MODE[boundary])
    pa = np.where(pv, pa, 0.0)
    pb = np.where(pv, pb, 0.0)
    axes = (-2, -1)
    wa = sliding_window_view(pa, (window, window), axis=axes)
    wb = sliding_window_view(pb, (window, window), axis=axes)
    wv = sliding_window_view(pv, (window, window), axis=axes)
    count = wv.sum(axis=axes)
    with np.errstate(invalid="ignore", divide="ignore"):
        ma = (wa * wv).sum(axis=axes, keepdims=True) / count[..., None, None]
        mb = (wb * wv).sum(axis=axes, keepdims=True) / count[..., None, None]
        da = np.where(wv, wa - ma, 0.0)
        db = np.where(wv, wb - mb, 0.0)
        cov = (da * db).sum(axis=axes) / count
        sa = np.sqrt((da * da).sum(axis=axes) / count)
        sb = np.sqrt((db * db).sum(axis=axes) / count)
        out = cov / (sa * sb)
    flat_a = np.where(wv, wa, np.inf).min(axis=axes) == np.where(wv, wa, -np.inf).max(axis=axes)
    flat_b = np.where(wv, wb, np.inf).min(axis=axes) == np.where(wv, wb, -np.inf).max(axis=axes)
    out[flat_a | flat_b] = flat
    too_few = (count == 0) | (count < min_valid * window * window - 1e-9)
    out[too_few] = np.nan
    sa[too_few] = np.nan
    sb[too_few] = np.nan
    results = [out, count / float(window * window), sa, sb]
    if boundary == "nan":
        for res in results:
            res[..., :r, :] = np.nan
            res[..., res.shape[-2] - r :, :] = np.nan
            res[..., :, :r] = np.nan
            res[..., :, res.shape[-1] - r :] = np.nan
    return tuple(results) if extras else out


def camera() -> np.ndarray:
    """The 512 x 512 8-bit 'cameraman' photograph bundled with scikit-image."""
    from skimage import data

    return data.camera()


def stereo_pair() -> tuple[np.ndarray, np.ndarray]:
    """The Middlebury 'motorcycle' stereo pair bundled with scikit-image, as 8-bit grey.

    Returns left and right views (500 x 741); where the disparity is small the
    two views agree and the local NCC is high.
    """
    from skimage import data
    from skimage.color import rgb2gray

    left, right, _ = data.stereo_motorcycle()
    to_u8 = lambda im: np.round(rgb2gray(im) * 255).astype(np.uint8)  # noqa: E731
    return to_u8(left), to_u8(right)


def fourier_shifted(image: np.ndarray, shift, margin: int) -> np.ndarray:
    """``image`` shifted by ``shift`` = (dy, dx) px with a Fourier shift, ``margin`` px cropped from every side.

    The Fourier shift is exact for the periodic image; cropping a margin larger than the shift leaves only
    pixels whose content did not wrap around. The reference for that shift is ``image`` cropped alike.
    """
    from scipy.ndimage import fourier_shift

    shifted = np.fft.ifftn(fourier_shift(np.fft.fftn(np.asarray(image, dtype=np.float64)), shift)).real
    return shifted[..., margin:-margin, margin:-margin]


def moved_capture(shift=(5.4, -3.7), seed: int = 0) -> tuple[np.ndarray, np.ndarray, tuple[slice, slice]]:
    """Two captures of one scene, the second moved by a subpixel shift, with something in it changed.

    The scene is the left view of :func:`stereo_pair`. The second capture sees it moved by ``-shift`` (so
    ``shift`` registers it onto the first, scikit-image's convention), with a gain of 0.85, an offset of
    +12 grey levels, sensor noise (sigma 2) and one region replaced by other content (a change).

    Returns
    -------
    (before, after, changed)
        uint8 images (460 x 701) and the changed region, in the first capture's pixels.
    """
    rng = np.random.default_rng(seed)
    scene = stereo_pair()[0].astype(np.float64)
    margin = 20
    before = scene[margin:-margin, margin:-margin] + rng.normal(0.0, 2.0, (scene.shape[0] - 2 * margin,
                                                                          scene.shape[1] - 2 * margin))
    after = 0.85 * fourier_shifted(scene, (-shift[0], -shift[1]), margin) + 12.0
    changed = (slice(300, 400), slice(80, 220))
    moved = tuple(slice(int(round(r.start - shift[k])), int(round(r.stop - shift[k]))) for k, r in enumerate(changed))
    after[moved] = 0.85 * np.rot90(scene[60:160, 400:540], 2) + 12.0  # other content where the change is
    after += rng.normal(0.0, 2.0, after.shape)
    as_u8 = lambda im: np.clip(np.round(im), 0, 255).astype(np.uint8)  # noqa: E731
    return as_u8(before), as_u8(after), changed


def cast_to(image: np.ndarray, dtype) -> np.ndarray:
    """Map a [0, 255]-range image onto ``dtype``'s natural range (clipping integers)."""
    dtype = np.dtype(dtype)
    x = np.asarray(image, dtype=np.float64)
    if dtype.kind == "f":
        return x.astype(dtype)
    scale = {1: 1.0, 2: 200.0}.get(dtype.itemsize, 1.0)
    offset = -30000.0 if dtype.kind == "i" and dtype.itemsize >= 2 else (-128.0 if dtype.kind == "i" else 0.0)
    info = np.iinfo(dtype)
    return np.clip(np.round(x * scale + offset), info.min, info.max).astype(dtype)


def sample_pair(shape: tuple[int, ...], dtype="uint8", seed: int = 0,
                noise: float = 6.0) -> tuple[np.ndarray, np.ndarray]:
    """A realistic pair: the camera photograph (tiled to ``shape``) and a noisy,
    slightly shifted copy with an affine intensity change.

    ``shape`` is ``(y, x)`` or ``(t, y, x)`` (each frame shifted differently).
    """
    rng = np.random.default_rng(seed)
    base = camera().astype(np.float64)
    frames = shape[0] if len(shape) == 3 else 1
    h, w = shape[-2:]
    ref_frames, mov_frames = [], []
    for _ in range(frames):
        reps = (-(-(h + 8) // base.shape[0]), -(-(w + 8) // base.shape[1]))
        tiled = np.tile(base, reps)
        dy, dx = rng.integers(0, 8, size=2)
        ref = tiled[4 : 4 + h, 4 : 4 + w]
        mov = tiled[dy : dy + h, dx : dx + w] * 0.8 + 20.0 + rng.normal(0.0, noise, size=(h, w))
        ref_frames.append(ref)
        mov_frames.append(np.clip(mov, 0, 255))
    ref = np.stack(ref_frames) if len(shape) == 3 else ref_frames[0]
    mov = np.stack(mov_frames) if len(shape) == 3 else mov_frames[0]
    return cast_to(ref, dtype), cast_to(mov, dtype)


def sample_crop(shape: tuple[int, ...], dtype="uint8", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A :func:`sample_pair` crop of ``shape`` at a seed-dependent place in the photograph."""
    rng = np.random.default_rng(seed)
    oy, ox = (int(v) for v in rng.integers(0, 400, size=2))
    h, w = shape[-2:]
    ref, mov = sample_pair(tuple(shape[:-2]) + (h + oy, w + ox), dtype, seed)
    return ref[..., oy:, ox:], mov[..., oy:, ox:]


def textured(shape: tuple[int, ...], dtype="float64", seed: int = 0, flat_fraction: float = 0.3,
             levels: int | None = None) -> np.ndarray:
    """Random image with flat rectangles and near-flat (one pixel off by one) spots.

    Hard cases for a local-statistics kernel: exact flats, windows that differ
    by one grey level, and texture next to flats.
    """
    rng = np.random.default_rng(seed)
    h, w = shape[-2:]
    x = rng.integers(0, levels, size=shape).astype(np.float64) if levels else rng.normal(100.0, 20.0, size=shape)
    n_rect = max(1, int(flat_fraction * 6))
    for _ in range(n_rect):
        y0, x0 = rng.integers(0, max(1, h - 2)), rng.integers(0, max(1, w - 2))
        hh, ww = rng.integers(1, max(2, h // 2)), rng.integers(1, max(2, w // 2))
        value = float(rng.integers(0, 200))
        x[..., y0 : y0 + hh, x0 : x0 + ww] = value
        cy, cx = min(y0 + hh // 2, h - 1), min(x0 + ww // 2, w - 1)
        if rng.random() < 0.5 and hh > 2 and ww > 2:  # a nearly flat patch: one pixel one level up
            x[..., cy, cx] = value + 1.0
    return cast_to(x, dtype) if np.dtype(dtype).kind != "f" else x.astype(dtype)


def write_config(path, **settings):
    """A YAML config at ``path`` with these top-level keys (values written as JSON, which YAML reads)."""
    import json

    path.write_text("".join(f"{key}: {json.dumps(value)}\n" for key, value in settings.items()))
    return path
