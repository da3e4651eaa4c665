"""Runs on dask.distributed: a real `dask scheduler` and `dask worker` processes on 127.0.0.1, a LocalCluster,
workers killed with kill -9, and dask-jobqueue job scripts built without submitting anything.

The runs on the cluster, killed or reading the environment at start-up are ``lncc`` subprocesses; the threaded
runs they are compared with, inspections and job scripts are the command's app in this process (``invoke_cli``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import zarr

from pipeline.config import parse_config
from pipeline.io import write_array
from pipeline.testing import reference_ncc, sample_pair, write_config
from support import DaskCluster, blocks_done, chunk_files, invoke_cli
from support import run_cli as lncc


@pytest.fixture
def cluster(tmp_path: Path):
    with DaskCluster(tmp_path / "cluster") as c:
        yield c


def _pair(tmp_path: Path, shape=(1024, 1024), chunks=(128, 128), seed=11):
    ref, mov = sample_pair(shape, "uint8", seed=seed)
    return ref, mov, (write_array(str(tmp_path / "p.zarr"), ref, chunks=chunks, name="ref"),
                      write_array(str(tmp_path / "p.zarr"), mov, chunks=chunks, name="mov"))


@pytest.mark.slow
def test_run_through_a_scheduler_address_equals_the_threaded_run(tmp_path: Path, cluster):
    """A pair computed by real dask workers behind `dask scheduler` gives the threaded run's bytes."""
    ref, mov, (ref_url, mov_url) = _pair(tmp_path)
    common = dict(reference=ref_url, moving=mov_url, window=7, chunks={"y": 256, "x": 256})
    remote = write_config(tmp_path / "remote.yaml", output=str(tmp_path / "remote.zarr"),
                          compute={"scheduler": cluster.address}, **common)
    threads = write_config(tmp_path / "threads.yaml", output=str(tmp_path / "threads.zarr"), **common)
    result = lncc("run", str(remote), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "computed: 16 blocks" in result.stdout
    assert invoke_cli("run", str(threads), "--quiet", cwd=tmp_path).returncode == 0
    assert chunk_files(tmp_path / "remote.zarr") == chunk_files(tmp_path / "threads.zarr")
    got = zarr.open_array(str(tmp_path / "remote.zarr" / "ncc"))[...]
    assert np.abs(got - reference_ncc(ref, mov, 7)).max() <= 1e-6
    # The blocks were computed in the workers, not in the client: their logs show the tasks ran.
    from distributed import Client

    with Client(cluster.address) as client:
        assert sum(client.run(lambda dask_worker: len(dask_worker.state.log)).values()) > 0


@pytest.mark.slow
def test_worker_killed_mid_run_completes_or_fails_clearly_and_rerun_is_bit_identical(tmp_path: Path, cluster):
    """kill -9 of a worker process (and its nanny) mid-run: dask retries its tasks on the other worker, or the
    run exits 1 with one line; a rerun then resumes. Either way the output equals an uninterrupted run."""
    _, _, (ref_url, mov_url) = _pair(tmp_path, shape=(1536, 1536), seed=12)
    common = dict(reference=ref_url, moving=mov_url, window=9, chunks={"y": 128, "x": 128})
    out = tmp_path / "killed.zarr"
    killed = write_config(tmp_path / "killed.yaml", output=str(out), compute={"scheduler": cluster.address},
                          **common)
    clean = write_config(tmp_path / "clean.yaml", output=str(tmp_path / "clean.zarr"), **common)
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(killed)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and blocks_done(out) < 20:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before a worker could be killed: make the pair larger"
    cluster.kill_worker(0)
    done_at_kill = blocks_done(out)
    stdout, stderr = proc.communicate(timeout=300)
    assert done_at_kill < 144, "the run ended before a worker was killed"
    assert proc.returncode in (0, 1), stderr
    if proc.returncode == 1:
        assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr
        rerun = lncc("run", str(killed), cwd=tmp_path)
        assert rerun.returncode == 0, rerun.stderr
        assert "resumed:" in rerun.stdout
    else:
        assert "computed: 144 blocks" in stdout
    assert not list(out.rglob("*.partial"))
    assert invoke_cli("run", str(clean), "--quiet", cwd=tmp_path).returncode == 0
    assert chunk_files(out) == chunk_files(tmp_path / "clean.zarr")
    assert "complete (144 of 144 blocks)" in invoke_cli("inspect", str(out), cwd=tmp_path).stdout


@pytest.mark.slow
def test_blocks_go_to_workers_in_contiguous_bands(cluster):
    """A run's blocks (listed row by row) go to the workers in contiguous bands, as loose restrictions: each
    worker computes neighbouring blocks, which share its cache of decoded chunks."""
    import dask
    from distributed import Client

    from pipeline.job.cluster import Executor

    def where(i: int) -> str:  # defined here: pickled by value, so the workers need not import the tests
        import time

        from distributed import get_worker

        time.sleep(0.05)
        return get_worker().address

    compute = parse_config({"reference": "a.zarr", "moving": "b.zarr", "output": "o.zarr",
                            "compute": {"scheduler": cluster.address}}).compute
    with Client(cluster.address) as client:
        ran = Executor(compute, client).run([dask.delayed(where)(i, dask_key_name=f"block-{i}") for i in range(12)])
        workers = sorted(client.nthreads())
    assert len(workers) == 2
    # Loose restrictions: dask may move a task (an idle worker steals), so most, not all, stay in their band.
    assert sum(w == workers[0] for w in ran[:6]) >= 4 and sum(w == workers[1] for w in ran[6:]) >= 4


@pytest.mark.parametrize("nthreads, n, expected", [
    ({"a": 1, "b": 1}, 7, [4, 3]),
    ({"b": 1, "a": 3}, 8, [6, 2]),  # sorted by address, in proportion to threads
    ({"a": 2}, 5, [5]),
    ({}, 3, [3]),
    ({"a": 1, "b": 1, "c": 1}, 2, [1, 1]),  # fewer tasks than workers: no empty band
])
def test_bands_split_tasks_by_threads(nthreads, n, expected):
    from pipeline.job.cluster import _bands

    bands = _bands(list(range(n)), nthreads)
    assert [len(part) for part, _ in bands] == expected
    assert [i for part, _ in bands for i in part] == list(range(n))
    if len(nthreads) > 1:  # one worker per band, each worker at most once, in address order
        used = [w[0] for _, w in bands]
        assert all(len(w) == 1 for _, w in bands) and used == sorted(set(used)) and set(used) <= set(nthreads)
    else:
        assert bands[0][1] is None


@pytest.mark.slow
def test_client_killed_mid_run_then_rerun_on_the_cluster_resumes_bit_identical(tmp_path: Path, cluster):
    """kill -9 of the lncc process itself while the cluster computes: the rerun computes only what is missing."""
    _, _, (ref_url, mov_url) = _pair(tmp_path, shape=(1536, 1536), seed=13)
    common = dict(reference=ref_url, moving=mov_url, window=5, chunks={"y": 128, "x": 128})
    out = tmp_path / "killed.zarr"
    killed = write_config(tmp_path / "killed.yaml", output=str(out), compute={"scheduler": cluster.address},
                          **common)
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(killed), "--quiet"], cwd=tmp_path)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and blocks_done(out) < 20:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(1.0)  # tasks already on the workers may finish: they write whole chunks and their ledger entries
    done = blocks_done(out)
    assert done < 144
    rerun = lncc("run", str(killed), cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resumed: {144 - done} of 144 blocks computed" in rerun.stdout
    clean = write_config(tmp_path / "clean.yaml", output=str(tmp_path / "clean.zarr"), **common)
    assert invoke_cli("run", str(clean), "--quiet", cwd=tmp_path).returncode == 0
    assert chunk_files(out) == chunk_files(tmp_path / "clean.zarr")


@pytest.mark.slow
def test_local_cluster_run_equals_threads_and_counts_worker_memory(tmp_path: Path):
    """scheduler: local starts worker processes for the run; same bytes as threads, RSS includes the workers."""
    from pipeline.job import run

    _, _, (ref_url, mov_url) = _pair(tmp_path, shape=(700, 900), chunks=(100, 100), seed=14)
    common = dict(reference=ref_url, moving=mov_url, window=11, chunks={"y": 200, "x": 300})
    local = parse_config({**common, "output": str(tmp_path / "local.zarr"),
                          "compute": {"scheduler": "local", "workers": 2, "threads_per_worker": 1,
                                      "memory_limit": "1GB"}})
    threads = parse_config({**common, "output": str(tmp_path / "threads.zarr")})
    summary = run(local)
    run(threads)
    assert chunk_files(tmp_path / "local.zarr") == chunk_files(tmp_path / "threads.zarr")
    # Two worker processes (each imports numpy, numba, dask, zarr) are counted, not just this one.
    assert summary.peak_rss_mb > psutil.Process().memory_info().rss / 1e6
    # The cluster is gone after the run (multiprocessing's resource tracker may outlive it, by design).
    assert not [c for c in psutil.Process().children(recursive=True) if "resource_tracker" not in " ".join(c.cmdline())]


@pytest.mark.slow
def test_unreachable_scheduler_address_is_one_clear_line(tmp_path: Path):
    import socket

    _, _, (ref_url, mov_url) = _pair(tmp_path, shape=(64, 64), chunks=(32, 32))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free once closed: nothing listens there
    cfg = write_config(tmp_path / "c.yaml", reference=ref_url, moving=mov_url, output=str(tmp_path / "o.zarr"),
                       compute={"scheduler": f"tcp://127.0.0.1:{port}"})
    result = lncc("run", str(cfg), cwd=tmp_path, timeout=120, env={"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s"})
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert f"tcp://127.0.0.1:{port}" in result.stderr and "dask scheduler" in result.stderr
    assert not (tmp_path / "o.zarr").exists()


@pytest.mark.parametrize("system, marker", [("slurm", "#SBATCH"), ("pbs", "#PBS")])
def test_jobqueue_job_script_is_built_from_the_config_without_submitting(tmp_path: Path, system, marker):
    """The batch script a jobqueue run would submit, from YAML, through `lncc job-script`."""
    cfg = write_config(tmp_path / "c.yaml", reference="in.zarr/ref", moving="in.zarr/mov", output="out.zarr",
                       compute={"scheduler": "jobqueue",
                                "jobqueue": {"system": system, "queue": "short", "account": "imaging",
                                             "cores": 8, "memory": "32GB", "processes": 2, "jobs": 3,
                                             "walltime": "01:30:00",
                                             "job_script_prologue": ["source /opt/lncc/bin/activate"]}})
    result = invoke_cli("job-script", str(cfg), cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    script = result.stdout
    assert script.startswith("#!") and marker in script
    assert "short" in script and "imaging" in script and "01:30:00" in script
    assert "source /opt/lncc/bin/activate" in script
    assert "--nworkers 2" in script and "--nthreads 4" in script
    assert "distributed.cli.dask_worker" in script or "dask worker" in script or "dask-worker" in script


def test_job_script_needs_a_jobqueue_config(tmp_path: Path):
    cfg = write_config(tmp_path / "c.yaml", reference="a.zarr", moving="b.zarr", output="o.zarr")
    result = invoke_cli("job-script", str(cfg), cwd=tmp_path)
    assert result.returncode == 2 and "scheduler: jobqueue" in result.stderr


@pytest.mark.parametrize("compute, message", [
    ({"scheduler": "tcp//host:1"}, "compute.scheduler"),
    ({"scheduler": "threads", "threads_per_worker": 2}, "only apply to scheduler: local"),
    ({"scheduler": "jobqueue"}, "needs a compute.jobqueue section"),
    ({"scheduler": "local", "memory": "lots"}, "compute.memory"),
    ({"scheduler": "tcp://h:1", "workers": 2}, "workers does not apply"),
    ({"scheduler": "jobqueue", "jobqueue": {"system": "slurm", "cores": 4}}, "compute.jobqueue.memory"),
])
def test_bad_compute_settings_are_config_errors(compute, message):
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        parse_config({"reference": "a", "moving": "b", "output": "c", "compute": compute})
