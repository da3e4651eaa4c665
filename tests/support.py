"""What the tests share: servers and clusters started for real on 127.0.0.1, the CLI as a subprocess, and
assertions and sample pairs used by more than one test file.

Nothing here is a mock: :class:`S3Server` is moto's S3 server in its own process, :class:`DaskCluster` a
dask scheduler and workers started with dask's own CLI, :func:`run_cli` the ``lncc`` command itself, and
:func:`invoke_cli` the same command's real app (``pipeline.cli.app``) run in this process, for the tests in
which the command's process itself (signals, kills, start-up, interpreter exit) is not what is checked.
Seeded images and the independent float64 reference stay in :mod:`pipeline.testing` (the benchmark and the
demo use them too); what is here serves the tests only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["S3Server", "DaskCluster", "run_cli", "invoke_cli", "chunk_files", "blocks_done", "assert_matches",
           "MAP_NAMES", "holey_pair", "assert_same", "non_zarr", "REPO"]

#: The checkout: its scripts, configs and package (support.py stays at the top of tests/).
REPO = Path(__file__).resolve().parents[1]


class S3Server:
    """moto's S3-compatible server in a subprocess on 127.0.0.1, at a free port, for tests of URL stores.

    Use as a context manager: it starts the server, waits until it answers and
    creates ``bucket``; on exit it stops the server (its data lives in memory
    and goes with it). moto accepts any credentials: :attr:`credentials` are the
    fake ones the tests put in the environment.

    Examples
    --------
    >>> with S3Server("demo") as s3:                         # doctest: +SKIP
    ...     url = f"s3://demo/pair.zarr/ref"
    ...     options = {"endpoint_url": s3.endpoint_url}
    """

    credentials = {"AWS_ACCESS_KEY_ID": "lncc-test-key", "AWS_SECRET_ACCESS_KEY": "lncc-test-secret",
                   "AWS_DEFAULT_REGION": "us-east-1"}

    def __init__(self, bucket: str = "lncc-test", *, timeout: float = 30.0):
        self.bucket = bucket
        self.timeout = timeout
        self.process = None
        self.endpoint_url = ""

    def __enter__(self) -> S3Server:
        for _ in range(3):  # the free port may be taken between finding it and moto binding it: retry
            if self._start():
                break
        else:
            raise RuntimeError("moto's S3 server did not start on 127.0.0.1; is moto[server] installed?")
        import s3fs

        fs = s3fs.S3FileSystem(endpoint_url=self.endpoint_url, key=self.credentials["AWS_ACCESS_KEY_ID"],
                               secret=self.credentials["AWS_SECRET_ACCESS_KEY"], skip_instance_cache=True)
        fs.mkdir(self.bucket)
        return self

    def _start(self) -> bool:
        import socket
        import subprocess
        import sys
        import time
        import urllib.request

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.endpoint_url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                urllib.request.urlopen(f"{self.endpoint_url}/moto-api/", timeout=1).close()
                return True
            except OSError:
                time.sleep(0.05)
        self.stop()
        return False

    def stop(self) -> None:
        """Stop the server (and wait for it)."""
        import subprocess

        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def __exit__(self, *exc) -> None:
        self.stop()


def run_cli(*args: str, cwd, timeout: float = 300, env: dict[str, str] | None = None, stdout=None):
    """``python -m pipeline.cli ARGS`` as a real subprocess in ``cwd`` (stderr not a TTY); its CompletedProcess.

    ``env`` is added to this process's environment (without ``LNCC_DEBUG``). Output is captured as text,
    unless ``stdout`` (a file descriptor or file) is given: then stdout goes there and only stderr is captured.
    """
    import os
    import subprocess
    import sys

    base = {k: v for k, v in os.environ.items() if k != "LNCC_DEBUG"}
    streams = {"capture_output": True} if stdout is None else {"stdout": stdout, "stderr": subprocess.PIPE}
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], text=True, cwd=cwd, timeout=timeout,
                          env={**base, **(env or {})}, **streams)


#: The warning filters of a fresh interpreter (no -W options); a ``python -m pipeline.cli`` process has these and
#: the ones lncc's modules add as they are imported (:func:`pipeline.io.metadata.ignore_zarr_warnings`).
_INTERPRETER_WARNING_FILTERS = (("default", DeprecationWarning, "__main__"), ("ignore", DeprecationWarning, ""),
                                ("ignore", PendingDeprecationWarning, ""), ("ignore", ImportWarning, ""),
                                ("ignore", ResourceWarning, ""))


def invoke_cli(*args: str, cwd, timeout: float = 300, env: dict[str, str] | None = None):
    """``lncc ARGS`` run in this process in ``cwd`` (stderr not a TTY); a CompletedProcess like :func:`run_cli`'s.

    The real command (``pipeline.cli.app``, through click's test runner, as typer builds it for ``lncc``) with
    what a fresh process would give it: stdout and stderr captured apart (file descriptors 1 and 2 too),
    ``LNCC_DEBUG`` unset and ``env`` added, the warning filters of a fresh interpreter that imported lncc (not
    pytest's: a warning is printed on stderr, as the command would print it),
    uncaught exceptions of threads and unraisable ones printed on stderr (not collected by pytest), and an
    exception escaping the command printed as the interpreter would ("Traceback ...", exit 1). It runs
    without a start-up cost, and so cannot check what only a process shows: signals, kills, start-up, exit.
    ``timeout`` is checked after the run (it cannot be interrupted here).
    """
    import contextlib
    import subprocess
    import sys
    import threading
    import time
    import traceback
    import warnings

    from click.testing import CliRunner
    from typer.main import get_command

    import pipeline.cli as cli
    from pipeline.io.metadata import ignore_zarr_warnings

    args = [str(a) for a in args]
    cli._storage_options = None  # as in a new process: nothing of an earlier command to redact
    hooks = sys.unraisablehook, threading.excepthook
    started = time.monotonic()
    try:
        with contextlib.chdir(cwd), warnings.catch_warnings(record=True) as caught:
            warnings.resetwarnings()
            for action, category, module in reversed(_INTERPRETER_WARNING_FILTERS):
                warnings.filterwarnings(action, category=category, module=module)
            ignore_zarr_warnings()  # what importing pipeline.io does in a new process
            sys.unraisablehook, threading.excepthook = sys.__unraisablehook__, threading.__excepthook__
            result = CliRunner(capture="fd").invoke(get_command(cli.app), args, prog_name="lncc",
                                                    env={"LNCC_DEBUG": None, **(env or {})}, catch_exceptions=True)
    finally:
        sys.unraisablehook, threading.excepthook = hooks
    elapsed = time.monotonic() - started
    if elapsed > timeout:
        raise subprocess.TimeoutExpired(["lncc", *args], timeout)
    stderr = result.stderr + "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line)
                                     for w in caught)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "Traceback (most recent call last):\n" + "".join(
            traceback.format_exception(*result.exc_info)[1:])
    return subprocess.CompletedProcess(["lncc", *args], result.exit_code, result.stdout, stderr)


def chunk_files(root, name: str = "ncc") -> dict[str, bytes]:
    """Every stored file of variable ``name`` of the output at ``root``, by relative path: for bit-for-bit checks."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / name).rglob("*")) if p.is_file()}


def blocks_done(out) -> int:
    """How many blocks the ledger of the output at ``out`` records as done; 0 while there is no ledger yet."""
    from pipeline.core.stats import done_blocks
    from pipeline.io import read_ledger

    try:
        return int(done_blocks(read_ledger(str(out))).sum())
    except Exception:  # noqa: BLE001 - no ledger yet
        return 0


def kill_run_after(config, out, blocks: int, *, cwd, timeout: float = 120, poll: float = 0.01, stderr=None) -> int:
    """Start ``lncc run CONFIG --quiet`` as a real process, SIGKILL it once the ledger of ``out`` counts
    ``blocks`` blocks, and return how many were done when it died (the run must still be running then)."""
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(config), "--quiet"], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=stderr if stderr is not None else subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while blocks_done(out) < blocks and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(poll)
        assert proc.poll() is None, f"the run ended (exit {proc.returncode}) before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return blocks_done(out)


class DaskCluster:
    """A dask scheduler and worker processes started with dask's own CLI on 127.0.0.1 at free ports.

    Each process has its own session, so a test can kill a worker's whole
    process tree (nanny and worker) with :meth:`kill_worker`. Use as a context
    manager, or call :meth:`close`.
    """

    def __init__(self, root, workers: int = 2, threads: int = 1):
        import json
        import time

        self.root = root
        self.threads = threads
        root.mkdir(parents=True, exist_ok=True)
        self.file = root / "scheduler.json"
        self.scheduler = self._start("scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                     "--scheduler-file", str(self.file), log=root / "scheduler.log")
        deadline = time.monotonic() + 60
        while not self.file.exists() or not self.file.read_text().strip():
            if time.monotonic() > deadline or self.scheduler.poll() is not None:
                raise RuntimeError("dask scheduler did not start: " + (root / "scheduler.log").read_text())
            time.sleep(0.1)
        self.address = json.loads(self.file.read_text())["address"]
        self.workers = [self._start("worker", "--scheduler-file", str(self.file), "--host", "127.0.0.1",
                                    "--nworkers", "1", "--nthreads", str(threads), "--no-dashboard",
                                    "--memory-limit", "0", "--local-directory", str(root / f"w{i}"),
                                    log=root / f"worker{i}.log") for i in range(workers)]
        from distributed import Client

        with Client(self.address, timeout="20s") as client:
            client.wait_for_workers(workers, timeout=60)

    @staticmethod
    def _start(command: str, *args: str, log):
        import subprocess
        import sys

        return subprocess.Popen([sys.executable, "-m", f"distributed.cli.dask_{command}", *args],
                                stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)

    def kill_worker(self, i: int = 0) -> None:
        """SIGKILL worker ``i``'s nanny and worker processes: no goodbye to the scheduler."""
        import psutil

        root = psutil.Process(self.workers[i].pid)
        for proc in [root, *root.children(recursive=True)]:
            proc.kill()

    def close(self) -> None:
        import os
        import signal
        import subprocess

        for proc in [*self.workers, self.scheduler]:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in [*self.workers, self.scheduler]:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- assertions and sample pairs ------------------------------------------------------------------------------------


def assert_matches(got, expected, tol: float = 1e-6) -> None:
    """Same shape, identical NaN masks and max |difference| <= tol elsewhere."""
    got = np.asarray(got)
    expected = np.asarray(expected, dtype=np.float64)
    assert got.shape == expected.shape, (got.shape, expected.shape)
    mismatch = np.argwhere(np.isnan(got) != np.isnan(expected))
    assert mismatch.size == 0, f"NaN masks differ at {len(mismatch)} pixels, first {mismatch[:5].tolist()}"
    valid = ~np.isnan(expected)
    if valid.any():
        err = np.abs(got[valid].astype(np.float64) - expected[valid])
        worst = int(np.argmax(err))
        assert err[worst] <= tol, f"max |got - expected| = {err[worst]:.3g} at {np.argwhere(valid)[worst].tolist()}"


#: The variables of a map with extras, in the order :func:`pipeline.testing.reference_ncc` returns them.
MAP_NAMES = ("ncc", "valid_fraction", "std_reference", "std_moving")


def holey_pair(shape, dtype, seed, hole_fraction=0.15, border=0):
    """A sample pair with NaN/Inf holes (float dtypes) and a nodata (0) border on the reference."""
    from pipeline.testing import sample_pair

    rng = np.random.default_rng(seed)
    a, b = (x.copy() for x in sample_pair(shape, dtype, seed=seed))
    if border:
        a[..., :, :border] = 0
    if np.dtype(dtype).kind == "f":
        b[rng.random(shape) < hole_fraction] = np.nan
        a[rng.random(shape) < hole_fraction / 3] = np.inf
        a[rng.random(shape) < hole_fraction / 3] = -np.inf
    mask = rng.random(shape) > hole_fraction
    return a, b, mask


def assert_same(result, expected, tol=1e-6):
    """Each of the :data:`MAP_NAMES` variables of ``result`` equals ``expected``'s: same NaN, relative tol."""
    for name, got, want in zip(MAP_NAMES, result, expected):
        got = np.asarray(got, dtype=np.float64)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=name)
        scale = np.maximum(1.0, np.abs(np.nan_to_num(want)))
        assert np.nanmax(np.abs(got - want) / scale, initial=0.0) <= tol, name


def non_zarr(tmp_path, kind: str) -> str:
    """A path that exists but is no zarr store: a ``"directory"`` holding a text file, or a ``"file"`` of bytes
    with no suffix lncc reads as a file format (so it is tried as zarr)."""
    if kind == "directory":
        path = tmp_path / "photos"
        path.mkdir()
        (path / "readme.txt").write_text("not zarr")
    else:
        path = tmp_path / "image.raw"
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(32))
    return str(path)
