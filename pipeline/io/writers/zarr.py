"""Writing an output's blocks: values, checksum, then the ledger entry that proves them."""

from __future__ import annotations

import contextlib
from concurrent.futures import Future
from typing import Any

import numpy as np
import zarr

from ...core.threads import thread_buffer
from ..codecs import direct_codec
from ..encodings import encode
from ..ledger import block_digest
from ..metadata import CHECKSUMS, LEDGER, PROVENANCE_KEY, STATE_GROUP, group_attributes, zarr_format_of
from ..process import process_state
from ..urls import is_local, join_url, local_path, one_line, store_kwargs
from .files import write_chunks

__all__ = ["OutputWriter"]


class OutputWriter:
    """Writes blocks of an output prepared by :func:`pipeline.io.create_output`, then their ledger entries.

    For a local output whose encoding it knows (the ones :func:`pipeline.io.create_output`
    makes), each zarr chunk is encoded here and written to a temporary file
    renamed into place, by the thread that writes the block (the caller's,
    or with :meth:`write_later` one of this process's writer threads). This is
    what zarr itself would write, but it skips zarr's shared event loop, which
    otherwise serialises the writes of all dask threads and copies each chunk.
    Anything else goes through zarr. Every write replaces whole chunks, so a
    retried block writes the same bytes: for URL outputs each chunk is one
    whole-object PUT. It is pickled to dask workers with its URL, names,
    ``storage_options`` and run id, never with open arrays.

    ``run`` identifies the run whose background writes :func:`~pipeline.io.finish_writes`
    waits for (and then refuses); None for a writer used only by :meth:`write`.
    With ``owner``, a block is written only while the output's provenance
    names that run id (``run_id``): a run whose output another run has taken
    over (through another path to it) writes nothing more.
    """

    def __init__(self, url: str, names: tuple[str, ...], storage_options: dict[str, Any] | None = None,
                 run: str | None = None, owner: str | None = None):
        self.url = url
        self.names = tuple(names)
        self.storage_options = storage_options
        self.run = run
        self.owner = owner
        self._arrays: dict[str, Any] = {}
        self._ledger = None
        self._checksums = None
        self._format = None

    def __getstate__(self) -> dict[str, Any]:
        # workers open their own arrays
        return {**self.__dict__, "_arrays": {}, "_ledger": None, "_checksums": None}

    def __repr__(self) -> str:  # never the storage options
        return f"OutputWriter({self.url!r}, {self.names!r})"

    def _array(self, name: str):
        if name not in self._arrays:
            array = zarr.open_array(store=join_url(self.url, name), mode="r+", config={"write_empty_chunks": True},
                                    **store_kwargs(self.url, self.storage_options))
            self._arrays[name] = (array, direct_codec(array) if is_local(self.url) else None)
        return self._arrays[name]

    def write(self, values: dict[str, np.ndarray], region: tuple[slice, ...], block_index: tuple[int, ...],
              stats: np.ndarray, levels: list[tuple[str, np.ndarray, tuple[slice, ...]]] = ()) -> None:
        """Write one block of every output variable, its ``levels`` (further arrays of the output, each as (path,
        values, region): its part of the pyramid), its checksum, then its ledger entry (which proves all of them
        are there).

        Raises
        ------
        RuntimeError
            If the output now belongs to another run (see ``owner``), or a
            write fails (the message names the output and the block).
        """
        parts = [(name, encode(block, self._array(name)[0].dtype), where)
                 for name, block, where in [(name, block, region) for name, block in values.items()] + list(levels)]
        digest = block_digest([block for _, block, _ in parts])  # of the values as stored, which a check reads back
        for name, block, where in parts:
            array, codec = self._array(name)
            with self._where(block_index, name):
                if codec is None:
                    array[where] = block
                else:
                    write_chunks(array, codec, local_path(join_url(self.url, name)), block, where)
        if self._ledger is None:
            options = store_kwargs(self.url, self.storage_options)
            self._checksums = zarr.open_array(store=join_url(self.url, STATE_GROUP, CHECKSUMS), mode="r+", **options)
            self._ledger = zarr.open_array(store=join_url(self.url, STATE_GROUP, LEDGER), mode="r+", **options)
        with self._where(block_index, f"{STATE_GROUP}/{CHECKSUMS}"):
            self._checksums[block_index] = digest
        self._check_owner(block_index)  # the ledger entry is what makes the block count
        with self._where(block_index, f"{STATE_GROUP}/{LEDGER}"):
            self._ledger[block_index] = stats

    @contextlib.contextmanager
    def _where(self, block_index, array: str):
        """Reword a failed write with the output, the array and the block (a full disk's OSError names none)."""
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - reworded with where it happened
            message = (f"cannot write block {tuple(block_index)} to {join_url(self.url, array)!r} "
                       f"({one_line(exc, self.storage_options)}); fix the cause (e.g. free disk space) and rerun "
                       "to resume")
            raise (OSError(exc.errno, message) if isinstance(exc, OSError) else RuntimeError(message)) from None

    def _check_owner(self, block_index) -> None:
        if self.owner is None:
            return
        if self._format is None:
            self._format = zarr_format_of(self.url, self.storage_options)
        attrs = group_attributes(self.url, storage_options=self.storage_options, zarr_format=self._format) or {}
        holder = (attrs.get(PROVENANCE_KEY) or {}).get("run_id")
        if holder != self.owner:
            raise RuntimeError(f"output {self.url!r} was taken over by another run (run id {holder}) while run "
                               f"{self.owner} was writing it; block {tuple(block_index)} is left out. Run one lncc "
                               "at a time per output, by one path; rerun to repair it")

    def buffer(self, shape: tuple[int, ...]) -> np.ndarray:
        """A float32 array for the calling thread's next block, to be handed to :meth:`write_later`.

        Each thread alternates between two buffers, so a block computes while
        the one before it is still being written; a buffer is handed out only
        once its last write has finished. If that write, of this writer's run,
        failed, its error is raised here (and not again by :func:`finish_writes`).
        """
        slot = process_state().writes.free_slot(self.run)
        return thread_buffer(f"output-{slot}", shape, np.float32)

    def write_later(self, values: dict[str, np.ndarray], region: tuple[slice, ...], block_index: tuple[int, ...],
                    stats: np.ndarray, levels: list[tuple[str, np.ndarray, tuple[slice, ...]]] = ()) -> Future:
        """:meth:`write` in a background thread of this process; ``values`` views the latest :meth:`buffer`.

        The ledger entry still follows the block's values, so a block whose write
        did not finish is not done, and a rerun computes it. Call
        :func:`finish_writes` with this writer's run before relying on the output.

        Raises
        ------
        RuntimeError
            If :func:`finish_writes` already closed the run (a task still running
            after its run failed): nothing is written.
        """
        return process_state().writes.submit(self.run, f"block {block_index} of {self.url!r}", self.write, values,
                                             region, block_index, stats, levels)
