"""Outputs on the store: whose an output is, a new group's lncc mark, block writes (lncc's own chunk encoding,
direct file writes, deferred writes) and their ledger entries."""

from __future__ import annotations

import os

import numpy as np
import pytest
import xarray as xr
import zarr

from pipeline.core.stats import STATS_LENGTH, done_blocks
from pipeline.io import PROVENANCE_KEY, create_output, output_state, read_ledger, read_provenance, write_array
from pipeline.io.writers.background import WRITER_THREADS
from pipeline.io.writers.files import write_file
from support import non_zarr

FORMATS = [2, 3]


# --- output_state ---------------------------------------------------------------------------------


def test_output_state_absent(tmp_path):
    """A missing path or an empty directory is 'absent'."""
    assert output_state(str(tmp_path / "new.zarr")) == "absent"
    (tmp_path / "empty.zarr").mkdir()
    assert output_state(str(tmp_path / "empty.zarr")) == "absent"


@pytest.mark.parametrize("zarr_format", FORMATS)
def test_output_state_lncc_and_foreign_zarr(tmp_path, zarr_format):
    """A group with the provenance attribute is 'lncc'; a plain group or an array is 'foreign'."""
    marked = zarr.open_group(str(tmp_path / "marked.zarr"), mode="w", zarr_format=zarr_format)
    marked.attrs[PROVENANCE_KEY] = {"status": "complete"}
    assert output_state(str(tmp_path / "marked.zarr")) == "lncc"
    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w", zarr_format=zarr_format)
    assert output_state(str(tmp_path / "plain.zarr")) == "foreign"
    array_url = write_array(str(tmp_path / "arr.zarr"), np.ones((4, 4), np.uint8), zarr_format=zarr_format)
    assert output_state(array_url) == "foreign"


@pytest.mark.parametrize("kind", ["directory", "file"])
def test_output_state_non_zarr_is_foreign(tmp_path, kind):
    """An existing non-zarr directory with files, or a plain file, is 'foreign'."""
    assert output_state(non_zarr(tmp_path, kind)) == "foreign"


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_a_new_group_carries_lncc_mark_in_its_first_metadata(tmp_path, zarr_format):
    """A new group's first metadata file already says lncc's; format 2's .zattrs alone (a kill before its
    .zgroup) still does."""
    import dask.array as da

    from pipeline.io import write_group

    url = str(tmp_path / "out.zarr")
    template = xr.Dataset({"ncc": (("y", "x"), da.empty((40, 40), chunks=20, dtype=np.float32))})
    create_output(url, template, {"status": "running"}, run_id="r1", zarr_format=zarr_format)
    assert output_state(url) == "lncc" and read_provenance(url)["run_id"] == "r1"
    half = str(tmp_path / "half.zarr")
    write_group(half, {"lncc": {"status": "creating"}}, zarr_format=zarr_format)
    if zarr_format == 2:
        (tmp_path / "half.zarr" / ".zgroup").unlink()
    assert output_state(half) == "lncc"


# --- block writes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("zarr_format", FORMATS)
@pytest.mark.parametrize("compressor", ["lz4", "zstd", "none"])
@pytest.mark.parametrize("shape", [(37, 53), (3, 20, 30)])
def test_output_writer_direct_chunks_equal_zarr_writes(tmp_path, zarr_format, compressor, shape):
    """Chunks lncc encodes itself read back through zarr exactly, edge chunks and multi-chunk blocks included."""
    import dask.array as da

    from pipeline.core.stats import STATS_LENGTH
    from pipeline.io import OutputWriter, create_output, read_ledger
    from pipeline.io.codecs import direct_codec

    rng = np.random.default_rng(1)
    values = rng.uniform(-1, 1, shape).astype(np.float32)
    values[..., 0, :3] = np.nan
    # blocks: 16-row chunks whose last block spans two chunks (as when a short chunk is merged)
    ychunks = (16, 21) if shape[-2] == 37 else (16, 4)
    chunks = shape[:-2] + (ychunks, (16, 16, 16, shape[-1] - 48) if shape[-1] > 48 else (16, shape[-1] - 16))
    template = xr.Dataset({"ncc": (("t", "y", "x")[-len(shape):], da.empty(shape, chunks=chunks, dtype=np.float32))})
    url = str(tmp_path / "out.zarr")
    create_output(url, template, {"status": "running"}, run_id="test", zarr_format=zarr_format,
                  compressor=compressor)
    assert direct_codec(zarr.open_array(store=url + "/ncc")) is not None  # the fast path is taken
    writer = OutputWriter(url, ("ncc",))
    block_chunks = template["ncc"].data.chunks
    for index in np.ndindex(*template["ncc"].data.numblocks):
        starts = [sum(c[:i]) for c, i in zip(block_chunks, index)]
        region = tuple(slice(s, s + c[i]) for s, c, i in zip(starts, block_chunks, index))
        writer.write({"ncc": values[region]}, region, index, np.ones(STATS_LENGTH))
    back = zarr.open_array(store=url + "/ncc", mode="r")[...]
    np.testing.assert_array_equal(back, values)
    assert not np.isnan(read_ledger(url)).any()
    assert not list((tmp_path / "out.zarr").rglob("*.partial"))


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 2**20 - 1, 2**20, 2**20 + 4096 + 7, 3 * 2**20])
@pytest.mark.parametrize("offset", [0, 1])
def test_write_file_writes_exact_bytes(tmp_path, size, offset):
    """Direct (page-cache bypassing) writes keep every byte, for unaligned sizes and unaligned sources."""

    from pipeline import io as lio

    data = np.random.default_rng(size).integers(0, 256, size + offset, dtype=np.uint8)[offset:]
    path = tmp_path / "chunk.bin"
    write_file(path, data)
    assert path.read_bytes() == data.tobytes()
    if getattr(os, "O_DIRECT", 0):
        try:  # the file system here takes O_DIRECT: then lio must not have fallen back to buffered writes
            os.close(os.open(tmp_path / "probe", os.O_WRONLY | os.O_CREAT | os.O_DIRECT))
        except OSError:
            return
        assert os.stat(tmp_path).st_dev not in lio.process_state().no_direct


def test_a_block_of_a_run_whose_output_was_taken_over_is_not_recorded(tmp_path):
    """A writer whose run no longer owns the output (another run replaced it) writes no ledger entry: its
    blocks can never pass for the other run's."""
    import dask.array as da

    from pipeline.io import OutputWriter

    url = str(tmp_path / "out.zarr")
    template = xr.Dataset({"ncc": (("y", "x"), da.empty((64, 64), chunks=32, dtype=np.float32))})
    create_output(url, template, {"status": "running"}, run_id="first")
    first = OutputWriter(url, ("ncc",), owner="first")
    block = np.full((32, 32), 0.25, np.float32)
    first.write({"ncc": block}, (slice(0, 32), slice(0, 32)), (0, 0), np.ones(STATS_LENGTH))
    create_output(url, template, {"status": "running"}, run_id="second")  # the other run starts over
    with pytest.raises(RuntimeError, match="taken over by another run"):
        first.write({"ncc": block}, (slice(0, 32), slice(32, 64)), (0, 1), np.ones(STATS_LENGTH))
    assert not done_blocks(read_ledger(url)).any()


# --- deferred block writes ------------------------------------------------------------------------------------------


def _blocks_output(tmp_path, shape=(64, 96), chunks=((32, 32), (32, 32, 32))):
    import dask.array as da

    from pipeline.io import create_output

    template = xr.Dataset({"ncc": (("y", "x"), da.empty(shape, chunks=chunks, dtype=np.float32))})
    url = str(tmp_path / "out.zarr")
    create_output(url, template, {"status": "running"}, run_id="test", zarr_format=3, compressor="none")
    regions = {}
    for index in np.ndindex(*template["ncc"].data.numblocks):
        starts = [sum(c[:i]) for c, i in zip(chunks, index)]
        regions[index] = tuple(slice(s, s + c[i]) for s, c, i in zip(starts, chunks, index))
    return url, regions


def test_deferred_writes_never_reuse_a_buffer_whose_write_is_in_flight(tmp_path):
    """Each thread alternates two buffers; one comes back only after its last write landed, and every block
    (distinct values, so a reused buffer would show) reads back exactly, ledger entries included."""
    import threading
    import time

    from pipeline.core.stats import STATS_LENGTH
    from pipeline.io import OutputWriter, finish_writes, process_state, read_ledger

    url, regions = _blocks_output(tmp_path)
    values = np.random.default_rng(7).uniform(-1, 1, (64, 96)).astype(np.float32)
    writer = OutputWriter(url, ("ncc",), run="reuse")
    written, addresses = [], []
    third = threading.Event()

    go = threading.Event()

    def blocks():  # one thread: the two buffers are per thread
        for index, region in regions.items():
            if len(written) == 2:
                go.wait(10)
            buffer = writer.buffer((32, 32))
            if len(written) == 2:
                third.set()
            addresses.append(buffer.ctypes.data)
            buffer[...] = values[region]
            written.append(writer.write_later({"ncc": buffer}, region, index, np.full(STATS_LENGTH, len(written))))

    # Every write thread held up: the first two blocks' writes stay queued, so the third block must wait.
    gate = threading.Event()
    stalls = [process_state().writes.pool().submit(gate.wait) for _ in range(WRITER_THREADS)]
    worker = threading.Thread(target=blocks)
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while len(written) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        finish_writes("some other run")  # forgets none of this run's writes
        go.set()
        assert not third.wait(0.5), "a buffer came back while its block's write was still queued"
        assert len(written) == 2 and not written[0].done()
    finally:
        gate.set()
        worker.join(30)
    assert all(s.done() for s in stalls)
    finish_writes("reuse")
    assert all(f.done() for f in written)
    assert addresses[0] != addresses[1] and addresses[0::2] == [addresses[0]] * 3
    np.testing.assert_array_equal(zarr.open_array(store=url + "/ncc", mode="r")[...], values)
    np.testing.assert_array_equal(read_ledger(url)[..., 0].ravel(), np.arange(6))


def test_a_failed_deferred_write_is_raised_once_and_its_block_stays_undone(tmp_path):
    """A write that fails in the background surfaces from finish_writes (once, and only for its own run) and
    records no ledger entry; a closed run writes nothing more."""
    import threading

    from pipeline.core.stats import STATS_LENGTH
    from pipeline.io import OutputWriter, finish_writes, read_ledger

    url, regions = _blocks_output(tmp_path)
    (tmp_path / "out.zarr" / "ncc" / "c").mkdir(parents=True, exist_ok=True)
    (tmp_path / "out.zarr" / "ncc" / "c" / "1").write_bytes(b"in the way of row 1's chunk directory")
    failing = OutputWriter(url, ("ncc",), run="failing")
    other = OutputWriter(url, ("ncc",), run="other")

    errors = []

    def blocks():  # one thread, whose buffers both runs then share
        try:
            fill()
        except Exception as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)

    def fill():
        # (1, 0) fails; written second to last, its buffer is the one this thread's next block gets.
        for index in [(0, 0), (0, 1), (1, 0), (0, 2)]:
            buffer = failing.buffer((32, 32))
            buffer[...] = 0.5
            failing.write_later({"ncc": buffer}, regions[index], index, np.ones(STATS_LENGTH))
        other.buffer((32, 32))  # the other run waits for the failed write's buffer, but is not blamed for it

    thread = threading.Thread(target=blocks)
    thread.start()
    thread.join(30)
    assert not errors
    finish_writes("other")
    with pytest.raises(OSError):
        finish_writes("failing")
    finish_writes("failing")  # reported once
    ledger = read_ledger(url)[..., -1]
    assert not np.isnan(ledger[0]).any() and np.isnan(ledger[1]).all()
    # A task of the closed run that comes late (still running after its run failed) writes nothing.
    with pytest.raises(RuntimeError, match="is over"):
        failing.write_later({"ncc": np.zeros((32, 32), np.float32)}, regions[(1, 1)], (1, 1), np.ones(STATS_LENGTH))
    assert np.isnan(read_ledger(url)[1, 1, -1])
