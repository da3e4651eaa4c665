"""Where a run's graph is computed: dask's local schedulers or a dask.distributed cluster.

``compute.scheduler`` picks one of

- ``threads``, ``processes``, ``synchronous``: dask's schedulers in this process;
- ``local``: a :class:`distributed.LocalCluster` started for the run (worker
  processes on this machine, stopped at the end);
- an address such as ``tcp://host:8786``: a running dask scheduler, whose
  workers must reach the inputs and outputs by the same paths or URLs;
- ``jobqueue``: a dask-jobqueue cluster that submits batch jobs running dask
  workers which connect back to a scheduler in this process.

dask schedules everything: a distributed run submits the whole graph at once,
and dask retries the tasks of a worker that dies. lncc only hints at locality:
the blocks go in contiguous bands, one per worker, as *loose* restrictions
(dask may still run a task elsewhere, e.g. when a worker is idle or gone), so
that neighbouring blocks share a worker's cache of decoded input chunks.

Every task rewrites whole chunks and then its ledger entry, so a retried task
writes the same bytes. A task's write may land after the task returns; the run
waits for them in every worker before it reads the ledger. A worker that dies
with writes in flight after its tasks returned leaves those blocks out of the
ledger: the run then fails with "missing blocks", and a rerun computes just
them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from ..config import JOBQUEUE_SYSTEMS, ComputeConfig, JobqueueConfig
from ..core.threads import available_cores
from ..errors import InputError

__all__ = ["Executor", "executor", "jobqueue_cluster", "job_script", "worker_count"]


def worker_count(compute: ComputeConfig) -> tuple[int, int]:
    """(worker processes, threads per worker) that a local run uses; the cluster's own for remote ones."""
    cpus = available_cores()
    if compute.scheduler == "local":
        threads = compute.threads_per_worker or 1
        return compute.workers or max(1, cpus // threads), threads
    if compute.scheduler == "jobqueue":
        jq = compute.jobqueue
        processes = jq.processes or 1
        return jq.jobs * processes, max(1, jq.cores // processes)
    if compute.scheduler == "processes":
        return compute.workers or cpus, 1
    if compute.scheduler == "synchronous":
        return 1, 1
    return 1, compute.workers or cpus  # threads; for an address, the caller asks the scheduler


class Executor:
    """Computes lists of dask tasks where the config says; a distributed client when there is one."""

    def __init__(self, compute: ComputeConfig, client=None):
        self.compute = compute
        self.client = client

    def run(self, tasks: list, progress: bool = False, in_order: bool = False) -> list:
        """Compute ``tasks`` (dask collections or delayed objects) and return their results.

        ``in_order``: the tasks read inputs best read in order (video, decoded forward from keyframes). dask's
        local schedulers take independent tasks in an order of their own (by key: blocks 9, 8, ..., 4, 37, 36,
        ...), which makes a decoder seek back for nearly every block; there the tasks go in waves of a few per
        worker, in the list's order (a distributed cluster gives each worker a band of them, in order already).
        """
        if not tasks:
            return []
        if self.client is None:
            import sys

            import dask
            import dask.local
            import dask.multiprocessing
            import dask.threaded
            from dask.diagnostics import ProgressBar

            # The scheduler's function itself: given its name, dask imports distributed (~0.25 s) to look for a
            # client first.
            get = {"threads": dask.threaded.get, "processes": dask.multiprocessing.get,
                   "synchronous": dask.local.get_sync}[self.compute.scheduler]
            kwargs: dict[str, Any] = {"scheduler": get}
            if self.compute.workers is not None and self.compute.scheduler != "synchronous":
                kwargs["num_workers"] = self.compute.workers
            with contextlib.ExitStack() as stack:
                if self.compute.scheduler == "processes":
                    kwargs["pool"] = stack.enter_context(_process_pool(self.compute.workers))
                if progress:
                    stack.enter_context(ProgressBar(out=sys.stderr, minimum=1.0))
                processes, threads = worker_count(self.compute)
                wave = 4 * processes * threads if in_order else len(tasks)
                out = []
                for start in range(0, len(tasks), max(wave, 1)):
                    out += dask.compute(tasks[start:start + wave], **kwargs)[0]
                return out
        futures = []
        # A jobqueue cluster's workers join over time: bands over the first arrivals would leave the rest to
        # work stealing.
        nthreads = {} if self.compute.scheduler == "jobqueue" else self.client.nthreads()
        for part, worker in _bands(tasks, nthreads):
            futures += self.client.compute(part, workers=worker, allow_other_workers=True)
        if progress:
            from distributed import progress as show

            show(futures)
        try:
            return self.client.gather(futures)
        except BaseException:
            self.client.cancel(futures)  # no task starts after the run has failed
            raise

    def threads_per_worker(self) -> int:
        """Threads per worker process: the most any connected worker has, or the local scheduler's."""
        if self.client is None:
            return worker_count(self.compute)[1]
        counts = self.client.nthreads().values()
        return max(counts) if counts else worker_count(self.compute)[1]

    def start(self, func, *args) -> _Background:
        """Run ``func(*args)`` in every worker process (or here, without a cluster) in a background thread.

        Returns a handle whose ``join()`` waits and re-raises what ``func`` raised
        (e.g. workers that cannot import lncc).
        """
        return _Background(self._everywhere, func, *args)

    def _everywhere(self, func, *args) -> None:
        if self.client is None:
            func(*args)
        else:
            self.client.run(func, *args)


def _bands(tasks: list, nthreads: dict[str, int]) -> list[tuple[list, list[str] | None]]:
    """``tasks`` cut into contiguous runs, one per worker in proportion to its threads: (tasks, [address]).

    A run lists its blocks row by row, so each worker gets a band of
    neighbouring blocks, whose halos come from the chunks that worker already
    decoded (the cache is per process). With one worker or none yet, one part
    with no restriction.
    """
    workers = sorted(nthreads)
    if len(workers) < 2 or len(tasks) < 2:
        return [(list(tasks), None)]
    total = sum(max(1, nthreads[w]) for w in workers)
    bands, start, share = [], 0, 0
    for worker in workers:
        share += max(1, nthreads[worker])
        stop = round(len(tasks) * share / total)
        if stop > start:
            bands.append((list(tasks[start:stop]), [worker]))
        start = stop
    return bands


@contextlib.contextmanager
def _process_pool(workers: int | None):
    """dask's process pool, whose processes die with this one: on a failure or a signal they are stopped at
    once (terminate), and if this process is killed (kill -9) the kernel kills them (PR_SET_PDEATHSIG)."""
    import functools

    import dask.multiprocessing

    if os.environ.get("PYTHONHASHSEED") in (None, "0"):
        os.environ["PYTHONHASHSEED"] = "6640"  # as dask's own pool: consistent hashing in the processes
    from concurrent.futures import ProcessPoolExecutor

    initializer = functools.partial(dask.multiprocessing.initialize_worker_process,
                                    user_initializer=functools.partial(_die_with_parent, os.getpid()))
    # An executor, not a multiprocessing.Pool: a pool replaces a process that dies and loses its task (the run
    # would hang); the executor fails the run with BrokenProcessPool, and a rerun resumes.
    pool = ProcessPoolExecutor(workers or worker_count(ComputeConfig(scheduler="processes"))[0],
                               mp_context=dask.multiprocessing.get_context(), initializer=initializer)
    try:
        yield pool
    except BaseException:
        processes = list((getattr(pool, "_processes", None) or {}).values())  # the executor offers no terminate
        manager = getattr(pool, "_executor_manager_thread", None)
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.kill()
        # Let the executor's manager thread see its processes gone and close its wake-up pipe now: left to the
        # interpreter's exit, Python 3.11 races with it and may print a traceback (CPython gh-105829).
        if manager is not None:
            manager.join(timeout=30)
        raise
    else:
        pool.shutdown()


def _die_with_parent(parent: int) -> None:
    """Ask the kernel to kill this process when its parent dies (Linux; elsewhere nothing happens)."""
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


class _Background:
    """A daemon thread running one call; :meth:`join` re-raises its exception in the joining thread."""

    def __init__(self, func, *args):
        import threading

        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._body, args=(func, *args), daemon=True)
        self._thread.start()

    def _body(self, func, *args) -> None:
        try:
            func(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to join()
            self._error = exc

    def join(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error


@contextlib.contextmanager
def executor(compute: ComputeConfig) -> Iterator[Executor]:
    """An :class:`Executor` for the config; a cluster started here is stopped on exit.

    Raises
    ------
    InputError
        If a scheduler address cannot be reached, or dask-jobqueue is missing.
    """
    if not compute.distributed:
        yield Executor(compute)
        return
    from distributed import Client

    with contextlib.ExitStack() as stack:
        if compute.scheduler == "local":
            cluster = stack.enter_context(_local_cluster(compute))
            client = stack.enter_context(Client(cluster))
        elif compute.scheduler == "jobqueue":
            cluster = stack.enter_context(jobqueue_cluster(compute.jobqueue))
            cluster.scale(jobs=compute.jobqueue.jobs)
            client = stack.enter_context(Client(cluster))
        else:
            client = stack.enter_context(_connect(compute.scheduler))
        yield Executor(compute, client)


def _local_cluster(compute: ComputeConfig):
    from distributed import LocalCluster

    workers, threads = worker_count(compute)
    limit = compute.memory_limit or compute.memory
    # lncc sizes its blocks to the budget and keeps nothing between tasks but input blocks awaiting their
    # neighbours: dask's spilling (from 60% of the limit) would only pickle those to disk and back. The
    # pause and terminate thresholds stay as the safety net.
    import dask

    with dask.config.set({"distributed.worker.memory.target": False, "distributed.worker.memory.spill": False}):
        # The nannies hand this config to the worker processes they start.
        return LocalCluster(n_workers=workers, threads_per_worker=threads, processes=True,
                            memory_limit=limit if limit is not None else "auto", host="127.0.0.1",
                            dashboard_address=None, silence_logs=40)


def _connect(address: str):
    import dask
    from distributed import Client

    try:
        # dask's connect timeout (DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT; 30s by default) bounds the wait.
        return Client(address, timeout=dask.config.get("distributed.comm.timeouts.connect"))
    except (OSError, TimeoutError) as exc:
        raise InputError(f"compute.scheduler: cannot reach the dask scheduler at {address} ({exc}); start it "
                         "(dask scheduler) and its workers, or fix the address") from None


def jobqueue_cluster(jq: JobqueueConfig):
    """The dask-jobqueue cluster object for ``jq`` (its scheduler runs in this process; no job is submitted)."""
    try:
        import dask_jobqueue
    except ImportError:
        raise InputError("compute.scheduler: jobqueue needs the dask-jobqueue package; pip install "
                         "dask-jobqueue") from None
    cls = getattr(dask_jobqueue, JOBQUEUE_SYSTEMS[jq.system])
    kwargs: dict[str, Any] = {"cores": jq.cores, "memory": f"{jq.memory}B"}
    for key in ("processes", "walltime", "queue", "account", "interface", "local_directory"):
        if getattr(jq, key) is not None:
            kwargs[key] = getattr(jq, key)
    if jq.job_extra_directives:
        kwargs["job_extra_directives"] = list(jq.job_extra_directives)
    if jq.job_script_prologue:
        kwargs["job_script_prologue"] = list(jq.job_script_prologue)
    # The scheduler lives in this process; no dashboard, so runs never fight over its port.
    kwargs["scheduler_options"] = {"dashboard_address": None}
    return cls(**kwargs)


def job_script(jq: JobqueueConfig) -> str:
    """The batch script one job of ``jq`` would run, built without submitting anything."""
    with jobqueue_cluster(jq) as cluster:
        return cluster.job_script()
