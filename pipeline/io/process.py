"""What one process keeps from task to task, in one object with a clear lifetime.

A process (this one, or each dask worker) keeps the decoded input chunks its tasks share, the threads that
write blocks in the background with the writes in flight, and the devices that refused O_DIRECT. They live
in one :class:`ProcessState`, made on first use and dropped in a forked child (whose copy would hold another
process's threads and locks). Besides it, lncc keeps only each thread's reusable buffers
(:func:`pipeline.core.threads.thread_buffer`) and, in the ``lncc`` command, the options to redact from its
error line.
"""

from __future__ import annotations

import os
import threading

__all__ = ["ProcessState", "process_state"]


class ProcessState:
    """The chunk cache, decoded files and videos, the background writes and the O_DIRECT refusals of this process."""

    def __init__(self):
        # Imported here: the readers and writers import this module to find their process's state.
        from .readers.chunks import ChunkCache
        from .readers.images import DecodedFiles
        from .writers.background import BackgroundWrites

        self.chunk_cache = ChunkCache()
        #: Whole files decoded for the tasks that read them next (single images, frames of a sequence).
        self.decoded = DecodedFiles()
        #: Open video decoders by file, each reading its frames in order (:mod:`.readers.video`).
        self.videos: dict = {}
        self.videos_lock = threading.Lock()
        #: Open TIFF files by version, series and level: (file descriptor, pages, tifffile handle).
        self.files: dict = {}
        self.files_lock = threading.Lock()
        self.writes = BackgroundWrites()
        #: Devices (``st_dev``) whose file system refused O_DIRECT: written through the page cache.
        self.no_direct: set[int] = set()


_state: ProcessState | None = None
_lock = threading.Lock()


def process_state() -> ProcessState:
    """This process's state, made on first use."""
    global _state
    if _state is None:
        with _lock:
            if _state is None:
                _state = ProcessState()
    return _state


def _forget() -> None:
    global _state, _lock
    _state = None
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_forget)
