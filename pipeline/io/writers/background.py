"""Block writes that finish in this process's background threads while the next block computes."""

from __future__ import annotations

import functools
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait

from ..process import process_state

__all__ = ["BackgroundWrites", "finish_writes", "WRITER_THREADS"]

#: Block-writing threads per process: they mostly wait on the disk, so a few keep it busy without competing
#: for the cores.
WRITER_THREADS = 4


class BackgroundWrites:
    """The writer threads of one process and the writes in flight, by thread and by run.

    Each computing thread has two block buffers (a ring of two slots): a slot is handed out again only once
    its last write has finished. A run's writes are awaited, and the run closed to late writes, by
    :meth:`finish`.
    """

    def __init__(self):
        self._lock = threading.Lock()
        #: Per thread: the buffer slot its next block uses, and the (write, run) in flight from each of its two slots.
        self._rings: dict[int, list] = {}
        #: Per run: writes started by submit that have not finished, or that failed and were not yet reported.
        self._in_flight: dict[str | None, set[Future]] = {}
        #: Runs that finish closed: their late tasks write nothing.
        self._closed: set[str | None] = set()
        self._pool: ThreadPoolExecutor | None = None

    def pool(self) -> ThreadPoolExecutor:
        """The block-writing threads: they mostly wait on the disk, so they do not compete for cores."""
        with self._lock:
            return self._pool_locked()

    def _pool_locked(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=WRITER_THREADS, thread_name_prefix="lncc-write")
        return self._pool

    def free_slot(self, run: str | None) -> int:
        """The calling thread's next buffer slot (0 or 1), once its last write has finished.

        Raises that write's error if it failed and was of ``run`` (it is then not reported again by
        :meth:`finish`).
        """
        with self._lock:
            ring = self._rings.setdefault(threading.get_ident(), [0, None, None])
            slot = ring[0]
            previous = ring[1 + slot]
        if previous is not None:
            future, owner = previous
            wait([future])
            with self._lock:
                if ring[1 + slot] is previous:
                    ring[1 + slot] = None
                failed = owner == run and future.exception() is not None
                if failed:
                    self._in_flight.get(owner, set()).discard(future)
            if failed:
                raise future.exception()
        return slot

    def submit(self, run: str | None, what: str, write, *args) -> Future:
        """Run ``write(*args)`` in a writer thread for ``run``, from the calling thread's current slot.

        Raises
        ------
        RuntimeError
            If ``run`` is closed (a task still running after its run failed): nothing is written.
        """
        with self._lock:
            if run in self._closed:
                raise RuntimeError(f"run {run} is over; {what} was not written")
            future = self._pool_locked().submit(write, *args)
            ring = self._rings.setdefault(threading.get_ident(), [0, None, None])
            ring[1 + ring[0]] = (future, run)
            ring[0] ^= 1
            self._in_flight.setdefault(run, set()).add(future)
        future.add_done_callback(functools.partial(self._landed, run))
        return future

    def _landed(self, run, future: Future) -> None:
        if future.exception() is None:
            with self._lock:
                self._in_flight.get(run, set()).discard(future)

    def finish(self, run: str | None) -> None:
        """Close ``run`` to new writes, wait for those it started, and raise the first of their errors."""
        with self._lock:
            self._closed.add(run)
            pending = list(self._in_flight.pop(run, ()))
        error = None
        for future in pending:
            try:
                future.result()
            except BaseException as exc:  # noqa: BLE001 - the first is re-raised below
                error = error or exc
        with self._lock:
            for ring in self._rings.values():
                for k in (1, 2):
                    if ring[k] is not None and ring[k][0] in pending:
                        ring[k] = None
        if error is not None:
            raise error


def finish_writes(run: str | None) -> None:
    """Close ``run`` to new background writes in this process, and wait for those it started.

    Called once a run's tasks are over (or have failed): a task of the run still
    running here writes nothing after this, so the run can release its output.
    Raises the first error among the writes (each is reported once); afterwards
    the block buffers they used are free.
    """
    process_state().writes.finish(run)
