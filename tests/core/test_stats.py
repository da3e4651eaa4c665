"""Block statistics (histogram, sum, counts) and the run summary built from them."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.stats import (
    FINITE,
    FLAT,
    FLAT_VALUE,
    HIST_BINS,
    MAX,
    MIN,
    PIXELS,
    STATS_LENGTH,
    SUM,
    block_stats,
    done_blocks,
    entries_valid,
    entry_is_valid,
    summarize,
)

QUANTILES = (5, 25, 50, 75, 95)


def _reference_stats(values: np.ndarray, flat_value: float = 0.0) -> np.ndarray:
    """The stats vector by plain numpy: bins of width 2 / HIST_BINS over [-1, 1], values outside clamped."""
    flat = values.ravel().astype(np.float64)
    finite = flat[np.isfinite(flat)]
    index = np.clip(((finite + 1.0) * (HIST_BINS / 2.0)).astype(np.int64), 0, HIST_BINS - 1)
    out = np.zeros(STATS_LENGTH)
    out[:HIST_BINS] = np.bincount(index, minlength=HIST_BINS)
    out[SUM], out[FINITE], out[PIXELS] = finite.sum(), finite.size, flat.size
    out[MIN] = finite.min() if finite.size else np.inf
    out[MAX] = finite.max() if finite.size else -np.inf
    stored = float(values.dtype.type(flat_value))
    out[FLAT], out[FLAT_VALUE] = np.count_nonzero(flat == stored), stored
    return out


@settings(max_examples=60, deadline=None)
@given(shape=st.tuples(st.integers(1, 300), st.integers(1, 300)), seed=st.integers(0, 2**16),
       specials=st.integers(0, 50), dtype=st.sampled_from(["float32", "float64"]))
def test_block_stats_equal_numpy(shape, seed, specials, dtype):
    """Counts equal numpy's exactly (NaN and +-Inf left out, -1 and 1 in the end bins, values just off a bin
    edge on the right side), sums to 1e-12, for blocks larger and smaller than one binning span."""
    rng = np.random.default_rng(seed)
    values = rng.uniform(-1.0, 1.0, shape).astype(dtype)
    flat = values.reshape(-1)
    picks = rng.integers(0, flat.size, specials)
    flat[picks] = rng.choice(np.array([np.nan, np.inf, -np.inf, 1.0, -1.0, 0.0, -0.999, 0.001], dtype=dtype),
                             size=specials)
    got = block_stats(values)
    expected = _reference_stats(values)
    np.testing.assert_array_equal(got[:HIST_BINS], expected[:HIST_BINS])
    np.testing.assert_array_equal(got[SUM + 1:], expected[SUM + 1:])  # counts, min, max, flat count and value
    np.testing.assert_allclose(got[SUM], expected[SUM], rtol=1e-12, atol=1e-9)
    assert entry_is_valid(got, values.size)


def test_large_block_and_summary():
    """A 4096 x 4097 block (many binning spans, a ragged last one): exact counts, and a summary whose mean and
    quantiles match numpy's to the bin width."""
    rng = np.random.default_rng(3)
    values = np.clip(rng.normal(0.2, 0.3, (4096, 4097)), -1, 1).astype(np.float32)
    values[::101, ::7] = np.nan
    got = block_stats(values)
    expected = _reference_stats(values)
    np.testing.assert_array_equal(got[:HIST_BINS], expected[:HIST_BINS])
    summary = summarize(np.stack([got, block_stats(values[:10])]))
    both = np.concatenate([values.ravel(), values[:10].ravel()]).astype(np.float64)
    finite = both[np.isfinite(both)]
    assert abs(summary["mean"] - finite.mean()) < 1e-9
    for q in QUANTILES:
        assert abs(summary[f"q{q:02d}"] - np.quantile(finite, q / 100)) <= 1.0 / HIST_BINS + 1e-6
    assert abs(summary["nan_fraction"] - np.isnan(both).mean()) < 1e-12
    assert summary["flat_fraction"] == np.count_nonzero(both == 0.0) / both.size


def _stack(blocks, flat=0.0):
    return np.stack([block_stats(b, flat) for b in blocks])


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), blocks=st.integers(1, 5), flat=st.sampled_from([0.0, 0.5, -1.0, np.nan]),
       flat_share=st.sampled_from([0.0, 0.3, 0.7]), nan_share=st.sampled_from([0.0, 0.1]))
def test_summary_of_merged_blocks_matches_numpy(seed, blocks, flat, flat_share, nan_share):
    """Random blocks (some flat, some NaN) merged: the mean, quantiles (to the bin width; exactly where the
    flat value decides them), NaN and flat fractions equal numpy's on all the values; quantiles lie within
    the values' min and max."""
    rng = np.random.default_rng(seed)
    parts = []
    for _ in range(blocks):
        v = rng.uniform(-0.9, 0.9, tuple(rng.integers(1, 60, 2))).astype(np.float32)
        v[rng.random(v.shape) < flat_share] = flat
        v[rng.random(v.shape) < nan_share] = np.nan
        parts.append(v)
    summary = summarize(_stack(parts, flat))
    both = np.concatenate([p.ravel() for p in parts]).astype(np.float64)
    finite = both[np.isfinite(both)]
    assert summary["nan_fraction"] == pytest.approx(1.0 - finite.size / both.size, abs=1e-12)
    expected_flat = 0.0 if np.isnan(flat) else np.count_nonzero(both == flat) / both.size
    assert summary["flat_fraction"] == pytest.approx(expected_flat, abs=1e-12)
    if not finite.size:
        assert all(np.isnan(summary[f"q{q:02d}"]) for q in QUANTILES) and np.isnan(summary["mean"])
        return
    assert summary["mean"] == pytest.approx(finite.mean(), abs=1e-9)
    bins = np.clip(((finite + 1.0) * (HIST_BINS / 2.0)).astype(np.int64), 0, HIST_BINS - 1)
    for q in QUANTILES:
        got = summary[f"q{q:02d}"]
        assert finite.min() <= got <= finite.max()
        # The histogram reads the order statistic of rank ceil(q n): numpy's inverted-CDF quantile.
        expected = np.quantile(finite, q / 100, method="inverted_cdf")
        assert abs(got - expected) <= 1.0 / HIST_BINS + 1e-6
        if expected == flat and np.all(finite[bins == bins[finite == flat][0]] == flat):
            assert got == flat


@pytest.mark.parametrize("flat", [0.0, 0.5, -1.0, 1.0])
def test_all_flat_map_has_exact_quantiles(flat):
    """An all-flat map (several blocks) gives quantiles and mean equal to the flat value exactly, not a bin
    midpoint (before: +0.001 for flat 0), and flat fraction 1."""
    summary = summarize(_stack([np.full((64, 64), flat, np.float32), np.full((3, 5), flat, np.float32)], flat))
    assert all(summary[f"q{q:02d}"] == flat for q in QUANTILES), summary
    assert summary["mean"] == flat
    assert summary["flat_fraction"] == 1.0 and summary["nan_fraction"] == 0.0


def test_all_flat_map_with_nan_flat_counts_as_nan():
    """With flat=NaN the flat windows are NaN: they count in nan_fraction, flat_fraction is 0, quantiles NaN."""
    summary = summarize(_stack([np.full((20, 20), np.nan, np.float32)], np.nan))
    assert summary["nan_fraction"] == 1.0 and summary["flat_fraction"] == 0.0
    assert all(np.isnan(summary[f"q{q:02d}"]) for q in QUANTILES)


def test_flat_value_not_representable_in_float32_is_counted_as_stored():
    """flat=0.1 is stored in the float32 map as float32(0.1): those pixels count as flat, and the quantiles
    equal that stored value exactly."""
    values = np.full((10, 10), 0.1, np.float32)
    summary = summarize(_stack([values], 0.1))
    assert summary["flat_fraction"] == 1.0
    assert summary["q50"] == float(np.float32(0.1))


@pytest.mark.parametrize("flat", [0.0, 0.5])
def test_half_flat_map(flat):
    """60% flat, 20% each well below and above: q25..q75 are the flat value exactly, q05 and q95 match numpy
    to the bin width, flat fraction 0.6."""
    rng = np.random.default_rng(5)
    n = 10_000
    values = np.concatenate([np.full(6 * n // 10, flat), rng.uniform(-0.9, flat - 0.2, 2 * n // 10),
                             rng.uniform(flat + 0.1, 1.0, 2 * n // 10)]).astype(np.float32)
    rng.shuffle(values)
    blocks = np.array_split(values.reshape(100, 100), 3)
    summary = summarize(_stack(blocks, flat))
    for q in (25, 50, 75):
        assert summary[f"q{q:02d}"] == flat
    for q in (5, 95):
        expected = np.quantile(values.astype(np.float64), q / 100, method="inverted_cdf")
        assert abs(summary[f"q{q:02d}"] - expected) <= 1.0 / HIST_BINS + 1e-6
    assert summary["flat_fraction"] == pytest.approx(0.6)


def test_flat_bin_shared_with_other_values_keeps_the_midpoint():
    """When the flat value's bin also holds other values the histogram cannot tell them apart: the quantile
    stays the bin midpoint (within the values' range), not the flat value."""
    values = np.array([0.0] * 5 + [0.0004] * 5 + [-0.5, 0.5], np.float32)
    summary = summarize(_stack([values], 0.0))
    assert summary["q50"] == pytest.approx(0.0005)
    assert summary["flat_fraction"] == pytest.approx(5 / 12)


def test_single_non_flat_value_map_is_exact():
    """A map holding one value that is not the flat value: clamping to [min, max] gives it exactly."""
    summary = summarize(_stack([np.full((7, 9), -0.3217, np.float32)], 0.0))
    assert all(summary[f"q{q:02d}"] == float(np.float32(-0.3217)) for q in QUANTILES)
    assert summary["flat_fraction"] == 0.0


def test_done_blocks_of_a_ledger_with_nan_rows():
    """done_blocks is True exactly where a ledger (any grid shape) holds an entry, NaN rows elsewhere."""
    ledger = np.full((3, 4, STATS_LENGTH), np.nan)
    done = np.zeros((3, 4), bool)
    for index in [(0, 0), (1, 2), (2, 3)]:
        ledger[index] = block_stats(np.zeros((4, 4), np.float32))
        done[index] = True
    ledger[0, 1, :HIST_BINS] = 0.0  # a partly written row is not done: its pixel count is missing
    np.testing.assert_array_equal(done_blocks(ledger), done)
    assert done_blocks(ledger[1, 2]) == np.True_
    with pytest.raises(ValueError, match=str(STATS_LENGTH)):
        done_blocks(np.zeros((3, 5)))


def _garble(entry, how):
    bad = entry.copy()
    if how == "negative-count":
        k = int(np.flatnonzero(bad[:HIST_BINS])[0])
        bad[k] -= 1
        bad[k + 1] += 2
        bad[k + 2] -= 1
    elif how == "fractional-count":
        k = int(np.flatnonzero(bad[:HIST_BINS])[0])
        bad[k] -= 0.5
        bad[k + 1] += 0.5
    elif how == "counts-not-finite":
        bad[FINITE] += 1
    elif how == "finite-over-pixels":
        bad[FINITE] = bad[PIXELS] + 1
        bad[0] += bad[PIXELS] + 1 - entry[FINITE]
    elif how == "wrong-pixels":
        bad[PIXELS] += 1
    elif how == "min-over-max":
        bad[MIN], bad[MAX] = bad[MAX], bad[MIN]
    elif how == "count-outside-min-max":
        bad[MIN] = 0.9
    elif how == "flat-over-finite":
        bad[FLAT] = bad[FINITE] + 1
    elif how == "flat-count-with-nan-flat":
        bad[FLAT_VALUE] = np.nan
    elif how == "nan-sum":
        bad[SUM] = np.nan
    elif how == "zeros":
        bad[:] = 0.0
    elif how == "shifted":
        bad = np.roll(bad, 1)
    return bad


GARBLES = ["negative-count", "fractional-count", "counts-not-finite", "finite-over-pixels", "wrong-pixels",
           "min-over-max", "count-outside-min-max", "flat-over-finite", "flat-count-with-nan-flat", "nan-sum",
           "zeros", "shifted"]


@pytest.mark.parametrize("how", GARBLES)
def test_garbled_entries_are_recognised(how):
    """Each kind of damage to a real entry makes it invalid, alone and in a stacked ledger; the intact entries
    (also one without finite values and one with flat=NaN) are valid."""
    rng = np.random.default_rng(9)
    values = rng.uniform(-0.8, 0.8, (30, 40)).astype(np.float32)
    values[:10] = 0.0
    values[-1, :5] = np.nan
    entry = block_stats(values)
    assert entry_is_valid(entry, values.size)
    assert entry_is_valid(block_stats(np.full((5, 5), np.nan, np.float32), np.nan), 25)
    assert entry_is_valid(block_stats(values, np.nan), values.size)
    bad = _garble(entry, how)
    assert not entry_is_valid(bad, values.size)
    ledger = np.stack([entry, bad, np.full(STATS_LENGTH, np.nan), entry])
    np.testing.assert_array_equal(entries_valid(ledger, values.size), [True, False, False, True])


def test_entry_validity_checks_the_expected_pixel_count_and_length():
    """An entry of another block size, or a vector of the wrong length, is not valid; per-entry pixel
    counts broadcast over a ledger's grid."""
    a, b = block_stats(np.zeros((4, 4), np.float32)), block_stats(np.zeros((4, 3), np.float32))
    assert entry_is_valid(a, 16) and not entry_is_valid(a, 12)
    assert not entry_is_valid(a[:-1], 16)
    np.testing.assert_array_equal(entries_valid(np.stack([a, b]), np.array([16, 12])), [True, True])
