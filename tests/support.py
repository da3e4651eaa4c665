"""What the tests share: servers and clusters started for real on 127.0.0.1, the CLI as a subprocess, and
assertions used across layers.

Nothing here is a mock: :class:`S3Server` is moto's S3 server in its own process, :class:`DaskCluster` a
dask scheduler and workers started with dask's own CLI, :func:`run_cli` the ``lncc`` command itself.
Seeded images and the independent float64 reference stay in :mod:`pipeline.testing` (the benchmark and the
demo use them too).
"""

from __future__ import annotations

__all__ = ["S3Server", "DaskCluster", "run_cli", "chunk_files"]


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


def run_cli(*args: str, cwd, timeout: float = 300, env: dict[str, str] | None = None):
    """``python -m pipeline.cli ARGS`` as a real subprocess in ``cwd`` (stderr not a TTY); its CompletedProcess."""
    import os
    import subprocess
    import sys

    base = {k: v for k, v in os.environ.items() if k != "LNCC_DEBUG"}
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env={**base, **(env or {})})


def chunk_files(root, name: str = "ncc") -> dict[str, bytes]:
    """Every stored file of variable ``name`` of the output at ``root``, by relative path: for bit-for-bit checks."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / name).rglob("*")) if p.is_file()}


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
