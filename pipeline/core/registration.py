"""Image registration by translation: a coarse phase correlation, then a Gauss-Newton refinement on tiles.

Shift convention (scikit-image's): ``(dy, dx)`` registers the moving image onto the reference,
``registered[i] = moving[i - shift]``, so ``interpolation.shift_image(moving, shift, "lanczos3")`` is close
to the reference. The estimators never read a whole image: ``read(region)`` callables (``region`` two step-1
slices) give the values (float64, or any real dtype) of a coarse centred region (in bands) and of a bounded
set of tiles, NaN where missing; ``map`` (a thread pool's, say) runs those reads and the ``nogil`` numba
kernels. The fit ``ref ~ gain * W(s) + offset`` uses the Lanczos-3 warp and its analytic derivative, the
exact Jacobian (so the fixed point is the least-squares optimum; it also took fewer steps than central
differences). The fit is robust and checked tile by tile (:mod:`pipeline.core.tilefield`): tiles that are
outliers leave it, and the tiles' own shifts, searched for where they do not match, tell whether one
translation holds.
"""

from __future__ import annotations

import builtins
import functools
import math
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numba
import numpy as np
from scipy import fft as sfft
from scipy.signal.windows import tukey
from skimage.registration import phase_cross_correlation

from ..errors import InputError
from .tilefield import check_tiles, classify_tiles, fit_tiles, select_tiles
from .tiles import check_frames, check_int, check_shape, flat_error, layout_tiles, read_checked, read_tile

__all__ = ["Estimate", "Found", "estimate_translation", "estimate_frames", "register_images", "MIN_CORRELATION",
           "COARSE_SIDE", "FRAME_PIXELS", "FRAME_TILE", "UNBOUNDED"]

#: The coarse level's long side (px) is at most this for one pair, and an eighth of it per video frame.
COARSE_SIDE = 1024
#: Below this NCC after registration the images are taken as unrelated (a chance alignment of natural
#: images stays under about 0.15 over many tiles; a real pair with heavy noise stays well above 0.5).
MIN_CORRELATION = 0.2
#: A phase-correlation peak this many times its surface's noise (``1 / sqrt(pixels)``: the normalised
#: cross-power has unit magnitude) is real: unrelated images' highest is about 5.
DISTINCT = 8.0
#: Refinement budget per video frame: 16 tiles of 64 x 64 (about 0.01 px on real content).
FRAME_PIXELS, FRAME_TILE = 2**16, 64
#: The pixels of a reference frame read once when every moving frame uses it.
CACHED_FRAME = 2**24


@dataclass(frozen=True)
class Estimate:
    """A translation estimate and how much to trust it.

    Attributes
    ----------
    shift : tuple of float
        ``(dy, dx)`` px registering the moving image onto the reference.
    gain, offset : float
        The intensity model ``ref ~ gain * registered + offset``.
    correlation : float
        NCC of reference and registered moving image over the tiles fitted (the quality figure).
    peak : float
        Height of the coarse phase-correlation peak: 1 for a pure periodic translation, lower with noise and
        partial overlap, about ``5 / sqrt(pixels)`` for unrelated images.
    spread : float
        The largest distance (px) of a tile's own shift from the global one, the worst 10% of the tiles
        left out when there are at least 10 (tiles that match at no shift near it are counted apart).
    tiles : int
        Textured tiles whose normal equations were summed in the final fit (outliers left out).
    """

    shift: tuple[float, float]
    gain: float
    offset: float
    correlation: float
    peak: float
    spread: float
    tiles: int

    def as_dict(self) -> dict:
        """The estimate as JSON-safe values (floats, None for a non-finite one, a list, an int) for provenance."""
        out = {key: float(value) if math.isfinite(value) else None for key, value in asdict(self).items()
               if key not in ("shift", "tiles")}
        return {"shift": [float(v) for v in self.shift], **out, "tiles": int(self.tiles)}


def _check_options(shape, upsample, max_shift, tolerance, pixels, tile) -> tuple[int, int]:
    for name, value, low in (("upsample", upsample, 1), ("pixels", pixels, 1), ("tile", tile, 16)):
        check_int(name, value, low)
    for name, value in (("max_shift", max_shift), ("tolerance", tolerance)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not (
                0 < value < math.inf):
            raise InputError(f"registration.{name} must be a positive number of pixels, got {value!r}; set a "
                             f"valid registration.{name}")
    return check_shape(shape)


def _unrelated(where: str, ncc: float | None = None, peak: float | None = None) -> InputError:
    why = (f"NCC {ncc:.3f}, below {MIN_CORRELATION}" if peak is None else
           f"no distinct phase-correlation peak: {peak:.1f} times its noise, below {DISTINCT:g}")
    return InputError(f"the images do not correlate {where} ({why}): they are unrelated or too flat to register; "
                      "check the pair")


def _too_far(shift, max_shift) -> InputError:
    dy, dx = (float(v) for v in shift)
    return InputError(f"estimated shift ({dy:.1f}, {dx:.1f}) px exceeds registration.max_shift = {max_shift:g}; "
                      "raise registration.max_shift if the captures really are that far apart, or check the pair")


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def block_mean(src, factor, out):
    """``out[i, j]`` = the mean of the finite values of ``src``'s ``factor x factor`` block ``(i, j)`` (NaN if none);
    ``src`` of any real dtype (integers are all finite)."""
    total, count = np.empty(out.shape[1] * factor), np.empty(out.shape[1] * factor)
    for i in range(out.shape[0]):
        total[:], count[:] = 0.0, 0.0
        for y in range(i * factor, i * factor + factor):
            for x in range(total.size):  # column sums first, branch-free: the loop vectorises
                v = np.float64(src[y, x])
                total[x] += v if v == v else 0.0
                count[x] += 1.0 if v == v else 0.0
        for j in range(out.shape[1]):
            n = count[j * factor:(j + 1) * factor].sum()
            out[i, j] = total[j * factor:(j + 1) * factor].sum() / n if n > 0 else np.nan
    return out


def _coarse_region(shape, max_shift, side) -> tuple[tuple[slice, slice], int]:
    """The centred region of the coarse step and its block-mean factor (the region's sides are multiples)."""
    sides = [min(n, max(2048, math.ceil(8 * max_shift))) for n in shape]
    factor = max(1, math.ceil(max(sides) / side))
    sides = [max(factor, s // factor * factor) for s in sides]
    return tuple(slice((n - s) // 2, (n - s) // 2 + s) for n, s in zip(shape, sides)), factor


def _block_means(read, region, factor, map) -> np.ndarray:
    """NaN-aware ``factor x factor`` means over ``region``, read in bands of about 2**20 pixels."""
    ys, xs = region
    rows = max(1, (2**20 // (xs.stop - xs.start)) // factor) * factor
    bands = [(slice(y, min(y + rows, ys.stop)), xs) for y in range(ys.start, ys.stop, rows)]

    def band_mean(band):
        values = read_checked(read, band, dtype=None)  # the stored dtype: no float64 copy of the band
        out = np.empty((values.shape[0] // factor, values.shape[1] // factor))
        return block_mean(values, factor, out)

    return np.concatenate(list(map(band_mean, bands)), axis=0)


def _filled(small: np.ndarray, which: str) -> np.ndarray:
    finite = np.isfinite(small)
    if not finite.any() or np.ptp(small[finite]) == 0:
        raise flat_error(which)
    return np.where(finite, small, small[finite].mean())


def _overlap_ncc(ref: np.ndarray, mov: np.ndarray, shift) -> float:
    """NCC of ``ref[p]`` and ``mov[p - shift]`` over their overlap (an integer shift), -inf if it is tiny."""
    shift = [int(round(v)) for v in shift]
    if any(n - abs(s) < max(4, n // 16) for n, s in zip(ref.shape, shift)):
        return -math.inf
    a = ref[tuple(slice(max(0, s), min(n, n + s)) for n, s in zip(ref.shape, shift))]
    b = mov[tuple(slice(max(0, -s), min(n, n - s)) for n, s in zip(ref.shape, shift))]
    a, b = a - a.mean(), b - b.mean()
    denominator = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum()) / denominator if denominator > 0 else -math.inf


@functools.lru_cache(maxsize=8)
def _taper(shape: tuple[int, int]) -> np.ndarray:
    """The coarse images' taper (a Tukey window), made once per shape (every frame of a video has one)."""
    window = np.outer(tukey(shape[0], 0.2), tukey(shape[1], 0.2))
    window.flags.writeable = False
    return window


_TINY = 100 * np.finfo(np.float64).eps


def _phase_peak(ref: np.ndarray, mov: np.ndarray, upsample: int) -> tuple[np.ndarray, float]:
    """scikit-image's phase correlation of two coarse images (tapered) and the height of its peak."""
    window = _taper(ref.shape)
    fa = sfft.fft2((ref - ref.mean()) * window)
    fb = sfft.fft2((mov - mov.mean()) * window)
    product = fa * fb.conj()
    product /= np.maximum(np.abs(product), _TINY)
    peak = float(sfft.ifft2(product).real.max())
    shift, _, _ = phase_cross_correlation(fa, fb, space="fourier", upsample_factor=upsample, normalization="phase")
    return np.asarray(shift, dtype=np.float64), peak


def _coarse(read_ref, read_mov, shape, upsample, max_shift, side, map, small_ref=None):
    """The coarse shift (full-resolution px), the phase-correlation peak and the reference's mean (the coarse
    reference is ``small_ref`` when given: one reference frame for many)."""
    region, factor = _coarse_region(shape, max_shift, side)
    ref = _filled(_block_means(read_ref, region, factor, map), "reference") if small_ref is None else small_ref
    mov = _filled(_block_means(read_mov, region, factor, map), "moving")
    shift, peak = _phase_peak(ref, mov, upsample)
    # the peak gives the shift modulo the region: score every candidate within max_shift by its overlap
    candidates = [shift + np.array([ky * ref.shape[0], kx * ref.shape[1]]) for ky in (-1, 0, 1) for kx in (-1, 0, 1)]
    allowed = [c for c in candidates if np.abs(c * factor).max() <= max_shift + factor]
    if len(allowed) != 1:
        scored = sorted(((_overlap_ncc(ref, mov, c), i) for i, c in enumerate(allowed or candidates)), reverse=True)
        ncc, best = scored[0][0], (allowed or candidates)[scored[0][1]]
        if not allowed:  # a shift beyond max_shift, or no shift at all (a small overlap may correlate by chance)
            z = peak * math.sqrt(ref.size)
            if ncc >= MIN_CORRELATION and z >= DISTINCT:
                raise _too_far(best * factor, max_shift)
            raise _unrelated("at any shift", ncc, None if ncc < MIN_CORRELATION else z)
        allowed = [best]
    return allowed[0] * factor, peak, float(ref.mean())


def _robust_fit(tiles, used, first, coarse, center, map):
    """The fit on the tiles ``used`` (their sums ``first`` at the coarse shift), refitted without its outliers
    (:func:`~pipeline.core.tilefield.select_tiles`): the fit, the tiles fitted, those left out, and the distances
    and residuals of the tiles fitted."""
    start = np.array([coarse[0], coarse[1], 1.0, 0.0])
    result = fit_tiles([tiles[i] for i in used], first, start, coarse, center, map)
    keep, *fitted = select_tiles(result)
    if keep.all():
        return result, used, [], fitted
    result = fit_tiles([tiles[i] for i, k in zip(used, keep) if k], result.sums[keep], result.at, coarse, center,
                       map)
    return result, [i for i, k in zip(used, keep) if k], [i for i, k in zip(used, keep) if not k], \
        select_tiles(result)[1:]


def _estimate(read_ref, read_mov, shape, *, upsample, max_shift, tolerance, pixels, tile, side, map,
              small_ref=None) -> Estimate:
    shape = _check_options(shape, upsample, max_shift, tolerance, pixels, tile)
    coarse, peak, center = _coarse(read_ref, read_mov, shape, upsample, max_shift, side, map, small_ref)
    regions = layout_tiles(shape, coarse, tile, max(1, pixels // tile**2))
    tiles = list(map(lambda r: read_tile(read_ref, read_mov, shape, coarse, r), regions))
    used, suspects, first = classify_tiles(tiles, coarse, center, map)
    result, fitted, dropped, figures = _robust_fit(tiles, used, first, coarse, center, map)
    reread = lambda t, shift: read_tile(read_ref, read_mov, shape, shift, t.region, t.ref)  # noqa: E731
    others = [(i, False) for i in dropped] + [(i, True) for i in suspects]
    ncc, spread, unmatched, counted = check_tiles(tiles, others, result, figures, center, map, reread)
    params = result.params
    if not ncc >= MIN_CORRELATION:
        raise _unrelated("after registration", ncc)
    if max(abs(params[0]), abs(params[1])) > max_shift:
        raise _too_far(params[:2], max_shift)
    if spread > tolerance:
        raise InputError(f"the tiles disagree by {spread:.2f} px (more than registration.tolerance = "
                         f"{tolerance:g}), so the pair is not related by one translation; set "
                         "registration.method: local for a shift per tile, or raise registration.tolerance")
    if 2 * unmatched > counted and tolerance < UNBOUNDED:
        raise InputError(f"{unmatched} of {counted} textured tiles match neither at the estimated shift "
                         f"({params[0]:.2f}, {params[1]:.2f}) px nor at a shift of their own near it (at most half "
                         "may), so the pair is not related by one translation (a large change, or parallax); set "
                         "registration.method: local for a shift per tile, or check the pair")
    gain, offset = float(params[2]), float(params[3] + center * (1.0 - params[2]))
    return Estimate((float(params[0]), float(params[1])), gain, offset, ncc, peak, spread, len(fitted))


def estimate_translation(read_ref, read_mov, shape, *, upsample=20, max_shift=200.0, tolerance=0.5,
                         pixels=2**22, tile=512, map=builtins.map) -> Estimate:
    """The subpixel translation registering a moving image onto a reference, read region by region.

    Parameters
    ----------
    read_ref, read_mov : callable
        ``read(region) -> ndarray``: the values of the image over ``region`` (a tuple of two step-1 slices
        inside the image), float64 (or any real dtype: integers are never missing) with NaN where a pixel is
        missing. Missing pixels leave every sum (the
        smoothing fills a lone one from its neighbours: :func:`pipeline.core.tiles.read_smoothed`).
    shape : tuple of int
        ``(height, width)`` of both images.
    upsample, max_shift, tolerance : int, float, float
        The coarse phase correlation's subpixel factor; the largest ``|dy|`` and ``|dx|`` (px) accepted,
        which also sizes the coarse region (``8 * max_shift`` px per axis, at least 2048, at most the image:
        no shift within it is ambiguous modulo the region); the most (px) tiles may differ from the result.
    pixels, tile : int
        Refinement budget: up to ``pixels // tile**2`` tiles of ``tile x tile`` spread over the overlap, of a
        quarter of the overlap per axis where that is smaller (at least 64 px), so that a small image still
        has tiles to compare.
    map : callable
        ``map(function, items)``; a thread pool's map reads and computes tiles in parallel.

    Returns
    -------
    Estimate
        Or an InputError for flat images (no textured tile), unrelated ones (NCC below
        :data:`MIN_CORRELATION`), a shift beyond ``max_shift``, tiles disagreeing beyond ``tolerance``, or
        (``tolerance`` below :data:`UNBOUNDED`) more than half the textured tiles matching at no shift near
        the result.
    """
    return _estimate(read_ref, read_mov, shape, upsample=upsample, max_shift=max_shift, tolerance=tolerance,
                     pixels=pixels, tile=tile, side=COARSE_SIDE, map=map)


def estimate_frames(read_ref, read_mov, shape, *, reference_frame="each", upsample=20, max_shift=200.0,
                    tolerance=0.5, pixels=FRAME_PIXELS, tile=FRAME_TILE, map=builtins.map) -> list[Estimate]:
    """One translation per frame of a ``(t, y, x)`` moving stack, against a reference stack's frames.

    Parameters
    ----------
    read_ref, read_mov : callable
        ``read(t, region) -> ndarray``: frame ``t``'s values over ``region`` (two step-1 slices), as for
        :func:`estimate_translation`. Both stacks have ``shape``.
    shape : tuple of int
        ``(frames, height, width)``.
    reference_frame : "each" or int
        ``"each"`` registers moving frame ``t`` onto reference frame ``t``; an index ``k`` registers every
        moving frame onto reference frame ``k`` (read once when at most :data:`CACHED_FRAME` pixels).
    upsample, max_shift, tolerance, pixels, tile
        As in :func:`estimate_translation`; per frame the refinement budget is smaller
        (:data:`FRAME_PIXELS` in tiles of :data:`FRAME_TILE`) and the coarse level's long side is an eighth
        of :data:`COARSE_SIDE`.
    map : callable
        Maps over the frames (a thread pool's map runs frames in parallel); each frame runs sequentially.

    Returns
    -------
    list of Estimate
        One per moving frame, in order; an InputError as :func:`estimate_translation`'s names the frame.
    """
    size, index = check_frames(shape, reference_frame)
    fixed = small = None
    if index is not None:  # one reference frame for all: read it once (when small), its coarse level once
        fixed = functools.partial(read_ref, index)
        if size[0] * size[1] <= CACHED_FRAME:
            fixed = read_checked(fixed, (slice(0, size[0]), slice(0, size[1]))).__getitem__
        region, factor = _coarse_region(_check_options(size, upsample, max_shift, tolerance, pixels, tile),
                                        max_shift, COARSE_SIDE // 8)
        small = _filled(_block_means(fixed, region, factor, builtins.map), "reference")

    def one(t):
        ref = fixed if fixed is not None else (lambda region: read_ref(t, region))
        try:
            return _estimate(ref, lambda region: read_mov(t, region), size, upsample=upsample, max_shift=max_shift,
                             tolerance=tolerance, pixels=pixels, tile=tile, side=COARSE_SIDE // 8, map=builtins.map,
                             small_ref=small)
        except InputError as error:
            raise InputError(f"frame {t}: {error}") from None

    return list(map(one, range(int(shape[0]))))


#: A ``tolerance`` that lets tiles disagree by any amount: the local method's, whose result that disagreement is.
UNBOUNDED = 1e9


class Found(NamedTuple):
    """What :func:`register_images` found: ``shift`` ``(2,)`` or ``(t, 2)``, the estimates (none for a given
    shift) and the local method's field (a :class:`~pipeline.core.tilefield.Field`, a list of them for video,
    or None)."""

    shift: np.ndarray
    estimates: list
    field: Any


def register_images(read_ref, read_mov, shape, *, method="translation", upsample=20, max_shift=200.0,
                    tolerance=0.5, reference_frame="each", tile=64, search=None, shift=None,
                    map=builtins.map) -> Found:
    """One registration, of an image pair or of a video pair: the translation(s), and for ``method="local"``
    the per-tile field around them. The one place the API and a run's plan both come to.

    ``read_ref``/``read_mov`` are ``read(region)`` for 2-D ``shape`` and ``read(t, region)`` for ``(t, y, x)``;
    a given ``shift`` (``(2,)`` or ``(t, 2)``) skips the translation estimate. ``local`` lets tiles disagree
    (``tolerance`` is then :data:`UNBOUNDED`): that disagreement is its result.
    """
    from .tilefield import estimate_field, estimate_field_frames

    options = dict(upsample=upsample, max_shift=max_shift, tolerance=UNBOUNDED if method == "local" else tolerance)
    video = len(shape) == 3
    estimates = []
    if shift is None and not video:
        estimates = [estimate_translation(read_ref, read_mov, shape, map=map, **options)]
    elif shift is None:
        estimates = estimate_frames(read_ref, read_mov, shape, reference_frame=reference_frame, map=map, **options)
    shifts = np.asarray(shift, dtype=np.float64) if shift is not None else np.array([e.shift for e in estimates])
    shifts = shifts.reshape(-1, 2)[0] if not video else shifts
    field = None
    if method == "local" and not video:
        field = estimate_field(read_ref, read_mov, shape, tuple(shifts), tile=tile, search=search, map=map)
    elif method == "local":
        field = estimate_field_frames(read_ref, read_mov, shape, shifts, reference_frame=reference_frame, tile=tile,
                                      search=search, map=map)
    return Found(shifts, list(estimates), field)
