"""Local normalized cross-correlation of in-memory blocks (numpy in, numpy out).

This module holds the maths and nothing else: no dask, no zarr, no xarray.

The kernel is a fused, single-pass running-sum filter compiled with numba. For
every output pixel it keeps the five window sums ``Sx, Sy, Sxx, Syy, Sxy`` up to
date in O(1) work, whatever the window size, and derives

    ncc = (n Sxy - Sx Sy) / sqrt((n Sxx - Sx^2) (n Syy - Sy^2))

which is algebraically the textbook ``mean((x-mx)(y-my)) / (std(x) std(y))``.

Two accumulation paths keep it float64-accurate:

* **integers** (8- and 16-bit, and any integer data whose sums fit): the sums
  are exact ``int64``, so the variances are exact and a window is flat exactly
  when its variance is 0. Wider integers (32- and 64-bit) first become exact
  unsigned differences from the block's smallest valid value, so their sums
  are exact whenever the block's *range* (not its dtype) lets them be;
* **floats** (and integer blocks whose range is too wide for exact sums): the
  sums are float64 of values shifted by the block mean, restarted every
  :data:`pipeline.core.sums.RESTART` rows and columns to bound drift. Where a window's variance is
  too small for the running sums to resolve it to ~1e-7 (nearly flat windows,
  large offsets) the window is recomputed directly with the two-pass formula
  (for integers on exact differences from one of the window's own values), and
  flatness is decided by comparing the values themselves, never by an epsilon.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .boundary import nan_border, pad
from .checks import check_window
from .exact import int_sums_exact, offset_wide_integers
from .sums import ncc_float, ncc_int
from .threads import available_cores

__all__ = ["local_ncc_numpy", "ncc_padded", "warm_up"]


def _as_kernel_input(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.float16:  # numba has no float16 arithmetic
        a = a.astype(np.float32)
    elif a.dtype.byteorder not in ("=", "|"):
        a = a.astype(a.dtype.newbyteorder("="))
    return np.ascontiguousarray(a)


def _frame(a, b, m, radius, flat, min_count, out, extra, threads) -> None:
    """Fill ``out`` (h, w) from padded 2-D ``a``, ``b`` ((h + 2r), (w + 2r)) and mask ``m`` (or None).

    Where the invalid pixels of ``m`` lie only in bands along the block's edges (whole rows and columns, as a
    shifted image's missing border and its reflection make them), the windows clear of them take the
    unmasked kernel (about 1.6 times faster) and only the strips along the bands the masked one. Each window's
    NCC depends on its own pixels only, so the exact integer path gives the same bits; the float path, whose
    centring is per region, the same values within its rounding (< 1e-7).
    """
    box = None if m is None else _clean_box(m, radius, out.shape)
    if box is None:
        _frame_part(a, b, m, radius, flat, min_count, out, extra, threads)
        return
    (i0, i1), (j0, j1) = box
    h, w = out.shape
    parts = [((0, i0), (0, w), m), ((i1, h), (0, w), m), ((i0, i1), (0, j0), m), ((i0, i1), (j1, w), m),
             ((i0, i1), (j0, j1), None)]
    for (y0, y1), (x0, x1), mask in parts:
        if y1 <= y0 or x1 <= x0:
            continue
        rows, cols = slice(y0, y1 + 2 * radius), slice(x0, x1 + 2 * radius)
        target = (slice(y0, y1), slice(x0, x1))
        whole = x0 == 0 and x1 == w  # full rows: contiguous views, written in place
        part_out = out[target] if whole else np.empty((y1 - y0, x1 - x0), dtype=np.float32)
        part_extra = None if extra is None else (extra[(slice(None),) + target] if whole else
                                                 np.empty((3, y1 - y0, x1 - x0), dtype=np.float32))
        _frame_part(*(np.ascontiguousarray(x[rows, cols]) for x in (a, b)),
                    None if mask is None else np.ascontiguousarray(mask[rows, cols]), radius, flat, min_count,
                    part_out, part_extra, threads)
        if not whole:
            out[target] = part_out
            if extra is not None:
                extra[(slice(None),) + target] = part_extra


def _clean_box(m, radius, shape):
    """The output rows ``(i0, i1)`` and columns ``(j0, j1)`` whose windows hold no invalid pixel, when the invalid
    pixels of the padded mask ``m`` (0 = invalid) are whole rows and columns along its edges and that box is
    at least half the block; else None (the whole block takes the masked kernel)."""
    bad = m == 0
    full_rows, full_cols = bad.all(axis=1), bad.all(axis=0)
    r0 = int(np.argmin(full_rows)) if not full_rows.all() else len(full_rows)
    r1 = len(full_rows) - int(np.argmin(full_rows[::-1]))
    c0 = int(np.argmin(full_cols)) if not full_cols.all() else len(full_cols)
    c1 = len(full_cols) - int(np.argmin(full_cols[::-1]))
    if r1 <= r0 or c1 <= c0 or bad[r0:r1, c0:c1].any():
        return None
    (i0, i1), (j0, j1) = (r0, r1 - 2 * radius), (c0, c1 - 2 * radius)
    if i1 <= i0 or j1 <= j0 or 2 * (i1 - i0) * (j1 - j0) < shape[0] * shape[1]:
        return None
    return (i0, i1), (j0, j1)


def _frame_part(a, b, m, radius, flat, min_count, out, extra, threads) -> None:
    """:func:`_frame` on one region: the masked kernel wherever ``m`` is given."""
    h = out.shape[0]
    exact = int_sums_exact(a.dtype, radius) and int_sums_exact(b.dtype, radius)
    if not exact and (a.dtype.kind in "iu" or b.dtype.kind in "iu"):
        # Pairs whose dtypes already bound the sums (8- and 16-bit) skip this: no extra pass for them.
        a, b, exact = offset_wide_integers(a, b, m, radius)
    if exact:
        def strip(lo, hi):
            ncc_int(a[lo : hi + 2 * radius], b[lo : hi + 2 * radius],
                     None if m is None else m[lo : hi + 2 * radius], radius, flat, min_count, out[lo:hi],
                     None if extra is None else extra[:, lo:hi])
    else:
        # The shift and scale are per block, so results differ between chunkings
        # only within the float64 rounding the fallback threshold allows (< 1e-7).
        shift_x, inv_x = _shift_and_scale(a if m is None else a[m != 0])
        shift_y, inv_y = _shift_and_scale(b if m is None else b[m != 0])
        rel_x, rel_y = a.dtype.kind in "iu", b.dtype.kind in "iu"

        def strip(lo, hi):
            ncc_float(
                a[lo : hi + 2 * radius], b[lo : hi + 2 * radius], None if m is None else m[lo : hi + 2 * radius],
                radius, flat, min_count, shift_x, shift_y, inv_x, inv_y, rel_x, rel_y, out[lo:hi],
                None if extra is None else extra[:, lo:hi],
            )

    threads = max(1, min(threads, h // 64))
    if threads == 1:
        strip(0, h)
        return
    bounds = np.linspace(0, h, threads + 1).astype(int)
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(strip, bounds[:-1], bounds[1:]))


def _shift_and_scale(a: np.ndarray) -> tuple[float, float]:
    """Centre and inverse half-range of a block: (x - shift) * inv lies in [-1, 1]."""
    if a.size == 0:
        return 0.0, 1.0
    lo = float(a.min())
    hi = float(a.max())
    shift = 0.5 * lo + 0.5 * hi  # no overflow even for lo, hi near the float64 limits
    half = max(hi - shift, shift - lo)
    return shift, (1.0 / half if half > 0.0 and np.isfinite(1.0 / half) else 1.0)


def ncc_padded(
    a: np.ndarray,
    b: np.ndarray,
    radius: int,
    flat: float = 0.0,
    threads: int = 1,
    *,
    invalid: np.ndarray | None = None,
    min_valid: float = 0.5,
    extras: bool = False,
    out: np.ndarray | None = None,
    extra_out: np.ndarray | None = None,
):
    """Local NCC of two blocks already padded by ``radius`` on their last two axes.

    Parameters
    ----------
    a, b : ndarray
        Padded blocks of the same shape, 2-D ``(y, x)`` or 3-D ``(t, y, x)``, any
        real integer or float dtype.
    radius : int
        Window radius; the window is ``(2 radius + 1)`` square.
    flat : float
        Value for windows whose valid values are all equal in either block.
    threads : int
        Threads to split each frame into row strips (the kernel releases the GIL).
    invalid : ndarray of bool, optional
        Padded like ``a``: True where a pixel is nodata in either image (see
        :func:`invalid_mask`). Each window then uses only the pixels valid in
        both; with fewer than ``min_valid`` of its pixels valid it is NaN.
    min_valid : float
        Fraction of the window that must be valid, in [0, 1].
    extras : bool
        Also return, stacked in a float32 array of shape ``(3,) + out.shape``,
        the valid fraction and the local (population) std of each image.
    out, extra_out : ndarray of float32, optional
        C-contiguous arrays to write the result (and the extras) into, e.g.
        buffers reused from block to block; new arrays if not given.

    Returns
    -------
    ndarray of float32, or (ndarray, ndarray)
        The NCC, shape of ``a`` minus ``2 radius`` on the last two axes (and the extras).
    """
    if a.shape != b.shape:
        raise ValueError(f"padded blocks must have the same shape, got {a.shape} and {b.shape}")
    a = _as_kernel_input(a)
    b = _as_kernel_input(b)
    valid = None
    if invalid is not None and invalid.any():
        valid = np.ascontiguousarray(~np.asarray(invalid, dtype=bool)).view(np.uint8)
    shape = a.shape[:-2] + (a.shape[-2] - 2 * radius, a.shape[-1] - 2 * radius)
    out = _output(out, shape, "out")
    extra = _output(extra_out, (3,) + shape, "extra_out") if extras else None
    if out.size:
        n = (2 * radius + 1) ** 2
        min_count = float(math.ceil(min_valid * n - 1e-9))
        flat = float(flat)
        for t in np.ndindex(a.shape[:-2]):
            _frame(a[t], b[t], None if valid is None else valid[t], radius, flat, min_count, out[t],
                   None if extra is None else extra[(slice(None),) + t], threads)
    return (out, extra) if extras else out


def warm_up(reference_dtype, moving_dtype, radius: int, *, masked: bool = False, extras: bool = False) -> None:
    """Load (or compile) the compiled kernel for these inputs, on a tiny block.

    numba loads a kernel specialisation on its first call: ~0.3 s here, paid by
    every thread that reaches it meanwhile. A run calls this in the background
    while it prepares its outputs, so the first blocks do not wait.
    """
    side = 2 * radius + 2
    a = np.zeros((side, side), dtype=reference_dtype)
    b = np.zeros((side, side), dtype=moving_dtype)
    invalid = np.zeros((side, side), dtype=bool) if masked else None
    if masked:
        invalid[0, 0] = True  # an all-valid mask is skipped, which would warm the unmasked kernel instead
    ncc_padded(a, b, radius, invalid=invalid, extras=extras)


def _output(given: np.ndarray | None, shape: tuple[int, ...], name: str) -> np.ndarray:
    if given is None:
        return np.empty(shape, dtype=np.float32)
    if given.shape != shape or given.dtype != np.float32 or not given.flags.c_contiguous:
        raise ValueError(f"{name} must be a C-contiguous float32 array of shape {shape}, "
                         f"got {given.dtype} {given.shape}")
    return given


def local_ncc_numpy(
    reference: np.ndarray,
    moving: np.ndarray,
    window: int = 7,
    *,
    boundary: str = "reflect",
    flat: float = 0.0,
    threads: int | None = None,
    invalid: np.ndarray | None = None,
    min_valid: float = 0.5,
    extras: bool = False,
):
    """Local NCC of two in-memory arrays (2-D, or 3-D with frames on axis 0).

    ``invalid`` is an unpadded nodata mask (see :func:`invalid_mask`); it is
    padded like the images, except that ``constant`` padding is valid data.
    See :func:`pipeline.local_ncc` for the other parameters.
    """
    radius = check_window(window)
    if threads is None:
        threads = available_cores()
    padded_invalid = None if invalid is None else pad(np.asarray(invalid, dtype=bool), radius, boundary)
    result = ncc_padded(pad(reference, radius, boundary), pad(moving, radius, boundary), radius, flat, threads,
                        invalid=padded_invalid, min_valid=min_valid, extras=extras)
    if boundary == "nan":
        for array in result if extras else (result,):
            nan_border(array, radius, (0, 0), array.shape[-2:])
    return result
