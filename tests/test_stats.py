"""Block statistics (histogram, sum, counts) and the run summary built from them."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.stats import HIST_BINS, STATS_LENGTH, block_stats, summarize


def _reference_stats(values: np.ndarray) -> np.ndarray:
    """The stats vector by plain numpy: bins of width 2 / HIST_BINS over [-1, 1], values outside clamped."""
    flat = values.ravel().astype(np.float64)
    finite = flat[np.isfinite(flat)]
    index = np.clip(((finite + 1.0) * (HIST_BINS / 2.0)).astype(np.int64), 0, HIST_BINS - 1)
    out = np.zeros(STATS_LENGTH)
    out[:HIST_BINS] = np.bincount(index, minlength=HIST_BINS)
    out[HIST_BINS:] = finite.sum(), finite.size, flat.size
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
    np.testing.assert_array_equal(got[HIST_BINS + 1:], expected[HIST_BINS + 1:])
    np.testing.assert_allclose(got[HIST_BINS], expected[HIST_BINS], rtol=1e-12, atol=1e-9)


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
    for q in (5, 25, 50, 75, 95):
        assert abs(summary[f"q{q:02d}"] - np.quantile(finite, q / 100)) <= 1.0 / HIST_BINS + 1e-6
    assert abs(summary["nan_fraction"] - np.isnan(both).mean()) < 1e-12
