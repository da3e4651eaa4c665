"""Registration on tiles: the translation estimate's tiles, fitted robustly and checked one by one, and the local
method, a shift per tile of a grid (the maths of a tile: :mod:`pipeline.core.tiles`).

Translation: a tile is textured (:func:`~pipeline.core.tiles.is_varied`) or left out. A textured tile matches at
the coarse shift (:func:`~pipeline.core.tiles.is_shared`) and joins the fit, or it is a suspect: its own shift is
searched by a phase correlation over the tile, re-read around a shift found beyond its first read's margin.
The fit is robust: tiles whose residual per pixel (at their own gain and offset) or own shift is an outlier
among the others' (a changed region, a part that moved on its own) leave it, and it is refitted on the rest.
The spread measures the tiles' own shifts from the result, the tiles left out and the suspects included where
a shift of their own explains them; the textured tiles that no shift explains are counted apart.
"""

from __future__ import annotations

import builtins
import math
from dataclasses import dataclass
from typing import NamedTuple

import numba
import numpy as np
from scipy import fft as sfft
from skimage.registration import phase_cross_correlation

from ..errors import InputError
from .tiles import (
    BLUR,
    BORDER,
    HALO,
    MARGIN,
    SHARED,
    SUPPORT,
    TEXTURE,
    Tile,
    centred,
    check_frames,
    check_int,
    check_shape,
    flat_error,
    gn_step,
    is_shared,
    is_varied,
    ncc_of,
    read_checked,
    read_smoothed,
    tile_sums,
)

__all__ = ["Field", "estimate_field", "estimate_field_frames", "Fit", "classify_tiles", "fit_tiles", "select_tiles",
           "check_tiles", "tile_sums", "gn_step", "is_varied", "is_shared", "ncc_of", "read_checked",
           "read_smoothed", "centred", "check_shape", "check_int", "check_frames", "SUPPORT", "BLUR", "HALO",
           "BORDER", "TEXTURE", "SHARED"]

#: Gauss-Newton iterations at most, and the shift step (px) under which they stop.
MAX_ITERATIONS, CONVERGED = 10, 1e-4
#: The fraction of tiles left out of ``spread`` (the worst ones) when there are at least 10 tiles.
TRIM = 0.1
#: A tile leaves the fit when its residual per pixel (at its own gain and offset) is over ``RESIDUAL`` times the
#: noise, the tiles' 25th percentile (not the median: half the tiles may hold a change; a blur differing
#: between the images spreads matching tiles' residuals over up to 20 times, a fifth of a tile changed makes
#: 50 times and more), or when its own shift is farther from the fit's than ``OUTLIER`` times the tiles'
#: median distance and :data:`FAR` px.
RESIDUAL, OUTLIER, FAR = 16.0, 4.0, 0.05
#: Nor is a residual an outlier under this fraction of the tile's variance (an NCC of 0.995 at the tile's own
#: gain: the interpolation's error on a pair without noise, whose 25th percentile is nearly 0).
UNEXPLAINED = 0.01
#: A tile that matches nowhere is textured (a change, or parallax: not noise on a flat) when its variance is at
#: least this many times the noise (the 25th percentile of the fit's residuals per pixel).
TEXTURED = 4.0


def sums(tile: Tile, shift, center: float) -> np.ndarray:
    """The tile's sums (:func:`~pipeline.core.tiles.tile_sums`) at ``shift``."""
    return tile_sums(tile.ref, tile.mov, tile.origin[0] - shift[0], tile.origin[1] - shift[1], center,
                     np.empty((6, 5)))


def _gn(m, gain, offset, refit=False) -> np.ndarray | None:
    out = np.zeros(4)
    return out if gn_step(m, float(gain), float(offset), refit, out) else None


def _residual(m) -> tuple[float, float]:
    """The mean square of ``ref - gain * W - offset`` from a tile's sums ``m``, at the tile's own least-squares
    gain and offset (a global gain skewed by an outlier does not raise the other tiles'), and the variance of
    its reference."""
    n = max(m[3, 3], 1.0)
    srr, sww, srw = m[4, 4] - m[4, 3] ** 2 / n, m[2, 2] - m[2, 3] ** 2 / n, m[2, 4] - m[2, 3] * m[4, 3] / n
    return max(srr - (srw * srw / sww if sww > 0 else 0.0), 0.0) / n, max(srr, 0.0) / n


def _misfit(m, noise: float) -> bool:
    """Whether a tile's residual (from its sums ``m``) is an outlier by :data:`RESIDUAL` and :data:`UNEXPLAINED`."""
    residual, variance = _residual_kernel(m)
    return residual > RESIDUAL * noise and residual > UNEXPLAINED * variance


_residual_kernel = numba.njit(cache=True, nogil=True)(_residual)
_misfit_kernel = numba.njit(cache=True, nogil=True)(_misfit)


@numba.njit(cache=True, nogil=True)
def _tile_fits(stack, at, params, distance, residual):
    """Per tile ``t`` of the sums ``stack`` taken at ``at``: its residual per pixel there, and the distance from
    ``params`` of its own shift a Gauss-Newton step away (gain and offset refitted; inf when singular); and
    which tiles are no outliers by either (see :func:`select_tiles`)."""
    step = np.empty(4)
    for t in range(stack.shape[0]):
        residual[t] = _residual_kernel(stack[t])[0]
        ok = gn_step(stack[t], at[2], at[3], True, step)
        distance[t] = math.hypot(at[0] + step[0] - params[0], at[1] + step[1] - params[1]) if ok else np.inf
    noise, keep = np.percentile(residual, 25.0), distance <= max(FAR, OUTLIER * np.median(distance))
    for t in range(stack.shape[0]):
        keep[t] = keep[t] and not _misfit_kernel(stack[t], noise)
    return keep


def classify_tiles(tiles, shift, center, map) -> tuple[list[int], list[int], list[np.ndarray]]:
    """The tiles textured and matching at ``shift`` (indices), the textured ones that do not (suspects: noise,
    shading, or a shift of their own), and the matching ones' sums there."""
    first = list(map(lambda t: sums(t, shift, center), tiles))
    varied = [is_varied(m, float(t.ref[BORDER:-BORDER, BORDER:-BORDER].size), center) for t, m in zip(tiles, first)]
    if not any(varied):
        raise flat_error("reference or moving")
    shared = [v and is_shared(m) for v, m in zip(varied, first)]
    if not any(shared):
        pooled = ncc_of(np.sum([m for m, v in zip(first, varied) if v], axis=0))
        raise InputError(f"the images do not correlate at the coarse shift ({shift[0]:.1f}, {shift[1]:.1f}) px: no "
                         f"textured tile matches there (gradients correlating by {SHARED:g} or more; the tiles' NCC is "
                         f"{pooled:.3f}), so they are unrelated or differ by more than a translation; check the pair")
    used = [i for i, keep in enumerate(shared) if keep]
    return used, [i for i, v in enumerate(varied) if v and not shared[i]], [first[i] for i in used]


class Fit(NamedTuple):
    """A Gauss-Newton result: the parameters ``(sy, sx, gain, offset)``, the last ones the tiles' sums were
    taken at (less than a step from them), and those sums."""

    params: np.ndarray
    at: np.ndarray
    sums: np.ndarray


def fit_tiles(tiles, first, params, start, center, map) -> Fit:
    """Gauss-Newton of ``(sy, sx, gain, offset)`` from ``params`` on the summed normal equations of ``tiles``
    (their sums there: ``first``), staying within the margin of ``start``."""
    params, sums_at, previous, evaluated = params.copy(), np.asarray(first), None, params.copy()
    for iteration in range(MAX_ITERATIONS):
        total = sums_at.sum(axis=0)
        step = _gn(total, params[2], params[3], iteration == 0)
        if step is None:
            raise flat_error("reference or moving")
        params += step
        if np.abs(step[:2]).max() < CONVERGED:
            break
        ratio = None if previous is None else step[:2] / np.where(previous == 0, np.inf, previous)
        if ratio is not None and ((ratio > 0) & (ratio < 0.8)).all():
            # noise makes the steps shrink geometrically (by about 5 each); Aitken's extrapolation jumps to
            # the limit of that series (the path changes, not the fixed point the next step is tested at)
            params[:2] += step[:2] * ratio / (1 - ratio)
        previous = step[:2]
        if np.abs(params[:2] - start).max() > MARGIN - 1:
            raise InputError(f"the refinement left the coarse shift by over {MARGIN - 1} px (coarse NCC "
                             f"{ncc_of(total):.3f}): the pair is not related by one translation; set "
                             "registration.method: local with a known registration.shift, or check the pair")
        evaluated = params.copy()
        sums_at = np.asarray(list(map(lambda t, e=evaluated: sums(t, e[:2], center), tiles)))
    return Fit(params, evaluated, sums_at)


def select_tiles(result: Fit) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which tiles stay in the fit (a boolean per tile): those whose residual per pixel is not an outlier among
    the tiles', nor their own shift (a step from their last sums) by its distance from the fit's (see
    :data:`RESIDUAL`); all stay when none would. And per tile, that distance and residual."""
    k = len(result.sums)
    distance, residual = np.empty(k), np.empty(k)
    keep = _tile_fits(result.sums, result.at, result.params, distance, residual)
    return (keep if keep.any() else np.ones(k, dtype=bool)), distance, residual


def _own_shift(tile, params, center, steps=3):
    """A tile's own parameters after ``steps`` Gauss-Newton steps from ``params`` and its sums there (None when
    singular)."""
    mine, m = params.copy(), sums(tile, params[:2], center)
    for k in range(steps):
        step = _gn(m, mine[2], mine[3], k == 0)
        if step is None:
            return None
        mine += step
        m = sums(tile, mine[:2], center)
    return mine, m


def _search(tile, params, center, reread):
    """A suspect tile's own parameters and sums: an integer phase correlation over the tile (re-read around its
    own shift when that is beyond the margin of its read), then three steps; None when it matches nowhere
    within a quarter of the tile."""
    corner = (tile.origin - np.round(params[:2])).astype(int)
    inner = tile.ref[BORDER:-BORDER, BORDER:-BORDER]
    window = tile.mov[corner[0]:corner[0] + inner.shape[0], corner[1]:corner[1] + inner.shape[1]]
    residual, _, _ = phase_cross_correlation(centred(inner), centred(window), normalization="phase")
    if (np.abs(residual) > np.array(inner.shape) // 4).any():
        return None
    start = params.copy()
    start[:2] = np.round(params[:2]) + residual
    if np.abs(residual).max() > MARGIN - SUPPORT:
        tile = reread(tile, start[:2])
    return _own_shift(tile, start, center)


def check_tiles(tiles, others, result: Fit, fitted, center, map, reread) -> tuple[float, float, int, int]:
    """The pooled NCC at the fit, the spread, and how many textured tiles match nowhere, of how many counted.

    The spread is the distance of the tiles' own shifts from the fit's: ``fitted``, the distances and residuals
    of the tiles fitted (see :func:`select_tiles`); three steps from the fit for those it left out, searched
    for the suspects (``others``: pairs ``(index, suspect)``), counted when they match at their own shift
    (textured there, their residual no outlier by :data:`RESIDUAL`); the worst :data:`TRIM` of the distances
    are left out when there are 10 or more. A tile that matches nowhere (a change, or more than a translation)
    counts apart when it is textured: its variance is :data:`TEXTURED` times the noise or more (not a flat);
    a suspect that is not textured is left out (not searched).
    """
    params, (distances, residual) = result.params, fitted
    noise = float(np.percentile(residual, 25)) if others else 0.0
    textured = {i: bool(np.nanvar(tiles[i].ref[BORDER:-BORDER, BORDER:-BORDER]) >= TEXTURED * noise)
                for i, _ in others}
    # A suspect too flat for the noise is not searched: unmatched it would not count, and a shift of its own
    # would be the noise's (in a video, most suspects are such tiles, and the search is a phase correlation).
    others = [(i, suspect) for i, suspect in others if not suspect or textured[i]]
    found = list(map(lambda item: (_search(tiles[item[0]], params, center, reread) if item[1] else
                                   _own_shift(tiles[item[0]], params, center)), others))
    matched = [p is not None and is_shared(p[1]) and not _misfit(p[1], noise) for p in found]
    unmatched = sum(not ok and textured[i] for (i, _), ok in zip(others, matched))
    distances = np.sort(np.concatenate([distances, [float(np.hypot(*(p[0][:2] - params[:2])))
                                                    for p, ok in zip(found, matched) if ok]]))
    keep = len(distances) - (int(TRIM * len(distances)) if len(distances) >= 10 else 0)
    return ncc_of(result.sums.sum(axis=0)), float(distances[keep - 1]), unmatched, len(distances) + unmatched


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


def _residuals(ref, mov, starts, width, search, reach) -> np.ndarray:
    """Integer residuals ``(k, 2)`` of a band's tiles: the peak of each tile's normalised cross-correlation
    (by FFT) over the moving window holding every residual within ``search`` px (NaN at the margin)."""
    height, k = ref.shape[0] - 2 * BORDER, len(starts)
    size = (height + 2 * search, width + 2 * search)
    templates, support, windows = np.zeros((k,) + size), np.zeros((k,) + size), np.empty((k,) + size)
    inner = (slice(None), slice(search, search + height), slice(search, search + width))
    for t, x in enumerate(starts):
        tile = ref[BORDER:-BORDER, x + BORDER:x + BORDER + width]
        templates[t][inner[1:]], support[t][inner[1:]] = centred(tile), np.isfinite(tile)
        windows[t] = centred(mov[reach - search:reach - search + size[0],
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
