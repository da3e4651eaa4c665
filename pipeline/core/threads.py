"""What each thread and process works with: page-aligned buffers reused from task to task, and the cores."""

from __future__ import annotations

import os
import threading

import numpy as np

__all__ = ["PAGE", "thread_buffer", "available_cores"]

#: Alignment of every buffer: a page, which is also what O_DIRECT asks of addresses.
PAGE = 4096

_local = threading.local()


def thread_buffer(slot: str, shape, dtype=np.uint8) -> np.ndarray:
    """An uninitialised C-ordered array for this thread, reused by its next call with the same ``slot``.

    Allocating a fresh block per task costs page faults (kernel time) comparable
    to the kernel itself, and dask workers set ``MALLOC_TRIM_THRESHOLD_``, which
    makes every large allocation a new mapping. The caller must be done with
    the array before this thread asks for the same slot again. The data start
    on a :data:`PAGE` boundary, so whole buffers can go to the OS with O_DIRECT.
    """
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    cached = getattr(_local, slot, None)
    if cached is None or cached.size < nbytes:
        raw = np.empty(nbytes + PAGE, dtype=np.uint8)
        skip = -raw.ctypes.data % PAGE
        cached = raw[skip:skip + nbytes]
        setattr(_local, slot, cached)
    return cached[:nbytes].view(dtype).reshape(shape)


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one, else the CPU count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
