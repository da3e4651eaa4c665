"""compute.memory: the processing block fits the budget, and a real run stays within it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import parse_config
from pipeline.errors import ConfigError
from pipeline.io import write_array
from pipeline.job import budget, plan_run
from pipeline.testing import sample_pair, write_config
from support import invoke_cli


@settings(max_examples=60, deadline=None)
@given(budget_mb=st.integers(300, 8000), side=st.integers(64, 40000), threads=st.integers(1, 8),
       in_bytes=st.sampled_from([2, 3, 4, 8, 17]), out_bytes=st.sampled_from([4, 16]),
       step=st.sampled_from([64, 256, 1000, 1024]), exchange=st.booleans())
def test_largest_block_fits_and_the_next_does_not(budget_mb, side, threads, in_bytes, out_bytes, step, exchange):
    image = (side, side + 7)
    limit = budget_mb * 10**6
    found = budget.largest_block_side(limit, image, in_bytes, out_bytes, threads, step, 4096, halo_exchange=exchange)
    if found is None:
        assert budget.estimate_peak((min(step, side), min(step, side + 7)), image, in_bytes, out_bytes,
                                    threads, halo_exchange=exchange) > limit
        return
    assert found % step == 0 and found <= max(step, 4096)
    block = (min(found, image[0]), min(found, image[1]))
    assert budget.estimate_peak(block, image, in_bytes, out_bytes, threads, halo_exchange=exchange) <= limit
    bigger = found + step
    if bigger <= 4096 and bigger < max(image):
        assert budget.estimate_peak((min(bigger, image[0]), min(bigger, image[1])), image, in_bytes, out_bytes,
                                    threads, halo_exchange=exchange) > limit


def test_estimate_grows_with_threads_block_and_outputs():
    base = budget.estimate_peak((1024, 1024), (8192, 8192), 2, 4, 1)
    assert budget.estimate_peak((1024, 1024), (8192, 8192), 2, 4, 2) > base
    assert budget.estimate_peak((2048, 2048), (8192, 8192), 2, 4, 1) > base
    assert budget.estimate_peak((1024, 1024), (8192, 8192), 2, 16, 1) > base
    assert budget.estimate_peak((1024, 1024), (8192, 8192), 8, 4, 1) > base
    assert base > budget.BASELINE
    # Tasks that read their own halo hold no neighbours' blocks waiting for theirs: the image's width does not
    # matter, while map_overlap's halo exchange keeps a row of blocks.
    direct = budget.estimate_peak((1024, 1024), (8192, 8192), 2, 4, 1, halo_exchange=False)
    assert direct == budget.estimate_peak((1024, 1024), (8192, 65536), 2, 4, 1, halo_exchange=False) > base / 2
    assert budget.estimate_peak((1024, 1024), (8192, 65536), 2, 4, 1) > base


@pytest.fixture(scope="module")
def big_pair(tmp_path_factory):
    """A 4096 x 4096 uint8 pair in 256 x 256 chunks, written once for the module (the tests only read it)."""
    root = tmp_path_factory.mktemp("budget")
    ref, mov = sample_pair((4096, 4096), "uint8", seed=21)
    return ref, mov, (write_array(str(root / "p.zarr"), ref, chunks=(256, 256), name="ref"),
                      write_array(str(root / "p.zarr"), mov, chunks=(256, 256), name="mov"))


def _config(urls, out, **compute):
    return parse_config({"reference": urls[0], "moving": urls[1], "output": str(out), "compute": compute})


def test_budget_shrinks_the_processing_block(tmp_path: Path, big_pair):
    _, _, urls = big_pair
    free = plan_run(_config(urls, tmp_path / "o.zarr", workers=2))[0].chunks
    tight = plan_run(_config(urls, tmp_path / "o.zarr", workers=2, memory="450MB"))[0].chunks
    loose = plan_run(_config(urls, tmp_path / "o.zarr", workers=2, memory="8GB"))[0].chunks
    assert free == loose == (4096, 4096)
    assert tight[0] < 4096 and tight[0] % 256 == 0
    assert budget.estimate_peak(tight, (4096, 4096), 2, 4, 2, halo_exchange=False) <= 450e6
    # More threads per process share the same budget: smaller blocks.
    four = plan_run(_config(urls, tmp_path / "o.zarr", workers=4, memory="450MB"))[0].chunks
    assert four[0] <= tight[0]


def test_budget_too_small_or_chunks_too_big_are_config_errors(tmp_path: Path, big_pair):
    _, _, urls = big_pair
    with pytest.raises(ConfigError, match=r"compute\.memory 100 MB is too small.*raise compute\.memory"):
        plan_run(_config(urls, tmp_path / "o.zarr", workers=2, memory="100MB"))
    cfg = parse_config({"reference": urls[0], "moving": urls[1], "output": str(tmp_path / "o.zarr"),
                        "chunks": {"y": 4096, "x": 4096}, "compute": {"workers": 2, "memory": "400MB"}})
    with pytest.raises(ConfigError, match=r"chunks \{'y': 4096, 'x': 4096\} need about .* over compute\.memory"):
        plan_run(cfg)


def _peak_rss_of_tree(proc: subprocess.Popen) -> tuple[int, int]:
    """(peak RSS of the whole process tree, peak RSS of its largest single process), sampled from outside."""
    root = psutil.Process(proc.pid)
    total_peak = single_peak = 0
    while proc.poll() is None:
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            break
        rss = []
        for p in procs:
            try:
                rss.append(p.memory_info().rss)
            except psutil.Error:
                pass
        total_peak = max(total_peak, sum(rss))
        single_peak = max(single_peak, max(rss, default=0))
        time.sleep(0.02)
    return total_peak, single_peak


@pytest.mark.slow
@pytest.mark.parametrize("compute, limit_of", [
    ({"scheduler": "threads", "workers": 2, "memory": "450MB"}, "total"),
    ({"scheduler": "local", "workers": 2, "threads_per_worker": 1, "memory": "450MB"}, "worker"),
])
def test_a_run_stays_within_its_budget(tmp_path: Path, big_pair, compute, limit_of):
    """Measured from outside the CLI: the whole process tree (threads) or each worker process (local) stays
    under compute.memory, and the map equals an unconstrained run's."""
    _, _, (ref_url, mov_url) = big_pair
    cfg = write_config(tmp_path / "c.yaml", reference=ref_url, moving=mov_url, output=str(tmp_path / "o.zarr"),
                       compute=compute)
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(cfg), "--quiet"], cwd=tmp_path,
                            stderr=subprocess.PIPE, text=True)
    total, single = _peak_rss_of_tree(proc)
    assert proc.wait() == 0, proc.stderr.read()
    chunks = zarr.open_array(str(tmp_path / "o.zarr" / "ncc")).chunks
    assert chunks[0] < 4096  # the budget did pick smaller blocks
    measured = total if limit_of == "total" else single
    assert 0 < measured <= 450e6, f"peak RSS {measured / 1e6:.0f} MB over the 450 MB budget"
    free = write_config(tmp_path / "f.yaml", reference=ref_url, moving=mov_url, output=str(tmp_path / "f.zarr"))
    assert invoke_cli("run", str(free), "--quiet", cwd=tmp_path).returncode == 0  # the reference: unconstrained
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "o.zarr" / "ncc"))[...],
                                  zarr.open_array(str(tmp_path / "f.zarr" / "ncc"))[...])
