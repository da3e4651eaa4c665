"""Summary statistics of NCC values, gathered block by block and merged at the end.

A block's statistics are one float64 vector (see :func:`block_stats`); a run
keeps one per block in its ledger and merges them with :func:`summarize` (the
run's summary) or :func:`describe_stats` (``lncc inspect``: any subset of the
blocks, more quantiles, shares and a coarse histogram). The module constants
name the vector's columns, so no other code needs to know their order.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = [
    "HIST_BINS",
    "SUM",
    "FINITE",
    "MIN",
    "MAX",
    "FLAT",
    "FLAT_VALUE",
    "PIXELS",
    "STATS_LENGTH",
    "REPORT_QUANTILES",
    "block_stats",
    "summarize",
    "merge_stats",
    "coarse_histogram",
    "describe_stats",
    "done_blocks",
    "entry_is_valid",
    "entries_valid",
]

#: Histogram bins over [-1, 1] (width 0.001): quantiles are read to +-0.0005.
HIST_BINS = 2000
#: Column of the sum of the finite values (the histogram is columns ``0 .. HIST_BINS - 1``).
SUM = HIST_BINS
#: Column of the count of finite values.
FINITE = HIST_BINS + 1
#: Column of the smallest finite value (+inf when there is none).
MIN = HIST_BINS + 2
#: Column of the largest finite value (-inf when there is none).
MAX = HIST_BINS + 3
#: Column of the count of values exactly equal to the flat value (0 when it is NaN).
FLAT = HIST_BINS + 4
#: Column of the flat value itself, as stored in the values' dtype (NaN when it is NaN).
FLAT_VALUE = HIST_BINS + 5
#: Column of the pixel count, the last one: NaN there means no entry (a block not done).
PIXELS = HIST_BINS + 6
#: Length of a block's stats vector.
STATS_LENGTH = HIST_BINS + 7

#: Values binned per pass of :func:`_accumulate` (a bin-index buffer that stays in the CPU cache).
_SPAN = 16384
#: The quantiles :func:`summarize` reports.
_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
#: The quantiles :func:`describe_stats` reports by default.
REPORT_QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


#: An order key beyond every finite value's (keys of finite float64 stay within +-(2**63 - 2**52)).
_KEY_NONE = np.iinfo(np.int64).max


@numba.njit(nogil=True, cache=True, inline="always")
def _order_key(b, shift):
    """An integer in the order of the float whose bits are ``b`` (its int32 or int64 view; ``shift`` 31 or 63).

    Positive floats already sort as their bits; negative ones sort reversed, so
    their magnitude bits are flipped. Self-inverse, as the sign bit is kept.
    """
    b = np.int64(b)
    return b ^ ((b >> shift) & ((np.int64(1) << shift) - 1))


@numba.njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})
def _bin_span(values, bits, shift, half, bins, index, flat):
    """Bin index of each value (``bins`` for NaN/Inf); sum, count and the order keys of the smallest and
    largest finite values; count of values equal to ``flat``.

    Branch-free, so the compiler vectorises it; ``reassoc`` lets it split the
    sum. A NaN ``flat`` equals nothing, so its count is 0 without a test. The
    extremes are taken on :func:`_order_key` of ``bits`` (``values`` viewed as
    integers) because a float min/max reduction does not vectorise unless NaN
    is assumed away.
    """
    total = 0.0
    finite = 0
    equal = 0
    lo = _KEY_NONE
    hi = -_KEY_NONE
    for i in range(values.size):
        v = np.float64(values[i])
        ok = abs(v) <= 1.7976931348623157e308  # False for NaN and +-Inf
        u = v if ok else 0.0
        total += u
        finite += 1 if ok else 0
        equal += 1 if v == flat else 0
        key = _order_key(bits[i], shift)
        lo = min(lo, key if ok else _KEY_NONE)
        hi = max(hi, key if ok else -_KEY_NONE)
        k = min(max(int((u + 1.0) * half), 0), bins - 1)
        index[i] = k if ok else bins
    return total, finite, lo, hi, equal


@numba.njit(nogil=True, cache=True)
def _accumulate(values, bits, flat, out):
    """Add the histogram and counts of ``values`` to ``out``; return the order keys of its extremes."""
    bins = HIST_BINS
    half = bins / 2.0
    shift = bits.itemsize * 8 - 1
    counts = np.zeros(bins + 1, np.int64)  # the last bin counts NaN/Inf and is dropped
    index = np.empty(_SPAN, np.int32)
    total = 0.0
    finite = 0
    equal = 0
    lo = _KEY_NONE
    hi = -_KEY_NONE
    for start in range(0, values.size, _SPAN):
        stop = min(start + _SPAN, values.size)
        s, f, span_lo, span_hi, e = _bin_span(values[start:stop], bits[start:stop], shift, half, bins, index, flat)
        total += s
        finite += f
        equal += e
        lo = min(lo, span_lo)
        hi = max(hi, span_hi)
        for i in range(stop - start):
            counts[index[i]] += 1
    for k in range(bins):
        out[k] += counts[k]
    out[SUM] += total
    out[FINITE] += finite
    out[FLAT] += equal
    out[PIXELS] += values.size
    return lo, hi


def _from_key(key: int, dtype: np.dtype) -> float:
    """The float whose :func:`_order_key` is ``key`` (``_order_key`` is its own inverse)."""
    ints = np.dtype(f"int{dtype.itemsize * 8}")
    shift = dtype.itemsize * 8 - 1
    bits = key ^ ((key >> shift) & ((1 << shift) - 1))
    return float(np.array(bits, dtype=ints).view(dtype))


def block_stats(values: np.ndarray, flat: float = 0.0) -> np.ndarray:
    """Statistics of the NCC values of one block, as one float64 vector of length :data:`STATS_LENGTH`.

    Parameters
    ----------
    values : ndarray
        The block's NCC values, any shape (float32 as the kernel writes them).
    flat : float
        The value flat windows were given (may be NaN): the vector counts the
        values exactly equal to it, as stored in ``values``' dtype.

    Returns
    -------
    ndarray of float64
        The histogram (``HIST_BINS`` bins over [-1, 1], values outside clamped
        into the end bins), then by column: :data:`SUM` and :data:`FINITE` of
        the finite values, their :data:`MIN` and :data:`MAX` (+inf and -inf
        when there are none), the :data:`FLAT` count and :data:`FLAT_VALUE`,
        and the :data:`PIXELS` count.
    """
    values = np.ascontiguousarray(values).ravel()
    if values.dtype not in (np.float32, np.float64):
        values = values.astype(np.float64)
    flat = float(values.dtype.type(flat))  # the kernel writes flat into float32: 0.1 is stored rounded
    out = np.zeros(STATS_LENGTH, dtype=np.float64)
    lo, hi = _accumulate(values, values.view(f"int{values.dtype.itemsize * 8}"), flat, out)
    out[MIN] = _from_key(lo, values.dtype) if out[FINITE] else np.inf
    out[MAX] = _from_key(hi, values.dtype) if out[FINITE] else -np.inf
    out[FLAT_VALUE] = flat
    return out


def _bin_of(value: float) -> int:
    """The histogram bin of a finite value, as :func:`_bin_span` bins it."""
    return min(max(int((value + 1.0) * (HIST_BINS / 2.0)), 0), HIST_BINS - 1)


def _check_length(stats: np.ndarray, name: str) -> np.ndarray:
    stats = np.asarray(stats, dtype=np.float64)
    if stats.ndim == 0 or stats.shape[-1] != STATS_LENGTH:
        raise ValueError(f"{name} must have stats vectors of length {STATS_LENGTH} on its last axis, got shape "
                         f"{stats.shape}; build them with block_stats (a ledger from an older version has other "
                         f"columns: recompute it)")
    return stats


def _merged_flat_value(values: np.ndarray) -> float:
    """The one flat value the entries record (NaN if they record none)."""
    distinct = np.unique(values[~np.isnan(values)])
    if distinct.size > 1:
        raise ValueError(f"the stats entries record different flat values {distinct.tolist()}; expected one per "
                         f"run: summarize the entries of one run only")
    return float(distinct[0]) if distinct.size else float("nan")


def summarize(stats: np.ndarray) -> dict[str, float]:
    """Mean, quantiles, NaN and flat fractions from stacked block stats vectors (any leading shape).

    Quantiles are read from the merged histogram: the midpoint of the bin where
    the quantile falls, except where the histogram cannot resolve it. When that
    bin holds only the flat value (its count equals the :data:`FLAT` count) the
    quantile is the flat value exactly, and every quantile is clamped to the
    smallest and largest finite value, so a map of one value gives that value.

    Returns
    -------
    dict
        ``mean``, ``q05``, ``q25``, ``q50``, ``q75``, ``q95`` (NaN without finite
        values), ``nan_fraction`` (non-finite pixels, flat windows included when
        flat is NaN) and ``flat_fraction`` (pixels exactly equal to the flat
        value; 0 when it is NaN).
    """
    merged = merge_stats(stats)
    finite, pixels = merged[FINITE], merged[PIXELS]
    out = {"mean": float(merged[SUM] / finite) if finite else float("nan")}
    out.update(_quantiles(merged, _QUANTILES))
    out["nan_fraction"] = float(1.0 - finite / pixels) if pixels else 0.0
    out["flat_fraction"] = float(merged[FLAT] / pixels) if pixels else 0.0
    return out


def merge_stats(stats: np.ndarray, where: np.ndarray | None = None) -> np.ndarray:
    """One stats vector for the union of the blocks of stacked stats vectors: what one block holding them all has.

    Parameters
    ----------
    stats : ndarray
        Stats vectors on the last axis, any leading shape (a ledger: the block
        grid, NaN rows for blocks not done).
    where : ndarray of bool, optional
        The leading shape: merge only the entries where True (the blocks done),
        without copying the others out. Default: every entry (a NaN row then
        makes the counts NaN).

    Returns
    -------
    ndarray of float64
        Length :data:`STATS_LENGTH`: counts, sums and the flat count added, the
        extremes taken, the one flat value kept (NaN if no entry records one).
        With no entry merged, every count is 0, MIN +inf and MAX -inf.
    """
    stats = _check_length(stats, "stats")
    if where is not None and np.shape(where) != stats.shape[:-1]:
        raise ValueError(f"where must have the stats' leading shape {stats.shape[:-1]}, got {np.shape(where)}; "
                         f"pass one bool per stats vector (e.g. done_blocks(ledger))")
    rows = True if where is None else np.asarray(where, dtype=bool).reshape(-1)
    stats = stats.reshape(-1, STATS_LENGTH)
    # where= rather than stats[rows]: the ledger of a 50,000-block run is 800 MB, not to be copied
    merged = stats.sum(axis=0) if where is None else stats.sum(axis=0, where=rows[:, None])
    merged[MIN] = stats[:, MIN].min(initial=np.inf, where=rows)
    merged[MAX] = stats[:, MAX].max(initial=-np.inf, where=rows)
    merged[FLAT_VALUE] = _merged_flat_value(stats[:, FLAT_VALUE] if where is None else stats[rows, FLAT_VALUE])
    return merged


def _quantile_name(q: float) -> str:
    return f"q{int(round(q * 100)):02d}"


def _quantiles(merged: np.ndarray, quantiles) -> dict[str, float]:
    """The quantiles of a merged stats vector by :func:`summarize`'s rule, keyed ``qNN`` (NaN without finite values)."""
    counts, finite, lo, hi = merged[:HIST_BINS], merged[FINITE], merged[MIN], merged[MAX]
    flat, flat_count = merged[FLAT_VALUE], merged[FLAT]
    flat_bin = _bin_of(flat) if flat_count and math.isfinite(flat) else -1
    edges = np.linspace(-1.0, 1.0, HIST_BINS + 1)
    cumulative = np.cumsum(counts)
    out = {}
    for q in quantiles:
        name = _quantile_name(q)
        if not finite:
            out[name] = float("nan")
            continue
        idx = min(int(np.searchsorted(cumulative, q * cumulative[-1])), HIST_BINS - 1)
        value = flat if idx == flat_bin and counts[idx] == flat_count else 0.5 * (edges[idx] + edges[idx + 1])
        out[name] = float(min(max(value, lo), hi))
    return out


def coarse_histogram(merged: np.ndarray, bins: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """The histogram of a merged stats vector in ``bins`` equal bins over [-1, 1], exactly (no re-binning error).

    Each coarse bin is a whole number of the vector's :data:`HIST_BINS` bins,
    so its count is exact. The bins are numpy's: ``[edge_k, edge_k+1)``, the
    last one closed (1.0 falls in it), as ``numpy.histogram(finite_values,
    edges)`` counts them; but for a negative value within 5.6e-17 of 0, which
    :func:`block_stats` counts in ``[0, ...)`` (``(v + 1) * 1000`` rounds to 1000).

    Returns
    -------
    (edges, counts)
        ``bins + 1`` float64 edges (``numpy.linspace(-1, 1, bins + 1)``) and
        ``bins`` int64 counts of the finite values.
    """
    if not isinstance(bins, (int, np.integer)) or bins < 1 or HIST_BINS % bins:
        raise ValueError(f"bins must divide the {HIST_BINS} histogram bins of the block stats (e.g. 10, 20, 40, "
                         f"100), got {bins!r}; pick such a divisor so each bin is whole ledger bins")
    merged = _check_length(merged, "merged")
    if merged.ndim != 1:
        raise ValueError(f"merged must be one stats vector, got shape {merged.shape}; merge stacked vectors "
                         f"with merge_stats first")
    counts = merged[:HIST_BINS].reshape(bins, HIST_BINS // bins).sum(axis=1).astype(np.int64)
    return np.linspace(-1.0, 1.0, bins + 1), counts


def describe_stats(stats: np.ndarray, where: np.ndarray | None = None, *, quantiles=REPORT_QUANTILES,
                   bins: int = 20) -> dict:
    """Everything ``lncc inspect`` says of a map's values, from stacked block stats (the blocks ``where`` True).

    Quantiles follow :func:`summarize`'s rule (the same values for the same
    ``qNN``); the mean, extremes, counts and histogram are exact.

    Parameters
    ----------
    stats, where
        As for :func:`merge_stats`.
    quantiles : sequence of float
        In [0, 1]; keyed ``qNN`` (percent, rounded) in the result.
    bins : int
        Bins of the coarse histogram over [-1, 1] (see :func:`coarse_histogram`).

    Returns
    -------
    dict
        ``pixels``, ``finite`` (finite values: flat ones included when the flat
        value is a number), ``flat`` (values exactly equal to the flat value;
        0 when it is NaN) and ``nonfinite`` counts (int); ``flat_value`` (NaN
        if none is recorded); ``finite_fraction``, ``flat_fraction`` and
        ``nonfinite_fraction`` (of ``pixels``; NaN without pixels); ``mean``,
        ``min``, ``max`` and ``quantiles`` (a dict, ``q01`` ...; NaN without
        finite values); ``histogram``: ``edges`` and ``counts`` (lists), and
        ``flat_bin``, the bin holding the flat pixels (None without any).
    """
    merged = merge_stats(stats, where)
    pixels, finite, flat = int(merged[PIXELS]), int(merged[FINITE]), int(merged[FLAT])
    nan = float("nan")
    edges, counts = coarse_histogram(merged, bins)
    flat_value = float(merged[FLAT_VALUE])
    flat_bin = _bin_of(flat_value) // (HIST_BINS // bins) if flat and math.isfinite(flat_value) else None
    return {
        "pixels": pixels, "finite": finite, "flat": flat, "nonfinite": pixels - finite,
        "flat_value": flat_value,
        "finite_fraction": finite / pixels if pixels else nan,
        "flat_fraction": flat / pixels if pixels else nan,
        "nonfinite_fraction": (pixels - finite) / pixels if pixels else nan,
        "mean": float(merged[SUM] / finite) if finite else nan,
        "min": float(merged[MIN]) if finite else nan,
        "max": float(merged[MAX]) if finite else nan,
        "quantiles": _quantiles(merged, quantiles),
        "histogram": {"edges": edges.tolist(), "counts": counts.tolist(), "flat_bin": flat_bin},
    }


def done_blocks(ledger: np.ndarray) -> np.ndarray:
    """True where a stacked stats entry is present (its :data:`PIXELS` column is not NaN).

    Parameters
    ----------
    ledger : ndarray
        Stats vectors on the last axis, any leading shape (e.g. the block grid),
        NaN rows for blocks without an entry.

    Returns
    -------
    ndarray of bool
        The ledger's leading shape.
    """
    return ~np.isnan(_check_length(ledger, "ledger")[..., PIXELS])


def entries_valid(ledger: np.ndarray, pixels) -> np.ndarray:
    """Whether each stacked stats entry is self-consistent, so that a garbled one can be recognised.

    An entry is valid when its histogram counts are non-negative integers
    summing to :data:`FINITE`; ``FINITE <= PIXELS`` and :data:`PIXELS` equals
    the expected pixel count; its sum is finite; with finite values, ``MIN <=
    MAX`` (both finite, within [-1, 1] up to the bins) and no bin outside theirs
    counts anything, without any MIN is +inf and MAX -inf; the :data:`FLAT`
    count is an integer in ``[0, FINITE]``, 0 when :data:`FLAT_VALUE` is NaN,
    and otherwise no more than the count of the flat value's bin.

    Parameters
    ----------
    ledger : ndarray
        Stats vectors on the last axis, any leading shape.
    pixels : int or array of int
        The expected pixel count of each entry (broadcast to the leading shape).

    Returns
    -------
    ndarray of bool
        The ledger's leading shape; an absent entry (NaN row) is not valid.
    """
    ledger = _check_length(ledger, "ledger")
    with np.errstate(invalid="ignore", over="ignore"):  # a garbled entry may hold anything
        counts = ledger[..., :HIST_BINS]
        finite, lo, hi = ledger[..., FINITE], ledger[..., MIN], ledger[..., MAX]
        flat_count, flat_value, total = ledger[..., FLAT], ledger[..., FLAT_VALUE], ledger[..., PIXELS]

        def whole(x):
            return np.isfinite(x) & (x >= 0) & (x == np.floor(x))

        ok = whole(counts).all(axis=-1) & whole(finite) & whole(total) & whole(flat_count)
        ok &= (counts.sum(axis=-1) == finite) & (finite <= total) & (total == np.asarray(pixels))
        ok &= np.isfinite(ledger[..., SUM])
        some = finite > 0
        ok &= np.where(some, np.isfinite(lo) & np.isfinite(hi) & (lo <= hi), (lo == np.inf) & (hi == -np.inf))
        # Bins outside [bin(MIN), bin(MAX)] must be empty: values are binned as _bin_span bins them.
        bins = np.arange(HIST_BINS)
        half = HIST_BINS / 2.0
        lo_bin = np.clip(np.floor((np.where(some, lo, 0.0) + 1.0) * half), 0, HIST_BINS - 1)[..., None]
        hi_bin = np.clip(np.floor((np.where(some, hi, 0.0) + 1.0) * half), 0, HIST_BINS - 1)[..., None]
        outside = np.where((bins < lo_bin) | (bins > hi_bin), counts, 0.0).sum(axis=-1)
        ok &= np.where(some, outside == 0, True)
        has_flat = ~np.isnan(flat_value)
        ok &= flat_count <= finite
        ok &= np.where(has_flat, np.isfinite(flat_value), flat_count == 0)
        flat_bin = np.clip(np.floor((np.where(has_flat & np.isfinite(flat_value), flat_value, 0.0) + 1.0) * half),
                           0, HIST_BINS - 1).astype(np.int64)
        in_bin = np.take_along_axis(counts, flat_bin[..., None], axis=-1)[..., 0]
        ok &= np.where(has_flat & (flat_count > 0), (flat_count <= in_bin) & (lo <= flat_value) & (flat_value <= hi),
                       True)
    return np.asarray(ok, dtype=bool)


def entry_is_valid(entry: np.ndarray, pixels: int) -> bool:
    """Whether one stats vector is self-consistent and covers ``pixels`` pixels (see :func:`entries_valid`)."""
    entry = np.asarray(entry, dtype=np.float64)
    if entry.shape != (STATS_LENGTH,):
        return False
    return bool(entries_valid(entry, pixels))
