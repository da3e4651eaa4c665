"""One tile's maths for registration: where the translation estimate's tiles lie, their smoothed reads, the sums
of a tile's normal equations, the Gauss-Newton step, the texture tests and the NCC.

One numba pass over a tile (:func:`tile_sums`) warps the moving region with the Lanczos-3 taps of
:mod:`pipeline.core.interpolation`, differentiates the warp analytically and accumulates in float64 the
sums that give the normal equations of ``ref ~ gain * W(s) + offset``, the texture tests and the NCC.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np

from ..errors import InputError
from .interpolation import SUPPORT as _SUPPORTS

__all__ = ["tile_sums", "gn_step", "is_varied", "is_shared", "ncc_of", "read_checked", "read_smoothed", "centred",
           "check_shape", "check_int", "check_frames", "Tile", "layout_tiles", "read_tile", "flat_error", "SUPPORT",
           "BLUR", "HALO", "KEEP", "BORDER", "TEXTURE", "SHARED", "MARGIN", "SMALLEST"]

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
#: The least weight of the blur's taps a smoothed pixel keeps on finite values: a lone missing pixel (its own
#: tap weighs 0.25, a side neighbour's 0.11) is filled from its neighbours, as are two side by side; a hole of
#: 2 x 2 px or more stays missing, to its edge.
KEEP = 0.5
#: The gradient correlation of reference and warp a textured tile needs along each axis (about the fraction
#: of the gradient energy that is signal, not noise: pure noise gives about 1 / sqrt(pixels)).
SHARED = 0.25
#: The border (px) of reference tiles: the reach of their gradient, the derivative of the Lanczos-3
#: interpolant at whole pixels (the same operator the warp's derivative is, so the two compare).
BORDER = 2
#: Relative size under which a variance counts as zero (rounding, not texture).
ZERO = 1e-8
#: Extra source pixels read around each tile, beyond the kernel's support, for the shift updates.
MARGIN = 8
#: The smallest tile side (px) of an image too small for whole tiles: it gets up to 4 tiles per axis of a
#: quarter of the overlap (at least this), so that its tiles can disagree.
SMALLEST = 64


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


def read_checked(read, region, dtype=np.float64) -> np.ndarray:
    """``read(region)`` as a float64 array (or in its own real dtype: ``dtype=None``), checked to have the
    region's shape."""
    values = np.asarray(read(region), dtype=dtype)
    if values.dtype.kind not in "biuf" or values.dtype == np.float16:
        values = values.astype(np.float64)
    expected = tuple(s.stop - s.start for s in region)
    if values.shape != expected:
        raise InputError(f"a read of region {tuple((s.start, s.stop) for s in region)} returned shape "
                         f"{values.shape}, expected {expected}; the read callable must return the region's values")
    return values


@numba.njit(cache=True, nogil=True, fastmath={"contract"})
def _smooth(src, out):
    """``out`` = ``src`` correlated with :data:`BLUR`'s taps along both axes (the valid part); True if a NaN
    reached it."""
    h, w, taps = out.shape[0], out.shape[1], _BLUR_TAPS
    tmp = np.empty((h + 2 * HALO, w))
    for i in range(h + 2 * HALO):
        for j in range(w):
            acc = 0.0
            for q in range(2 * HALO + 1):
                acc += taps[q] * src[i, j + q]
            tmp[i, j] = acc
    missing = False
    for i in range(h):
        for j in range(w):
            acc = 0.0
            for p in range(2 * HALO + 1):
                acc += taps[p] * tmp[i + p, j]
            out[i, j] = acc
            missing |= acc != acc
    return missing


@numba.njit(cache=True, nogil=True)
def _has_nan(values):
    """Whether a 2-D array holds a NaN."""
    for i in range(values.shape[0]):
        found = False
        for j in range(values.shape[1]):  # branch-free along a row: the loop vectorises
            found |= values[i, j] != values[i, j]
        if found:
            return True
    return False


def read_smoothed(read, region, shape) -> np.ndarray:
    """The image of ``shape`` over ``region`` smoothed by :data:`BLUR` (reading a :data:`HALO` more): NaN where
    a tap is outside the image; missing pixels leave the blur, normalised by the taps' weight left (NaN where
    under :data:`KEEP`)."""
    outer = [(r.start - HALO, r.stop + HALO) for r in region]
    inside = [(min(max(lo, 0), n), max(min(hi, n), 0)) for (lo, hi), n in zip(outer, shape)]
    values, out = np.full(tuple(hi - lo for lo, hi in outer), np.nan), np.empty(tuple(r.stop - r.start for r in region))
    target = tuple(slice(a - lo, b - lo) for (a, b), (lo, _) in zip(inside, outer))
    if all(a < b for a, b in inside):
        values[target] = read_checked(read, tuple(slice(a, b) for a, b in inside))
    if _smooth(values, out) and _has_nan(values[target]):  # missing pixels: a normalised convolution
        weight, total = np.full(values.shape, np.nan), np.empty(out.shape)  # NaN outside: its taps stay NaN
        weight[target] = np.isfinite(values[target])
        _smooth(np.nan_to_num(values, nan=0.0), out)
        _smooth(weight, total)
        out = np.where(total >= KEEP, out / np.maximum(total, KEEP), np.nan)
    return out


def centred(values: np.ndarray) -> np.ndarray:
    """``values`` less the mean of their finite ones, missing ones 0 (all 0 when none is finite)."""
    finite = np.isfinite(values)
    return np.where(finite, values - values[finite].mean(), 0.0) if finite.any() else np.zeros(values.shape)


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


class Tile(NamedTuple):
    """A smoothed reference tile (with a border of :data:`BORDER`), the smoothed moving region its warp reads,
    the tile's offset in that region and the tile's region of the reference."""

    ref: np.ndarray
    mov: np.ndarray
    origin: np.ndarray
    region: tuple[slice, slice]


def flat_error(which: str) -> InputError:
    """The error of an image with no textured tile."""
    return InputError(f"the {which} image is too flat to register: no textured tile (its values barely vary); "
                      "registration needs texture in both images, check the pair")


def layout_tiles(shape, shift, tile, count) -> list[tuple[slice, slice]]:
    """Up to ``count`` tiles spread evenly over the part of the reference the shifted moving image covers, of
    side ``tile``, or a quarter of the overlap when that is less (at least :data:`SMALLEST`)."""
    axes = []
    for n, s in zip(shape, (int(round(v)) for v in shift)):
        lo, hi = max(0, s + SUPPORT + HALO), min(n, n + s - SUPPORT - HALO)
        if hi - lo < 16:
            raise InputError(f"the shift {tuple(round(float(v), 1) for v in shift)} px leaves {max(hi - lo, 0)} px "
                             f"of usable overlap (16 needed) in an image of shape {tuple(shape)}; register larger "
                             "images, or check the pair and registration.max_shift")
        side = min(tile, max(SMALLEST, (hi - lo) // 4), hi - lo)
        axes.append((lo, hi, side, (hi - lo) // side))
    (_, _, _, my), (_, _, _, mx) = axes
    ky = max(1, min(my, round(math.sqrt(count * my / mx))))
    kx = max(1, min(mx, count // ky))
    ky = max(1, min(my, count // kx))
    starts = [np.round(np.linspace(lo, hi - side, k)).astype(int).tolist() for (lo, hi, side, _), k in
              zip(axes, (ky, kx))]
    return [(slice(y, y + axes[0][2]), slice(x, x + axes[1][2])) for y in starts[0] for x in starts[1]]


def read_tile(read_ref, read_mov, shape, shift, region, ref=None) -> Tile:
    """The tile of ``region`` read for a warp near ``shift`` (its smoothed reference ``ref`` when known)."""
    reach = SUPPORT + MARGIN
    source = tuple(slice(r.start - s - reach, r.stop - s + reach) for r, s in zip(region, (round(v) for v in shift)))
    if ref is None:
        ref = read_smoothed(read_ref, tuple(slice(r.start - BORDER, r.stop + BORDER) for r in region), shape)
    mov = read_smoothed(read_mov, source, shape)
    return Tile(ref, mov, np.array([r.start - s.start for r, s in zip(region, source)], dtype=np.float64), region)
