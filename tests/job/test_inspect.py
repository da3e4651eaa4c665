"""``lncc inspect``'s statistics of the NCC map, the applied shift(s) and ``--json``, on real runs.

The statistics come from the block ledger, never the map; every number is checked here against the map
itself (the written ``ncc`` read with xarray, or the in-memory reference), with numpy's own functions: the
mean to 1e-6 relative, the quantiles within one ledger bin (0.001) of numpy's inverted-CDF quantile, the
counts, shares and histogram exactly. Runs go through ``pipeline.job.run`` in this process and the command
through ``invoke_cli`` (its real app, in this process): nothing here starts a subprocess.
"""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import xarray as xr
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import parse_config
from pipeline.core.stats import (
    FINITE,
    FLAT,
    FLAT_VALUE,
    HIST_BINS,
    MAX,
    MIN,
    PIXELS,
    REPORT_QUANTILES,
    SUM,
    block_stats,
    coarse_histogram,
    describe_stats,
    merge_stats,
    summarize,
)
from pipeline.io import read_provenance, write_array
from pipeline.job import run
from pipeline.testing import reference_ncc, sample_pair, textured
from support import invoke_cli, kill_run_after

WINDOW = 5
#: The text histogram's bins: numpy's edges, as the report gives them.
EDGES = np.linspace(-1.0, 1.0, 21)


# ----------------------------------------------------------------------------------------------- helpers


def varied_pair(shape=(150, 170), seed=0) -> tuple[np.ndarray, np.ndarray]:
    """A uint8 pair whose map has every kind of value: flat windows (flat rectangles in the reference), and
    columns where the moving image is a noisy affine copy (NCC near +1), an inverted copy (near -1) and noise."""
    rng = np.random.default_rng(seed)
    ref = textured(shape, "uint8", seed=seed, flat_fraction=0.8, levels=200).astype(np.float64)
    third = shape[1] // 3
    mov = 0.8 * ref + 20.0 + rng.normal(0.0, 6.0, shape)
    mov[:, third:2 * third] = 230.0 - ref[:, third:2 * third] + rng.normal(0.0, 6.0, (shape[0], third))
    mov[:, 2 * third:] = rng.integers(0, 256, (shape[0], shape[1] - 2 * third))
    return ref.astype(np.uint8), np.clip(np.round(mov), 0, 255).astype(np.uint8)


def run_pair(tmp, name, ref, mov, **settings):
    """Store the pair and run it (in this process) into ``tmp/name.zarr``; the output's path."""
    chunks, dims = tuple(min(64, n) for n in ref.shape), settings.pop("dims", None)
    ref_url = write_array(str(tmp / f"{name}-in.zarr"), ref, name="ref", chunks=chunks, dims=dims)
    mov_url = write_array(str(tmp / f"{name}-in.zarr"), mov, name="mov", chunks=chunks, dims=dims)
    out = tmp / f"{name}.zarr"
    output = {"path": str(out), **settings.pop("output_settings", {})}
    settings = {"window": WINDOW, "chunks": {"y": 40, "x": 48}, **settings}
    run(parse_config({"reference": ref_url, "moving": mov_url, "output": output, **settings}))
    return out


def inspect(out, *args):
    """``lncc inspect OUT ARGS`` through the command's app: (exit code, stdout)."""
    result = invoke_cli("inspect", str(out), *args, cwd=out.parent)
    assert result.stderr == "", result.stderr
    return result.returncode, result.stdout


def inspect_json(out, *args) -> dict:
    code, stdout = inspect(out, "--json", *args)
    assert code in (0, 1)
    return json.loads(stdout)  # the whole of stdout is the one document


def text_statistics(stdout: str) -> str:
    """The text after the provenance JSON (which ends with the first line that is exactly '}')."""
    return stdout.split("\n}\n", 1)[1]


def assert_statistics_of(stats: dict, values: np.ndarray, flat: float) -> None:
    """``stats`` (the report's) describe ``values`` (float32 map values): checked with numpy, independently."""
    values = np.asarray(values, dtype=np.float32).ravel()
    finite = values[np.isfinite(values)].astype(np.float64)
    stored_flat = float(np.float32(flat))
    flat_count = 0 if np.isnan(flat) else int(np.count_nonzero(values == np.float32(flat)))
    assert (stats["pixels"], stats["finite"], stats["flat"]) == (values.size, finite.size, flat_count)
    assert stats["nonfinite"] == values.size - finite.size
    assert stats["finite_fraction"] == finite.size / values.size
    assert stats["flat_fraction"] == flat_count / values.size
    assert stats["nonfinite_fraction"] == (values.size - finite.size) / values.size
    assert stats["flat_value"] == (None if np.isnan(flat) else stored_flat)
    assert stats["mean"] == pytest.approx(finite.mean(), rel=1e-6)
    assert (stats["min"], stats["max"]) == (finite.min(), finite.max())
    for q in REPORT_QUANTILES:
        truth = np.quantile(finite, q, method="inverted_cdf")
        assert abs(stats["quantiles"][f"q{round(q * 100):02d}"] - truth) <= 0.001, q
    np.testing.assert_array_equal(stats["histogram"]["edges"], EDGES)
    # numpy's rule: [a, b) bins, the last one closed, so 1.0 is in the last bin and 0.0 in [0.0, 0.1)
    np.testing.assert_array_equal(stats["histogram"]["counts"], np.histogram(finite, EDGES)[0])
    flat_bin = int(np.argmax(np.histogram([stored_flat], EDGES)[0])) if flat_count else None
    assert stats["histogram"]["flat_bin"] == flat_bin


def block_mask(out, done) -> np.ndarray:
    """The pixels of the blocks where ``done`` is True, from the output's recorded block sizes."""
    rows, cols = (np.repeat(np.arange(len(sizes)), sizes) for sizes in read_provenance(str(out))["blocks"])
    return done[rows[:, None], cols[None, :]]


# ---------------------------------------------------------------------------------- 1. a complete output


@pytest.mark.parametrize("flat", [0.0, 1.0, -0.5, float("nan")])
def test_statistics_equal_the_map_s(tmp_path, flat):
    """On a map with flat windows (flat value at a bin edge, at exactly 1.0, or NaN), anti-correlation and
    noise, over uneven blocks: every figure of the report equals numpy's of the written map (and the mean
    the in-memory reference's), and the text prints them."""
    ref, mov = varied_pair()
    out = run_pair(tmp_path, "map", ref, mov, flat=flat)
    written = xr.open_zarr(out)["ncc"].values
    report = inspect_json(out)
    assert report["state"] == "complete" and report["statistics"]["blocks"] == report["blocks_total"] == 16
    stats = report["statistics"]
    assert_statistics_of(stats, written, flat)
    expected = reference_ncc(ref, mov, WINDOW, flat=flat)
    assert stats["mean"] == pytest.approx(np.nanmean(expected), rel=1e-6)
    assert stats["min"] < -0.5 and stats["max"] > 0.9 and stats["flat"] + stats["nonfinite"] > 0  # a varied map

    code, stdout = inspect(out)
    assert code == 0 and stdout.splitlines()[0] == f"{out}: complete (16 of 16 blocks)"
    text = text_statistics(stdout)
    assert "covering 16 of 16 blocks (the whole map)" in text and "PARTIAL" not in text
    assert "registered: no" in text
    assert all(len(line) <= 80 for line in text.splitlines())


def test_text_and_json_give_the_same_numbers(tmp_path):
    """Each number the text prints is the JSON's, rounded as printed: mean and extremes, the seven quantiles,
    the three shares, and per histogram line its range, its share and a bar scaled to the largest bin."""
    out = run_pair(tmp_path, "same", *varied_pair(seed=1))
    stats = inspect_json(out)["statistics"]
    text = text_statistics(inspect(out)[1])
    assert f"mean {stats['mean']:+.4f}   min {stats['min']:+.4f}   max {stats['max']:+.4f}" in text
    header, values = re.search(r"quantiles(.*)\n(.*)\n", text).groups()
    assert header.split() == ["1%", "5%", "25%", "50%", "75%", "95%", "99%"]
    assert [float(v) for v in values.split()] == [round(stats["quantiles"][k], 3) for k in
                                                   ("q01", "q05", "q25", "q50", "q75", "q95", "q99")]
    for name, key in (("finite", "finite_fraction"), ("NaN/nodata", "nonfinite_fraction")):
        assert f"{name} {100 * stats[key]:.2f}%" in text
    assert f"flat (= +0.000) {100 * stats['flat_fraction']:.2f}%" in text
    bars = re.findall(r"^    (\[[-+]\d\.\d, [-+]\d\.\d[)\]]) (#*) +(<?\d+\.\d\d)%", text, re.MULTILINE)
    counts = stats["histogram"]["counts"]
    assert len(bars) == 20 and bars[-1][0] == "[+0.9, +1.0]" and bars[0][0] == "[-1.0, -0.9)"
    for (_, bar, share), count in zip(bars, counts):
        if share == "<0.01":  # a bin with pixels never reads 0.00%
            assert 0 < 100 * count / stats["finite"] < 0.005
        else:
            assert float(share) == round(100 * count / stats["finite"], 2)
        assert len(bar) == (max(1, round(50 * count / max(counts))) if count else 0)
    assert max(len(bar) for _, bar, _ in bars) == 50


def test_statistics_never_read_the_map(tmp_path):
    """With every chunk file of ``ncc`` garbled (still present), a plain inspect gives the same statistics:
    they come from the ledger alone."""
    out = run_pair(tmp_path, "garbled", *varied_pair(seed=2))
    before = inspect_json(out)["statistics"]
    chunks = [p for p in (out / "ncc" / "c").rglob("*") if p.is_file()]
    assert len(chunks) == 16
    for path in chunks:
        path.write_bytes(b"\x00 not a chunk \xff" * 7)
    assert inspect_json(out)["statistics"] == before


# ---------------------------------------------------------------------- 2. incomplete and damaged outputs


def _forget(out, blocks) -> None:
    """Delete the ledger entries (their chunk files) of ``blocks`` and mark the output as running."""
    for i, j in blocks:
        (out / "_lncc" / "blocks" / "c" / str(i) / str(j) / "0").unlink()
    group = zarr.open_group(str(out), mode="r+")
    group.attrs["lncc"] = {**dict(group.attrs["lncc"]), "status": "running"}


@pytest.mark.parametrize("how", ["incomplete", "damaged"])
def test_a_partial_output_reports_the_blocks_done_and_says_so(tmp_path, how):
    """Ledger entries deleted (a run that stopped) or a map chunk deleted (an output that says complete): the
    statistics are the map's over the usable blocks only, the text says they cover N of M blocks, and a
    damaged output still exits 1."""
    out = run_pair(tmp_path, how, *varied_pair(seed=3))
    written = xr.open_zarr(out)["ncc"].values
    done = np.ones([len(sizes) for sizes in read_provenance(str(out))["blocks"]], dtype=bool)
    assert done.shape == (4, 4)
    if how == "incomplete":
        gone = [(0, 1), (2, 2), (2, 3), (3, 3)]
        _forget(out, gone)
    else:
        gone = [(1, 0)]
        (out / "ncc" / "c" / "1" / "0").unlink()
    for index in gone:
        done[index] = False
    code, stdout = inspect(out)
    assert code == (1 if how == "damaged" else 0)
    assert stdout.splitlines()[0].startswith(f"{out}: {how} ({done.sum()} of 16 blocks")
    text = text_statistics(stdout)
    assert f"covering {done.sum()} of 16 blocks," in text and "PARTIAL: only the" in text
    assert ("intact blocks" if how == "damaged" else "blocks done so far") in text
    report = inspect_json(out)
    assert report["statistics"]["blocks"] == report["blocks_done"] == done.sum()
    assert_statistics_of(report["statistics"], written[block_mask(out, done)], 0.0)


@pytest.mark.slow
def test_a_killed_run_reports_the_blocks_it_finished(tmp_path):
    """kill -9 of a real run part way: the report covers exactly the blocks with a ledger entry, says so, and
    its figures are those of the written map in those blocks."""
    from pipeline.core.stats import done_blocks
    from pipeline.io import read_ledger
    from pipeline.testing import write_config

    ref, mov = sample_pair((4096, 4096), "uint8", seed=5)  # 256 blocks: ~3 s on one thread
    ref_url = write_array(str(tmp_path / "big.zarr"), ref, chunks=(256, 256), name="ref")
    mov_url = write_array(str(tmp_path / "big.zarr"), mov, chunks=(256, 256), name="mov")
    out = tmp_path / "killed.zarr"
    cfg = write_config(tmp_path / "killed.yaml", reference=ref_url, moving=mov_url, output=str(out), window=9,
                       chunks={"y": 256, "x": 256}, compute={"scheduler": "threads", "workers": 1})
    kill_run_after(cfg, out, 10, cwd=tmp_path, poll=0.05)
    done = done_blocks(read_ledger(str(out)))
    assert 10 <= done.sum() < 256
    report = inspect_json(out)
    assert report["state"] == "incomplete" and report["statistics"]["blocks"] == done.sum()
    assert_statistics_of(report["statistics"], xr.open_zarr(out)["ncc"].values[block_mask(out, done)], 0.0)
    text = text_statistics(inspect(out)[1])
    assert f"covering {done.sum()} of 256 blocks," in text and "PARTIAL: only the blocks done so far" in text


def test_an_output_without_done_blocks_has_no_statistics(tmp_path):
    """Every ledger entry gone: no statistics (null in the JSON), and the text says none of the blocks is done."""
    out = run_pair(tmp_path, "none", *sample_pair((60, 70), seed=4), chunks={"y": 30, "x": 35})
    _forget(out, [(i, j) for i in range(2) for j in range(2)])
    assert inspect_json(out)["statistics"] is None
    code, stdout = inspect(out)
    assert code == 0 and "ncc statistics: none yet, 0 of 4 blocks are done" in stdout


# ----------------------------------------------------------------------------------- 3. missing data


def test_a_nodata_heavy_map_gives_the_nan_share(tmp_path):
    """A reference whose left 60% is nodata: the NaN share is the written map's, exactly, and the other shares
    and figures are those of the valid rest."""
    ref, mov = sample_pair((120, 150), "uint16", seed=5)
    ref[:, :90] = 0
    out = run_pair(tmp_path, "nodata", ref, mov, nodata={"reference": 0})
    written = xr.open_zarr(out)["ncc"].values
    stats = inspect_json(out)["statistics"]
    assert stats["nonfinite_fraction"] == np.count_nonzero(np.isnan(written)) / written.size
    assert stats["nonfinite_fraction"] > 0.55
    assert_statistics_of(stats, written, 0.0)
    assert f"NaN/nodata {100 * stats['nonfinite_fraction']:.2f}%" in text_statistics(inspect(out)[1])


def test_flat_as_nan_is_said_to_count_as_nan(tmp_path):
    """With ``flat: .nan`` the flat windows are NaN: the flat share is 0 and the text says where they went."""
    out = run_pair(tmp_path, "flatnan", *varied_pair(seed=6), flat=float("nan"))
    stats = inspect_json(out)["statistics"]
    assert stats["flat"] == 0 and stats["flat_value"] is None and stats["histogram"]["flat_bin"] is None
    text = text_statistics(inspect(out)[1])
    assert "flat (= NaN) 0.00%" in text and "flat windows are NaN in this map" in text


# ----------------------------------------------------------------------------------- 4. registration


def test_a_registered_image_reports_its_shift(tmp_path):
    """An estimated shift: the JSON's is the output's ``shift`` variable, exactly, and the text prints it."""
    ref, mov = sample_pair((160, 180), seed=7)
    out = run_pair(tmp_path, "reg", ref, mov, registration={"method": "translation"})
    shift = xr.open_zarr(out)["shift"].values
    reg = inspect_json(out)["registration"]
    assert reg["shift"] == shift.tolist() and reg["frames"] is None and reg["shifts"] is None
    assert (reg["source"], reg["method"], reg["origin"]) == ("shift variable", "translation", "estimated")
    assert reg["dy"] == [shift[0], shift[0]] and reg["dx"] == [shift[1], shift[1]]
    assert 0 < reg["correlation"] <= 1
    text = text_statistics(inspect(out)[1])
    assert f"registered: shift (dy, dx) = ({shift[0]:+.3f}, {shift[1]:+.3f}) px" in text
    assert "translation, estimated, cubic; correlation after registration" in text


def test_a_registered_video_reports_its_frame_shifts(tmp_path):
    """Given shifts per frame: the count and the dy/dx ranges in the text, every frame's shift in the JSON
    (equal to the ``shift`` variable); with that variable garbled or gone, the provenance's record is read,
    and the text says so."""
    ref, mov = sample_pair((4, 60, 70), seed=8)
    given = [[0.5, -1.25], [1.0, 0.0], [-0.75, 2.5], [0.25, 0.125]]
    out = run_pair(tmp_path, "video", ref, mov, dims=["t", "y", "x"], chunks={"t": 2, "y": 30, "x": 40},
                   registration={"method": "translation", "shift": given})
    shifts = xr.open_zarr(out)["shift"].values
    np.testing.assert_array_equal(shifts, given)
    reg = inspect_json(out)["registration"]
    assert reg["shifts"] == shifts.tolist() and reg["frames"] == 4 and reg["shift"] is None
    assert reg["dy"] == [-0.75, 1.0] and reg["dx"] == [-1.25, 2.5] and reg["origin"] == "given"
    text = text_statistics(inspect(out)[1])
    assert "registered: 4 frame shifts, dy -0.750..+1.000, dx -1.250..+2.500 px" in text
    assert "under registration.shifts" in text

    chunks = [p for p in (out / "shift" / "c").rglob("*") if p.is_file()]
    assert chunks
    for chunk in chunks:  # a garbled shift variable, then none at all
        chunk.write_bytes(b"garbled")
    reg = inspect_json(out)["registration"]
    assert reg["source"] == "provenance" and reg["shifts"] == given
    shutil.rmtree(out / "shift")
    group = zarr.open_group(str(out), mode="r+")
    group.attrs["lncc"] = {**dict(group.attrs["lncc"]), "layers": []}
    reg = inspect_json(out)["registration"]
    assert reg["source"] == "provenance" and reg["shifts"] == given
    assert "read from the provenance" in text_statistics(inspect(out)[1])


# ----------------------------------------------------------------------------------------- 5. --json


def test_json_is_the_only_output_and_keeps_the_exit_code(tmp_path):
    """``--json`` prints one strict JSON document (no NaN) holding state, blocks, statistics, registration
    and provenance; a damaged output still exits 1."""
    out = run_pair(tmp_path, "json", *sample_pair((60, 70), seed=9), chunks={"y": 30, "x": 35})
    code, stdout = inspect(out, "--json")
    report = json.loads(stdout, parse_constant=lambda name: pytest.fail(f"{name} in strict JSON"))
    assert code == 0
    assert set(report) == {"output", "state", "blocks_done", "blocks_damaged", "blocks_total", "statistics",
                           "registration", "encoding", "provenance"}
    assert report["output"] == str(out) and report["provenance"] == read_provenance(str(out))
    assert report["registration"] is None and report["statistics"]["blocks"] == 4
    (out / "ncc" / "c" / "0" / "1").unlink()
    code, stdout = inspect(out, "--json")
    assert code == 1 and json.loads(stdout)["state"] == "damaged"


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_the_encoding_compressor_and_pyramid_are_reported(tmp_path, zarr_format):
    """How the map is stored, as the arrays' own metadata say: the encoding and its precision, the compressor
    and its level, and an OME-Zarr pyramid's version and levels; a plain float32 output says so too."""
    ref, mov = sample_pair((300, 280), seed=4)
    out = run_pair(tmp_path, "int16", ref, mov, zarr_format=zarr_format,
                   output_settings={"encoding": "int16", "compressor": "zstd", "level": 7, "multiscale": True})
    code, stdout = inspect(out)
    assert code == 0
    assert "stored: int16 x 32767 (scale_factor 3.05185e-05, NaN as -32768; values within 1.5e-05), " \
           "compressor zstd level 7" in stdout
    ngff = "0.5" if zarr_format == 3 else "0.4"
    assert f"multiscale: OME-Zarr {ngff} pyramid, levels 0..1 (levels/ncc/K)" in stdout
    encoding = inspect_json(out)["encoding"]
    assert (encoding["encoding"], encoding["dtype"], encoding["compressors"]) == ("int16", "int16",
                                                                                 ["zstd level 7"])
    assert encoding["precision"] == pytest.approx(0.5 / 32767) and encoding["multiscale"]["levels"] == 1
    plain = run_pair(tmp_path, "plain", ref, mov, zarr_format=zarr_format)
    assert "stored: float32, compressor none\n" in inspect(plain)[1]
    assert inspect_json(plain)["encoding"]["multiscale"] is None


# --------------------------------------------------------------------------- 6. the maths, block layouts


def _specials(values, rng, count):
    """Put NaN, +-Inf and values at or next to bin edges (-1, -0.5, -0.0, 0, 0.5, 1, the float32 neighbours of 1,
    -0.5 and -0.9) in. Not the smallest negative floats: a value in (-5.6e-17, 0) counts in [0.0, 0.1), as
    ``block_stats`` bins it (``(v + 1) * 1000`` rounds to 1000), not in numpy's [-0.1, 0.0)."""
    below = lambda v: np.nextafter(np.float32(v), np.float32(-2.0))  # noqa: E731
    picks = np.array([np.nan, np.inf, -np.inf, 1.0, -1.0, 0.0, -0.0, -0.5, 0.5, 0.9, -0.9, -1e-9, below(1.0),
                      below(-0.5), below(-0.9)], dtype=np.float32)
    flat = values.reshape(-1)
    flat[rng.integers(0, flat.size, count)] = rng.choice(picks, size=count)


def _splits(draw, n):
    cuts = draw(st.lists(st.integers(1, n - 1), max_size=4, unique=True)) if n > 1 else []
    return [0, *sorted(cuts), n]


@settings(max_examples=40, deadline=None)
@given(data=st.data(), shape=st.tuples(st.integers(1, 60), st.integers(1, 60)), seed=st.integers(0, 2**16),
       flat=st.sampled_from([0.0, 1.0, -0.5, 0.1, float("nan")]))
def test_merged_block_stats_equal_one_block_stats(data, shape, seed, flat):
    """Whatever the block layout, merging the blocks' stats gives the whole map's: counts, extremes and flat
    value exactly, the sum to 1e-12; and ``describe_stats`` of the blocks equals that of one block."""
    rng = np.random.default_rng(seed)
    values = rng.uniform(-1.0, 1.0, shape).astype(np.float32)
    values[rng.random(shape) < 0.2] = np.float32(flat)
    _specials(values, rng, data.draw(st.integers(0, 30)))
    rows, cols = _splits(data.draw, shape[0]), _splits(data.draw, shape[1])
    blocks = np.stack([np.stack([block_stats(values[r0:r1, c0:c1], flat) for c0, c1 in zip(cols, cols[1:])])
                       for r0, r1 in zip(rows, rows[1:])])
    whole = block_stats(values, flat)
    merged = merge_stats(blocks)
    exact = np.r_[np.arange(HIST_BINS), [FINITE, MIN, MAX, FLAT, PIXELS]]
    np.testing.assert_array_equal(merged[exact], whole[exact])
    np.testing.assert_array_equal(merged[FLAT_VALUE], whole[FLAT_VALUE])  # NaN equals NaN here
    assert merged[SUM] == pytest.approx(whole[SUM], rel=1e-12, abs=1e-12)
    got, want = describe_stats(blocks), describe_stats(whole)
    assert got.pop("mean") == pytest.approx(want.pop("mean"), rel=1e-12, nan_ok=True)
    np.testing.assert_equal(got, want)


@settings(max_examples=40, deadline=None)
@given(shape=st.tuples(st.integers(1, 200), st.integers(1, 200)), seed=st.integers(0, 2**16),
       specials=st.integers(0, 40), flat=st.sampled_from([0.0, 1.0, -1.0, -0.5, 0.25, float("nan")]),
       flat_share=st.sampled_from([0.0, 0.3, 0.9]))
def test_describe_stats_against_numpy(shape, seed, specials, flat, flat_share):
    """The report's figures of random float32 values (with flats, NaN/Inf and values on bin edges) against
    numpy's: exact counts, shares and histogram, quantiles within 0.001, the mean to 1e-6."""
    rng = np.random.default_rng(seed)
    values = rng.uniform(-1.0, 1.0, shape).astype(np.float32)
    values[rng.random(shape) < flat_share] = np.float32(flat)
    _specials(values, rng, specials)
    stats = describe_stats(block_stats(values, flat)[None])
    if not np.isfinite(values).any():
        assert stats["mean"] != stats["mean"] and stats["histogram"]["counts"] == [0] * 20
        return
    stats = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in stats.items()}
    assert_statistics_of(stats, values, flat)


@pytest.mark.parametrize("seed", [0, 1])
def test_where_merges_the_chosen_blocks_only(seed):
    """``where`` (the blocks done) gives the stats of those blocks alone, as if the others were not there."""
    rng = np.random.default_rng(seed)
    blocks = np.stack([block_stats(rng.uniform(-1, 1, (7, 9)).astype(np.float32)) for _ in range(12)]).reshape(3, 4, -1)
    done = rng.random((3, 4)) < 0.5
    ledger = blocks.copy()
    ledger[~done] = np.nan  # what the ledger holds for blocks not done
    np.testing.assert_equal(describe_stats(ledger, where=done), describe_stats(blocks[done]))
    with pytest.raises(ValueError, match=r"leading shape \(3, 4\), got \(12,\)"):
        merge_stats(ledger, where=done.ravel())


def test_summarize_keeps_its_keys_and_agrees_with_the_report():
    """The run summary's dict is unchanged (same keys, in order) and its quantiles are the report's."""
    rng = np.random.default_rng(3)
    stats = np.stack([block_stats(rng.uniform(-1, 1, 500).astype(np.float32)) for _ in range(6)])
    summary, report = summarize(stats), describe_stats(stats)
    assert list(summary) == ["mean", "q05", "q25", "q50", "q75", "q95", "nan_fraction", "flat_fraction"]
    assert all(summary[k] == report["quantiles"][k] for k in ("q05", "q25", "q50", "q75", "q95"))
    assert summary["mean"] == report["mean"]


def test_coarse_histogram_refuses_bins_that_do_not_divide_the_ledger_s():
    with pytest.raises(ValueError, match=f"divide the {HIST_BINS} histogram bins.*got 30"):
        coarse_histogram(block_stats(np.zeros(4, np.float32)), 30)
    edges, counts = coarse_histogram(block_stats(np.array([-1, 0, 1, 1], np.float32)), 2)
    assert edges.tolist() == [-1.0, 0.0, 1.0] and counts.tolist() == [1, 3]
