"""Summary statistics of NCC values, gathered block by block and merged at the end."""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["HIST_BINS", "STATS_LENGTH", "block_stats", "summarize"]

#: Histogram bins over [-1, 1] (width 0.001): quantiles are read to +-0.0005.
HIST_BINS = 2000
#: A block's stats vector: the histogram, then the sum and count of finite values, then the pixel count.
STATS_LENGTH = HIST_BINS + 3


#: Values binned per pass of :func:`_accumulate` (a bin-index buffer that stays in the CPU cache).
_SPAN = 16384


@numba.njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})
def _bin_span(values, half, bins, index):
    """Bin index of each value (``bins`` for NaN/Inf), and the sum and count of the finite ones.

    Branch-free, so the compiler vectorises it; ``reassoc`` lets it split the sum.
    """
    total = 0.0
    finite = 0
    for i in range(values.size):
        v = np.float64(values[i])
        ok = abs(v) <= 1.7976931348623157e308  # False for NaN and +-Inf
        u = v if ok else 0.0
        total += u
        finite += 1 if ok else 0
        k = min(max(int((u + 1.0) * half), 0), bins - 1)
        index[i] = k if ok else bins
    return total, finite


@numba.njit(nogil=True, cache=True)
def _accumulate(flat, out):
    bins = out.shape[0] - 3
    half = bins / 2.0
    counts = np.zeros(bins + 1, np.int64)  # the last bin counts NaN/Inf and is dropped
    index = np.empty(_SPAN, np.int32)
    total = 0.0
    finite = 0
    for start in range(0, flat.size, _SPAN):
        stop = min(start + _SPAN, flat.size)
        s, f = _bin_span(flat[start:stop], half, bins, index)
        total += s
        finite += f
        for i in range(stop - start):
            counts[index[i]] += 1
    for k in range(bins):
        out[k] += counts[k]
    out[bins] += total
    out[bins + 1] += finite
    out[bins + 2] += flat.size


def block_stats(values: np.ndarray) -> np.ndarray:
    """Histogram, sum and count of the finite NCC values of one block, as one float64 vector."""
    out = np.zeros(STATS_LENGTH, dtype=np.float64)
    _accumulate(np.ascontiguousarray(values).ravel(), out)
    return out


def summarize(stats: np.ndarray) -> dict[str, float]:
    """Mean, quantiles and NaN fraction from stacked block stats vectors (any leading shape)."""
    stats = stats.reshape(-1, STATS_LENGTH).sum(axis=0)
    counts, total, finite, pixels = stats[:HIST_BINS], stats[HIST_BINS], stats[HIST_BINS + 1], stats[HIST_BINS + 2]
    edges = np.linspace(-1.0, 1.0, HIST_BINS + 1)
    out = {"mean": float(total / finite) if finite else float("nan")}
    cumulative = np.cumsum(counts)
    for q in (0.05, 0.25, 0.5, 0.75, 0.95):
        if finite:
            idx = min(int(np.searchsorted(cumulative, q * cumulative[-1])), HIST_BINS - 1)
            out[f"q{int(round(q * 100)):02d}"] = float(0.5 * (edges[idx] + edges[idx + 1]))
        else:
            out[f"q{int(round(q * 100)):02d}"] = float("nan")
    out["nan_fraction"] = float(1.0 - finite / pixels) if pixels else 0.0
    return out
