"""The Gauss-Newton maths of registration on tiles, and the local method: a shift per tile of a grid.

One numba pass over a tile (:func:`tile_sums`) warps the moving region with the Lanczos-3 taps of
:mod:`pipeline.core.interpolation`, differentiates the warp analytically and accumulates in float64 the
sums that give the normal equations of ``ref ~ gain * W(s) + offset``, the texture tests and the NCC.
"""

from __future__ import annotations

import builtins
import math
from dataclasses import dataclass

import numba
import numpy as np
from scipy import fft as sfft

from ..errors import InputError
from .interpolation import SUPPORT as _SUPPORTS

__all__ = ["Field", "estimate_field", "estimate_field_frames", "tile_sums", "gn_step", "is_varied", "is_shared",
           "ncc_of", "read_checked", "read_smoothed", "check_shape", "check_int", "check_frames", "SUPPORT", "BLUR",
           "HALO", "BORDER", "TEXTURE", "SHARED"]

#: Half-width of the Lanczos-3 kernel: a warped pixel reads source taps ``-2 .. 3`` around its position.
SUPPORT = _SUPPORTS["lanczos3"]
#: The smallest ratio of the eigenvalues of a tile's gradient block (below it, an edge alone).
TEXTURE = 0.02
#: Sigma (px) of the Gaussian smoothing both images before the fit: interpolating the noisy moving image
#: lowers its noise variance by a fraction-dependent amount, pulling the optimum towards half pixels (0.03 px
#: on the camera photograph, noise sigma 3), and Lanczos-3 errs near Nyquist; smoothing leaves 0.007 px.
BLUR = 0.8
#: Radius of the smoothing kernel (px): the halo each smoothed read adds around its region.
HALO = 3
_BLUR_TAPS = np.exp(-0.5 * (np.arange(-HALO, HALO + 1) / BLUR) ** 2)
_BLUR_TAPS /= _BLUR_TAPS.sum()
#: The gradient correlation of reference and warp a textured tile needs along each axis (about the fraction
#: of the gradient energy that is signal, not noise: pure noise gives about 1 / sqrt(pixels)).
SHARED = 0.25
#: The border (px) of reference tiles: the reach of their gradient, the derivative of the Lanczos-3
#: interpolant at whole pixels (the same operator the warp's derivative is, so the two compare).
BORDER = 2
#: Relative size under which a variance counts as zero (rounding, not texture).
ZERO = 1e-8


@numba.njit(cache=True, nogil=True)
def _lanczos(x):
    """Lanczos-3 at ``x`` and its derivative."""
    if abs(x) >= 3.0 or abs(x) < 1e-12:  # outside the support, or at its centre (sin(u) / u is 1 there)
        return (0.0 if abs(x) >= 3.0 else 1.0), 0.0
    u, v = math.pi * x, math.pi * x / 3.0
    su, sv = math.sin(u) / u, math.sin(v) / v
    du = math.pi * (u * math.cos(u) - math.sin(u)) / (u * u)
    dv = math.pi / 3.0 * (v * math.cos(v) - math.sin(v)) / (v * v)
    return su * sv, du * sv + su * dv


@numba.njit(cache=True, nogil=True)
def _weights(a, w, dw):
    """The 6 normalised taps at fraction ``a`` (as interpolation.taps) and their derivatives in ``a``."""
    total, dtotal = 0.0, 0.0
    for q in range(6):
        w[q], dw[q] = _lanczos(a - (q - 2))
        total, dtotal = total + w[q], dtotal + dw[q]
    for q in range(6):
        dw[q] = (dw[q] * total - w[q] * dtotal) / (total * total)
        w[q] = w[q] / total


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})  # vectorised sums, NaN tests kept
def tile_sums(ref, mov, cy, cx, center, out):
    """Fill ``out`` (6 x 5) with one tile's sums: ``ref[B + i, B + j]`` against ``mov`` at ``(i + cy, j + cx)``.

    ``ref`` has a border ``B =`` :data:`BORDER` (for its gradient). ``out[:5]`` sums ``v v^T`` for ``v = (dW/dsy,
    dW/dsx, W - center, 1, ref - center)`` (``c = origin - s``: ``dW/ds = -dW/dc``); ``out[5, :4]`` sums ``ref_y
    W_y, ref_x W_x, ref_y**2, ref_x**2``. Pixels with a NaN (reference, neighbour or tap) are left out.
    """
    h, w = ref.shape[0] - 2 * BORDER, ref.shape[1] - 2 * BORDER
    mh, mw = mov.shape
    ny, nx = math.floor(cy), math.floor(cx)
    wy, dwy, wx, dwx = np.empty(6), np.empty(6), np.empty(6), np.empty(6)
    _weights(cy - ny, wy, dwy)
    _weights(cx - nx, wx, dwx)
    w0, d0 = np.empty(6), np.empty(6)
    _weights(0.0, w0, d0)  # taps k = -2 .. 3 at whole pixels; the derivative's k = 3 tap is 0
    tx = np.empty((h + 5, w))
    dx = np.empty((h + 5, w))
    for r in range(h + 5):
        row = ny - 2 + r
        for j in range(w):
            col = nx - 2 + j
            if row < 0 or row >= mh or col < 0 or col + 5 >= mw:
                tx[r, j] = np.nan
                dx[r, j] = np.nan
                continue
            a, b = 0.0, 0.0
            for q in range(6):
                value = mov[row, col + q]
                a += wx[q] * value
                b += dwx[q] * value
            tx[r, j] = a
            dx[r, j] = b
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = s8 = s9 = s10 = s11 = s12 = s13 = s14 = 0.0
    c0 = c1 = c2 = c3 = 0.0
    for i in range(h):
        for j in range(w):
            rv = ref[i + BORDER, j + BORDER]
            ry, rx = 0.0, 0.0
            for q in range(5):
                ry += d0[q] * ref[i + q, j + BORDER]
                rx += d0[q] * ref[i + BORDER, j + q]
            v, gy, gx = 0.0, 0.0, 0.0
            for p in range(6):
                t = tx[i + p, j]
                v += wy[p] * t
                gy += dwy[p] * t
                gx += wy[p] * dx[i + p, j]
            ok = (rv == rv) & (ry == ry) & (rx == rx) & (v == v) & (gx == gx)  # selects, not branches: vectorises
            one, rv, ry, rx = (1.0, rv, ry, rx) if ok else (0.0, center, 0.0, 0.0)
            v, gy, gx = (v, gy, gx) if ok else (center, 0.0, 0.0)
            c0, c1, c2, c3 = c0 + ry * gy, c1 + rx * gx, c2 + ry * ry, c3 + rx * rx
            gy, gx, v, rv = -gy, -gx, v - center, rv - center
            s0, s1, s2, s3, s4 = s0 + gy * gy, s1 + gy * gx, s2 + gy * v, s3 + gy, s4 + gy * rv
            s5, s6, s7, s8, s9 = s5 + gx * gx, s6 + gx * v, s7 + gx, s8 + gx * rv, s9 + v * v
            s10, s11, s12, s13, s14 = s10 + v, s11 + v * rv, s12 + one, s13 + rv, s14 + rv * rv
    s = (s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11, s12, s13, s14)
    k = 0
    for i in range(5):
        for j in range(i, 5):
            out[i, j] = out[j, i] = s[k]
            k += 1
    out[5, 0], out[5, 1], out[5, 2], out[5, 3], out[5, 4] = c0, c1, c2, c3, 0.0
    return out


@numba.njit(cache=True, nogil=True)
def gn_step(m, gain, offset, refit, out):
    """The Gauss-Newton step of ``(sy, sx, gain, offset)`` from the sums ``m``; False when singular.

    With ``refit``, gain and offset first jump to their least-squares values at the current shift (else the
    wrong gain scales the shift's Jacobian, and the steps converge linearly).
    """
    n = max(m[3, 3], 1.0)
    mw, mr, vw = m[2, 3] / n, m[4, 3] / n, m[2, 2] / n - (m[2, 3] / n) ** 2
    g = (m[2, 4] / n - mr * mw) / vw if refit and vw > 0 else gain
    o = mr - g * mw if refit and vw > 0 else offset
    gain, offset, jump = g, o, (g - gain, o - offset)
    d = np.array([gain, gain, 1.0, 1.0])
    a = np.empty((4, 5))
    for i in range(4):
        for j in range(4):
            a[i, j] = d[i] * d[j] * m[i, j]
        a[i, 4] = d[i] * (m[i, 4] - gain * m[i, 2] - offset * m[i, 3])
    scale = np.array([a[0, 0], a[1, 1], a[2, 2], a[3, 3]])
    for c in range(4):  # elimination without pivoting, as J^T J is positive semidefinite
        if not a[c, c] > 1e-12 * scale[c]:  # a pivot lost to rounding: singular
            return False
        for r in range(c + 1, 4):
            f = a[r, c] / a[c, c]
            for j in range(c, 5):
                a[r, j] -= f * a[c, j]
    for c in range(3, -1, -1):
        out[c] = a[c, 4] / a[c, c]
        for j in range(c + 1, 4):
            out[c] -= a[c, j] * out[j] / a[c, c]
    out[2], out[3] = out[2] + jump[0], out[3] + jump[1]
    return np.isfinite(out).all()


@numba.njit(cache=True, nogil=True)
def is_varied(m, pixels, center):
    """Whether both images of a tile vary enough to locate it: a quarter of ``pixels`` valid, variances above
    the rounding of their mean squares, gradient eigenvalues within a ratio :data:`TEXTURE` (not an edge)."""
    n = m[3, 3]
    if n < max(16.0, 0.25 * pixels):
        return False
    for k in (2, 4):
        mean = m[k, 3] / n
        var = m[k, k] / n - mean * mean
        if not var > ZERO * ((mean + center) ** 2 + var):
            return False
    half = 0.5 * (m[0, 0] + m[1, 1])
    root = math.sqrt(0.25 * (m[0, 0] - m[1, 1]) ** 2 + m[0, 1] ** 2)
    return half - root > TEXTURE * (half + root)


@numba.njit(cache=True, nogil=True)
def is_shared(m):
    """Whether the gradients of reference and warp correlate by :data:`SHARED` along each axis: noise, smooth
    shading and a textured tile at a wrong shift have gradients that locate nothing."""
    return m[5, 0] > SHARED * math.sqrt(m[5, 2] * m[0, 0]) and m[5, 1] > SHARED * math.sqrt(m[5, 3] * m[1, 1])


@numba.njit(cache=True, nogil=True)
def ncc_of(m):
    """The NCC of reference and warp from a tile's sums ``m`` (clipped to [-1, 1]; NaN when either is flat)."""
    n = max(m[3, 3], 1.0)
    mr, mw = m[4, 3] / n, m[2, 3] / n
    vr, vw = m[4, 4] / n - mr * mr, m[2, 2] / n - mw * mw
    if m[3, 3] < 2 or not (vr > 0 and vw > 0):
        return np.nan
    return min(1.0, max(-1.0, (m[2, 4] / n - mr * mw) / math.sqrt(vr * vw)))


def read_checked(read, region) -> np.ndarray:
    """``read(region)`` as a float64 array, checked to have the region's shape."""
    values = np.asarray(read(region), dtype=np.float64)
    expected = tuple(s.stop - s.start for s in region)
    if values.shape != expected:
        raise InputError(f"a read of region {tuple((s.start, s.stop) for s in region)} returned shape "
                         f"{values.shape}, expected {expected}; the read callable must return the region's values")
    return values


@numba.njit(cache=True, nogil=True, fastmath={"contract"})
def _smooth(src, out):
    """``out`` = ``src`` correlated with :data:`BLUR`'s taps along both axes (valid part: NaN spreads locally)."""
    h, w, taps = out.shape[0], out.shape[1], _BLUR_TAPS
    tmp = np.empty((h + 2 * HALO, w))
    for i in range(h + 2 * HALO):
        for j in range(w):
            acc = 0.0
            for q in range(2 * HALO + 1):
                acc += taps[q] * src[i, j + q]
            tmp[i, j] = acc
    for i in range(h):
        for j in range(w):
            acc = 0.0
            for p in range(2 * HALO + 1):
                acc += taps[p] * tmp[i + p, j]
            out[i, j] = acc
    return out


def read_smoothed(read, region, shape) -> np.ndarray:
    """The image of ``shape`` over ``region`` smoothed by :data:`BLUR` (a local kernel: NaN where a tap is
    missing or outside the image); reads the region and a :data:`HALO`, clipped to the image."""
    outer = [(r.start - HALO, r.stop + HALO) for r in region]
    inside = [(min(max(lo, 0), n), max(min(hi, n), 0)) for (lo, hi), n in zip(outer, shape)]
    values = np.full(tuple(hi - lo for lo, hi in outer), np.nan)
    if all(a < b for a, b in inside):
        target = tuple(slice(a - lo, b - lo) for (a, b), (lo, _) in zip(inside, outer))
        values[target] = read_checked(read, tuple(slice(a, b) for a, b in inside))
    return _smooth(values, np.empty(tuple(r.stop - r.start for r in region)))


#: Per field tile: Gauss-Newton steps at most, the step (px) under which it has converged, and how far (px)
#: it may move from its integer residual.
FIELD_ITERATIONS, FIELD_CONVERGED, FIELD_REACH = 10, 1e-3, 1.5


@dataclass(frozen=True, eq=False)
class Field:
    """A shift per tile of a grid over the reference: ``shift`` ``(ny, nx, 2)``, each tile's total ``(dy, dx)``
    (global + residual), ``quality`` ``(ny, nx)``, its NCC after its own shift (float64, NaN when unknown),
    and the tiles' centres ``centres_y``, ``centres_x`` in reference pixels (tile ``[0, 64)``: 31.5)."""

    shift: np.ndarray
    quality: np.ndarray
    centres_y: np.ndarray
    centres_x: np.ndarray


def _starts(n: int, tile: int) -> tuple[list[int], int]:
    """Tile starts along an axis and the tile side: the last tile moves inward to stay whole."""
    return ([0], n) if n <= tile else ([min(i * tile, n - tile) for i in range(-(-n // tile))], tile)


@numba.njit(cache=True, nogil=True)
def _field_fit(ref, mov, oy, ox, starts, width, first, limit, shifts, quality):
    """Gauss-Newton per tile of a band: tile ``t`` is ``ref[:, starts[t]:starts[t] + width + 2 * BORDER]`` (with
    its border) at ``(oy, ox[t])`` in ``mov``, starting from ``first[t]``; NaN when singular, when it
    leaves ``limit`` px from the start, or when the tile is not textured at its own shift."""
    m = np.empty((6, 5))
    step = np.zeros(4)
    for t in range(starts.shape[0]):
        tile = ref[:, starts[t]:starts[t] + width + 2 * BORDER]
        center = np.nanmean(tile[BORDER:-BORDER, BORDER:-BORDER])  # NaN when the whole tile is missing
        sy, sx, gain, offset = first[t, 0], first[t, 1], 1.0, 0.0
        ok = center == center
        for it in range(FIELD_ITERATIONS):
            if not ok:
                break
            tile_sums(tile, mov, oy - sy, ox[t] - sx, center, m)
            ok = gn_step(m, gain, offset, it == 0, step)
            sy, sx, gain, offset = sy + step[0], sx + step[1], gain + step[2], offset + step[3]
            ok = ok and abs(sy - first[t, 0]) <= limit and abs(sx - first[t, 1]) <= limit
            if max(abs(step[0]), abs(step[1])) < FIELD_CONVERGED:
                break
        if ok:
            tile_sums(tile, mov, oy - sy, ox[t] - sx, center, m)
            ok = is_varied(m, float(width * (tile.shape[0] - 2 * BORDER)), center) and is_shared(m)
        shifts[t, 0], shifts[t, 1], quality[t] = (sy, sx, ncc_of(m)) if ok else (np.nan, np.nan, np.nan)


def _centred(values: np.ndarray) -> np.ndarray:
    finite = np.isfinite(values)
    return np.where(finite, values - values[finite].mean(), 0.0) if finite.any() else np.zeros(values.shape)


def _residuals(ref, mov, starts, width, search, reach) -> np.ndarray:
    """Integer residuals ``(k, 2)`` of a band's tiles: the peak of each tile's normalised cross-correlation
    (by FFT) over the moving window holding every residual within ``search`` px (NaN at the margin)."""
    height, k = ref.shape[0] - 2 * BORDER, len(starts)
    size = (height + 2 * search, width + 2 * search)
    templates, support, windows = np.zeros((k,) + size), np.zeros((k,) + size), np.empty((k,) + size)
    inner = (slice(None), slice(search, search + height), slice(search, search + width))
    for t, x in enumerate(starts):
        tile = ref[BORDER:-BORDER, x + BORDER:x + BORDER + width]
        templates[t][inner[1:]], support[t][inner[1:]] = _centred(tile), np.isfinite(tile)
        windows[t] = _centred(mov[reach - search:reach - search + size[0],
                                  x + reach - search:x + reach - search + size[1]])
    window_f, window2_f = sfft.rfft2(windows), sfft.rfft2(windows * windows)
    # correlations at offsets tau: sum_u template[u] * window[u + tau], and the window's sums under the support
    sums = [sfft.irfft2(np.conj(sfft.rfft2(a)) * b, s=size) for a, b in
            ((templates, window_f), (support, window_f), (support, window2_f))]
    count = support.sum(axis=(1, 2))[:, None, None]
    energy = (templates * templates).sum(axis=(1, 2))[:, None, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        ncc = sums[0] / np.sqrt(energy * np.maximum(sums[2] - sums[1] ** 2 / np.maximum(count, 1), 0.0))
    ncc = np.roll(np.nan_to_num(ncc, nan=-np.inf), (search, search), axis=(1, 2))[:, :2 * search + 1, :2 * search + 1]
    peak = np.array(np.unravel_index(ncc.reshape(k, -1).argmax(axis=1), ncc.shape[1:])).T
    residual = (search - peak).astype(np.float64)  # the window matches the template at offset -residual
    residual[(np.abs(residual) >= search).any(axis=1)] = np.nan
    return residual


def _band(read_ref, read_mov, shape, y0, height, xstarts, width, global_shift, search):
    """The shifts and qualities of one band of tiles (a row of the grid, or part of one)."""
    whole = [int(round(v)) for v in global_shift]
    xa, xb = xstarts[0], xstarts[-1] + width
    reach = search + SUPPORT + 2
    ref = read_smoothed(read_ref, (slice(y0 - BORDER, y0 + height + BORDER), slice(xa - BORDER, xb + BORDER)), shape)
    source = (slice(y0 - whole[0] - reach, y0 + height - whole[0] + reach),
              slice(xa - whole[1] - reach, xb - whole[1] + reach))
    mov = read_smoothed(read_mov, source, shape)
    starts = np.asarray(xstarts, dtype=np.int64) - xa
    residual = _residuals(ref, mov, starts, width, search, reach)
    first = np.asarray(global_shift, dtype=np.float64) + residual
    shifts, quality = np.full((len(starts), 2), np.nan), np.full(len(starts), np.nan)
    known = np.isfinite(first).all(axis=1)
    if known.any():
        ox = (starts[known] + xa - source[1].start).astype(np.float64)
        fitted, fit_quality = np.empty((int(known.sum()), 2)), np.empty(int(known.sum()))
        _field_fit(ref, mov, float(y0 - source[0].start), ox, starts[known], width, first[known], FIELD_REACH,
                   fitted, fit_quality)
        shifts[known], quality[known] = fitted, fit_quality
    residual = shifts - np.asarray(global_shift, dtype=np.float64)
    lost = ~(np.abs(residual) < search).all(axis=1)  # at the search margin the true residual may lie beyond
    shifts[lost], quality[lost] = np.nan, np.nan
    return shifts, quality


def check_shape(shape) -> tuple[int, int]:
    """``shape`` as a 2-D image's ``(height, width)`` of at least 16 x 16 pixels."""
    if len(shape) != 2 or min(shape) < 16:
        raise InputError(f"registration needs a 2-D image of at least 16 x 16 pixels, got shape {tuple(shape)}; "
                         "pass the (height, width) of a larger image")
    return int(shape[0]), int(shape[1])


def check_int(name: str, value, low: int) -> int:
    """``value`` as the integer option ``registration.<name>``, at least ``low``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise InputError(f"registration.{name} must be an integer >= {low}, got {value!r}; set a valid "
                         f"registration.{name}")
    return int(value)


def check_frames(shape, reference_frame) -> tuple[tuple[int, int], int | None]:
    """A stack's frame size and its reference frame index (None for ``"each"``)."""
    if len(shape) != 3 or shape[0] < 1:
        raise InputError(f"registration by frames needs a (frames, height, width) shape, got {tuple(shape)}; "
                         "pass the stack's 3-D shape")
    if reference_frame != "each" and (isinstance(reference_frame, bool) or not isinstance(
            reference_frame, (int, np.integer)) or not -shape[0] <= reference_frame < shape[0]):
        raise InputError(f"registration.reference_frame must be 'each' or a frame index in [0, {shape[0]}), got "
                         f"{reference_frame!r}; set it to 'each' or a valid frame")
    return check_shape(shape[1:]), None if reference_frame == "each" else int(reference_frame) % int(shape[0])


def estimate_field(read_ref, read_mov, shape, global_shift, *, tile=64, search=None, map=builtins.map) -> Field:
    """A shift per tile of the grid of ``tile x tile`` tiles over the reference (the local method).

    A tile's integer residual from ``global_shift`` is the peak of its normalised cross-correlation over the
    moving window holding every residual within ``search`` px (nothing wraps around, and residuals beyond
    half a tile resolve); a Gauss-Newton fit of shift, gain and offset gives the subpixel part. Work goes by
    bands of tiles through ``map``: a huge image is never loaded at once.

    Parameters
    ----------
    read_ref, read_mov, shape
        ``read(region) -> ndarray`` and ``(height, width)``, as in ``registration.estimate_translation``.
    global_shift : pair of float
        The translation the residuals are measured from (e.g. the global estimate, or ``(0, 0)``).
    tile, search : int
        Tile side (px): the last row and column of tiles move inward to stay whole (overlapping their
        neighbours), an image side under ``tile`` makes one tile. The largest residual (px) per axis,
        ``tile // 4`` by default (None): a residual at this margin is NaN.
    map : callable
        ``map(function, items)`` over the bands.

    Returns
    -------
    Field
        NaN for tiles too flat to tell (:func:`is_varied`, :func:`is_shared` at their own shift), whose
        residual reaches the search margin, or whose refinement does not settle.
    """
    shape, tile = check_shape(shape), check_int("tile", tile, 16)
    search = check_int("search", max(2, tile // 4) if search is None else search, 1)
    shift = np.asarray(global_shift, dtype=np.float64)
    if shift.shape != (2,) or not np.isfinite(shift).all():
        raise InputError(f"the global shift must be a finite (dy, dx) pair, got {global_shift!r}; pass the "
                         "translation estimate's shift")
    (ys, th), (xs, tw) = _starts(shape[0], int(tile)), _starts(shape[1], int(tile))
    per_band = max(1, 2**18 // (th * tw))
    bands = [(i, j) for i in range(len(ys)) for j in range(0, len(xs), per_band)]

    def band(item):
        i, j = item
        return _band(read_ref, read_mov, shape, ys[i], th, xs[j:j + per_band], tw, shift, search)

    shifts, quality = np.empty((len(ys), len(xs), 2)), np.empty((len(ys), len(xs)))
    for (i, j), (s, q) in zip(bands, map(band, bands)):
        shifts[i, j:j + len(s)], quality[i, j:j + len(s)] = s, q
    centres = [np.asarray(starts, dtype=np.float64) + (side - 1) / 2 for starts, side in ((ys, th), (xs, tw))]
    return Field(shifts, quality, centres[0], centres[1])


def estimate_field_frames(read_ref, read_mov, shape, global_shifts, *, reference_frame="each", tile=64,
                          search=None, map=builtins.map) -> list[Field]:
    """:func:`estimate_field` per frame of a ``(t, y, x)`` stack from ``(t, 2)`` global shifts; ``read(t, region)``
    readers and ``reference_frame`` as in :func:`pipeline.core.registration.estimate_frames`."""
    size, fixed = check_frames(shape, reference_frame)
    shifts = np.asarray(global_shifts, dtype=np.float64)
    if shifts.shape != (shape[0], 2):
        raise InputError(f"estimate_field_frames needs one (dy, dx) per frame, {shape[0]} frames, got shifts of "
                         f"shape {shifts.shape}; pass the frames' translation estimates")

    def one(t):
        k = t if fixed is None else fixed
        return estimate_field(lambda region: read_ref(k, region), lambda region: read_mov(t, region), size,
                              shifts[t], tile=tile, search=search, map=builtins.map)

    return list(map(one, range(shape[0])))
