"""Runs that lose nothing: kill -9 and resume, up-to-date reruns, reprocessing, locks, inspect.

Every test drives the real CLI on real zarr stores: in a subprocess (``lncc``) where the process matters (it is
killed or stopped, holds a lock, or what it prints up to its exit is checked), elsewhere as the command's app
in this process (``invoke_cli``).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from pipeline.core.stats import done_blocks
from pipeline.io import LOCK_FILE, read_ledger, write_array
from pipeline.testing import sample_pair, write_config
from support import chunk_files, invoke_cli
from support import run_cli as lncc

pytestmark = pytest.mark.slow


@pytest.fixture
def pair(tmp_path: Path) -> tuple[str, str]:
    ref, mov = sample_pair((300, 340), "uint8", seed=3)
    return (write_array(str(tmp_path / "in.zarr"), ref, chunks=(64, 64), name="ref"),
            write_array(str(tmp_path / "in.zarr"), mov, chunks=(64, 64), name="mov"))


def test_kill_minus_9_then_rerun_resumes_to_a_bit_identical_output(tmp_path: Path):
    """A run killed part way is reported incomplete; the rerun computes only the missing blocks."""
    ref, mov = sample_pair((5120, 5120), "uint8", seed=5)  # 400 blocks: ~4 s on one thread
    ref_url = write_array(str(tmp_path / "big.zarr"), ref, chunks=(256, 256), name="ref")
    mov_url = write_array(str(tmp_path / "big.zarr"), mov, chunks=(256, 256), name="mov")
    settings = dict(reference=ref_url, moving=mov_url, window=9, chunks={"y": 256, "x": 256},
                    compute={"scheduler": "threads", "workers": 1})
    killed_cfg = write_config(tmp_path / "killed.yaml", output=str(tmp_path / "killed.zarr"), **settings)
    clean_cfg = write_config(tmp_path / "clean.yaml", output=str(tmp_path / "clean.zarr"), **settings)

    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(killed_cfg), "--quiet"], cwd=tmp_path)
    ledger_path = tmp_path / "killed.zarr" / "_lncc" / "blocks"
    deadline = time.monotonic() + 120
    done_at_kill = 0
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            done_at_kill = int(done_blocks(read_ledger(str(tmp_path / "killed.zarr"))).sum())
        except Exception:
            done_at_kill = 0
        if done_at_kill >= 10:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed: make the pair larger"
    # Frozen (still alive, still holding its lock) so that it cannot finish while the second run starts.
    os.kill(proc.pid, signal.SIGSTOP)
    # A second run on the same output while the first is alive refuses, naming the first.
    second = lncc("run", str(killed_cfg), cwd=tmp_path)
    assert second.returncode == 2 and f"pid {proc.pid}" in second.stderr and "started" in second.stderr
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert ledger_path.exists()

    inspect = invoke_cli("inspect", str(tmp_path / "killed.zarr"), cwd=tmp_path)
    assert inspect.returncode == 0
    assert "incomplete" in inspect.stdout.splitlines()[0]
    done_before = int(done_blocks(read_ledger(str(tmp_path / "killed.zarr"))).sum())
    assert 10 <= done_before < 400
    assert json.JSONDecoder().raw_decode(inspect.stdout.split("\n", 1)[1])[0]["status"] == "running"

    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "killed.zarr" / "ncc" / "c").rglob("*") if p.is_file()}
    rerun = lncc("run", str(killed_cfg), cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resumed: {400 - done_before} of 400 blocks computed" in rerun.stdout
    # Counted independently of lncc's report: chunk files (one per block) written by the rerun.
    after = {p: p.stat().st_mtime_ns for p in (tmp_path / "killed.zarr" / "ncc" / "c").rglob("*") if p.is_file()}
    assert len(after) == 400
    assert sum(before.get(p) != t for p, t in after.items()) == 400 - done_before
    assert not list((tmp_path / "killed.zarr").rglob("*.partial"))
    assert not (tmp_path / "killed.zarr" / LOCK_FILE).exists()

    clean = invoke_cli("run", str(clean_cfg), "--quiet", cwd=tmp_path)
    assert clean.returncode == 0, clean.stderr
    assert chunk_files(tmp_path / "killed.zarr") == chunk_files(tmp_path / "clean.zarr")
    assert "complete (400 of 400 blocks)" in invoke_cli("inspect", str(tmp_path / "killed.zarr"), cwd=tmp_path).stdout


def test_leftover_partial_files_are_removed_on_resume(tmp_path: Path, pair):
    """Temporary files a SIGKILL leaves behind are cleaned when the run resumes."""
    out = tmp_path / "out.zarr"
    cfg = write_config(tmp_path / "c.yaml", reference=pair[0], moving=pair[1], output=str(out),
                       chunks={"y": 64, "x": 64})
    assert invoke_cli("run", str(cfg), "--quiet", cwd=tmp_path).returncode == 0
    # Simulate a kill mid-write: one block's ledger entry gone, a temp file left behind.
    ledger = zarr.open_array(str(out / "_lncc" / "blocks"), mode="r+")
    ledger[1, 2] = np.nan
    zarr.open_group(str(out), mode="r+").attrs["lncc"] = {**dict(zarr.open_group(str(out)).attrs["lncc"]),
                                                          "status": "running"}
    leftover = out / "ncc" / "c" / "1" / "2.4242-139871.partial"  # as lncc names them: pid-thread
    leftover.parent.mkdir(parents=True, exist_ok=True)
    leftover.write_bytes(b"half a chunk")
    rerun = invoke_cli("run", str(cfg), cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert "resumed: 1 of 30 blocks computed" in rerun.stdout
    assert not leftover.exists()


def test_finished_output_is_up_to_date_and_untouched(tmp_path: Path, pair):
    """Rerunning a finished output with the same config and inputs does nothing."""
    out = tmp_path / "out.zarr"
    cfg = write_config(tmp_path / "c.yaml", reference=pair[0], moving=pair[1], output=str(out))
    assert invoke_cli("run", str(cfg), "--quiet", cwd=tmp_path).returncode == 0
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = invoke_cli("run", str(cfg), cwd=tmp_path)
    assert again.returncode == 0
    assert "up to date" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("change", ["window", "boundary", "input", "force"])
def test_changed_config_or_input_or_force_recomputes(tmp_path: Path, pair, change):
    """A changed setting, changed input bytes (same shape) or --force recompute the whole output."""
    out = tmp_path / "out.zarr"
    cfg = write_config(tmp_path / "c.yaml", reference=pair[0], moving=pair[1], output=str(out),
                       chunks={"y": 64, "x": 64})
    assert invoke_cli("run", str(cfg), "--quiet", cwd=tmp_path).returncode == 0
    first = zarr.open_array(str(out / "ncc"))[...]
    args = ["run", str(cfg)]
    if change == "window":
        args += ["--set", "window=9"]
    elif change == "boundary":
        args += ["--set", "boundary=nearest"]
    elif change == "force":
        args += ["--force"]
    else:
        arr = zarr.open_array(pair[1], mode="r+")
        arr[:64, :64] = 255 - arr[:64, :64]  # new content; file times are not what is compared
    result = invoke_cli(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "computed: 30 blocks" in result.stdout
    second = zarr.open_array(str(out / "ncc"))[...]
    if change == "force":
        np.testing.assert_array_equal(first, second)
    else:
        assert not np.array_equal(first, second)


def test_provenance_records_the_run(tmp_path: Path, pair):
    """Output attrs keep config and hash, versions, input fingerprints, times, status and host."""
    out = tmp_path / "out.zarr"
    cfg = write_config(tmp_path / "c.yaml", reference=pair[0], moving=pair[1], output=str(out), window=5)
    assert invoke_cli("run", str(cfg), "--quiet", cwd=tmp_path).returncode == 0
    prov = json.JSONDecoder().raw_decode(invoke_cli("inspect", str(out), cwd=tmp_path).stdout.split("\n", 1)[1])[0]
    assert prov["status"] == "complete"
    assert prov["config"]["window"] == 5 and len(prov["config_hash"]) == 64
    assert set(prov["fingerprints"]) == {"reference", "moving", "coordinates"}
    assert {"numpy", "dask", "zarr", "xarray", "lncc"} <= set(prov["dependencies"])
    assert prov["started"] <= prov["finished"]
    assert prov["host"] == socket.gethostname()


def test_second_run_on_a_locked_output_refuses_naming_the_first(tmp_path: Path, pair):
    """A lock held by a live process makes a second run exit 2 naming host, pid and start time."""
    out = tmp_path / "out.zarr"
    cfg = write_config(tmp_path / "c.yaml", reference=pair[0], moving=pair[1], output=str(out))
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = {"host": socket.gethostname(), "pid": holder.pid, "started": "2026-11-23T00:00:00+00:00"}
        out.mkdir()
        (out / LOCK_FILE).write_text(json.dumps(lock))
        result = lncc("run", str(cfg), cwd=tmp_path)
        assert result.returncode == 2
        assert f"pid {holder.pid}" in result.stderr and "2026-11-23T00:00:00" in result.stderr
        assert socket.gethostname() in result.stderr
        assert sorted(os.listdir(out)) == [LOCK_FILE]  # nothing written
    finally:
        holder.kill()
        holder.wait()


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path: Path, pair):
    """A lock left by a process that no longer exists does not block the run."""
    out = tmp_path / "out.zarr"
    cfg = write_config(tmp_path / "c.yaml", reference=pair[0], moving=pair[1], output=str(out))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out.mkdir()
    (out / LOCK_FILE).write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid,
                                            "started": "2026-11-23T00:00:00+00:00"}))
    result = invoke_cli("run", str(cfg), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not (out / LOCK_FILE).exists()


def test_inspect_refuses_what_is_not_an_lncc_output(tmp_path: Path, pair):
    """inspect exits 2 with one line for a missing path or a foreign zarr store."""
    missing = invoke_cli("inspect", str(tmp_path / "nothing.zarr"), cwd=tmp_path)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    foreign = invoke_cli("inspect", str(tmp_path / "in.zarr"), cwd=tmp_path)
    assert foreign.returncode == 2 and "not written by lncc" in foreign.stderr
    assert len(foreign.stderr.strip().splitlines()) == 1


def test_a_dead_worker_process_fails_clearly_or_is_retried_and_nothing_is_lost(tmp_path: Path):
    """kill -9 of a worker process: the run completes (retried) or exits 1 with one line; either way the
    output ends complete and exact (after a resuming rerun if needed)."""
    import psutil

    from pipeline import local_ncc

    ref, mov = sample_pair((2048, 2048), "uint8", seed=6)
    ref_url = write_array(str(tmp_path / "p.zarr"), ref, chunks=(128, 128), name="ref")
    mov_url = write_array(str(tmp_path / "p.zarr"), mov, chunks=(128, 128), name="mov")
    out = tmp_path / "out.zarr"
    cfg = write_config(tmp_path / "c.yaml", reference=ref_url, moving=mov_url, output=str(out), window=7,
                       chunks={"y": 128, "x": 128}, compute={"scheduler": "processes", "workers": 2})
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(cfg), "--quiet"], cwd=tmp_path,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    victim = None
    while time.monotonic() < deadline and proc.poll() is None and victim is None:
        try:
            done = int(done_blocks(read_ledger(str(out))).sum())
        except Exception:
            done = 0
        workers = [c for c in psutil.Process(proc.pid).children(recursive=True)
                   if "spawn_main" in " ".join(c.cmdline()) or "forkserver" in " ".join(c.cmdline())]
        if done >= 3 and workers:
            victim = workers[0]
        time.sleep(0.05)
    assert victim is not None, "no worker process to kill before the run ended"
    victim.kill()
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode in (0, 1), stderr
    if proc.returncode == 1:
        assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr
        assert "incomplete" in invoke_cli("inspect", str(out), cwd=tmp_path).stdout.splitlines()[0]
        rerun = lncc("run", str(cfg), cwd=tmp_path)
        assert rerun.returncode == 0, rerun.stderr
        assert "resumed:" in rerun.stdout
    assert "complete (256 of 256 blocks)" in invoke_cli("inspect", str(out), cwd=tmp_path).stdout
    np.testing.assert_array_equal(zarr.open_array(str(out / "ncc"))[...], local_ncc(ref, mov, 7))


def test_changed_coordinates_recompute(tmp_path: Path):
    """The output's coordinates come from the reference's group: changing them is a change of input."""
    ref, mov = sample_pair((40, 50), "uint8", seed=2)
    coords = {"y": np.arange(40.0), "x": np.arange(50.0)}
    ref_url = write_array(str(tmp_path / "g.zarr"), ref, name="a", coords=coords)
    mov_url = write_array(str(tmp_path / "h.zarr"), mov, name="b")
    out = tmp_path / "out.zarr"
    cfg = write_config(tmp_path / "c.yaml", reference=ref_url, moving=mov_url, output=str(out))
    assert invoke_cli("run", str(cfg), "--quiet", cwd=tmp_path).returncode == 0
    zarr.open_array(str(tmp_path / "g.zarr" / "x"), mode="r+")[...] = np.arange(50.0) * 10
    result = invoke_cli("run", str(cfg), cwd=tmp_path)
    assert result.returncode == 0 and "computed: 1 blocks" in result.stdout
    import xarray as xr

    assert float(xr.open_zarr(out)["x"][1]) == 10.0


def test_output_without_ledger_is_rewritten_not_refused(tmp_path: Path, pair):
    """A run killed while creating its output (provenance written, ledger not yet) is redone on rerun."""
    import shutil

    out = tmp_path / "out.zarr"
    cfg = write_config(tmp_path / "c.yaml", reference=pair[0], moving=pair[1], output=str(out),
                       chunks={"y": 64, "x": 64})
    assert invoke_cli("run", str(cfg), "--quiet", cwd=tmp_path).returncode == 0
    expected = zarr.open_array(str(out / "ncc"))[...]
    shutil.rmtree(out / "_lncc")
    group = zarr.open_group(str(out), mode="r+")
    group.attrs["lncc"] = {**dict(group.attrs["lncc"]), "status": "running"}
    result = invoke_cli("run", str(cfg), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(zarr.open_array(str(out / "ncc"))[...], expected)
    assert "complete (30 of 30 blocks)" in invoke_cli("inspect", str(out), cwd=tmp_path).stdout


def test_a_block_write_that_fails_fails_the_run_and_leaves_it_resumable(tmp_path: Path, pair):
    """A block write failing in the background (here: a file where the chunk directory goes) is exit 1 with
    one line, the output stays incomplete, and once the obstacle is gone the rerun completes it exactly."""
    from pipeline import local_ncc

    out = tmp_path / "out.zarr"
    cfg = write_config(tmp_path / "c.yaml", reference=pair[0], moving=pair[1], output=str(out),
                       chunks={"y": 64, "x": 64})
    assert invoke_cli("run", str(cfg), "--quiet", cwd=tmp_path).returncode == 0
    ledger = zarr.open_array(str(out / "_lncc" / "blocks"), mode="r+")
    ledger[1, :] = np.nan
    zarr.open_group(str(out), mode="r+").attrs["lncc"] = {**dict(zarr.open_group(str(out)).attrs["lncc"]),
                                                          "status": "running"}
    row = out / "ncc" / "c" / "1"
    for f in row.iterdir():
        f.unlink()
    row.rmdir()
    row.write_bytes(b"in the way")
    failed = lncc("run", str(cfg), cwd=tmp_path)
    assert failed.returncode == 1, failed.stderr
    assert len(failed.stderr.strip().splitlines()) == 1 and "Traceback" not in failed.stderr
    # The write's own error, not just the ledger check's "missing blocks" after it.
    assert "missing blocks" not in failed.stderr and "File exists" in failed.stderr
    assert "incomplete" in invoke_cli("inspect", str(out), cwd=tmp_path).stdout.splitlines()[0]
    assert np.isnan(read_ledger(str(out))[1, :, -1]).all()
    row.unlink()
    rerun = invoke_cli("run", str(cfg), cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert "resumed: 6 of 30 blocks computed" in rerun.stdout
    ref = zarr.open_array(pair[0])[...]
    mov = zarr.open_array(pair[1])[...]
    np.testing.assert_array_equal(zarr.open_array(str(out / "ncc"))[...], local_ncc(ref, mov, 7))
