"""One configured run: validate everything, build the whole graph, compute it, record provenance."""

from __future__ import annotations

import contextlib
import gc
import math
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from . import io, outputs
from .api import local_ncc_into, local_ncc_pair_into
from . import budget as budget_
from .cluster import Executor, executor, worker_count
from .graph import EXTRA_NAMES, OUTPUT_ATTRS, halo_chunks
from .config import PairConfig, RunConfig
from .errors import ConfigError, InputError
from .kernel import warm_up
from .stats import block_stats, done_blocks, summarize
from .validate import check_pair, processing_order

__all__ = ["PairPlan", "PairResult", "RunSummary", "plan_run", "run", "processing_chunks"]

#: Default processing block: the two input blocks plus the float32 output block
#: take about this many bytes (4096 x 4096 for a uint8 pair, ~2800^2 for float32).
#: Larger blocks amortise zarr's per-call overhead; this size keeps a task near
#: 200 MB with halos and copies, so two threads stay well under 1.5 GB.
BLOCK_BYTES = 96 * 2**20
#: No block is larger than this many pixels, whatever the dtypes.
MAX_BLOCK_PIXELS = 4096 * 4096



@dataclass(frozen=True)
class PairPlan:
    """A validated pair, ready to be wired into the graph."""

    pair: PairConfig
    reference: io.InputInfo
    moving: io.InputInfo
    chunks: tuple[int, ...]
    radius: int
    fingerprints: dict[str, str]
    config_hash: str
    action: str  # "fresh", "resume" or "up to date"
    masks: tuple[io.InputInfo | None, io.InputInfo | None] = (None, None)
    #: The inputs' axes in processing order (frames first, then the image axes); ``chunks`` are in this order.
    order: tuple[int, ...] = (0, 1)
    #: For "resume": the blocks already done and intact (see :func:`pipeline.outputs.usable_blocks`).
    done: np.ndarray | None = field(default=None, compare=False, repr=False)
    #: Blocks the ledger said were done whose chunks are missing or damaged: recomputed by this run.
    damaged: int = 0


@dataclass
class PairResult:
    """What one pair's run produced."""

    output: str
    shape: tuple[int, ...]
    pixels: int
    mean: float
    quantiles: dict[str, float]
    nan_fraction: float
    action: str = "fresh"
    blocks_computed: int = 0
    blocks_total: int = 0
    flat_fraction: float = 0.0
    damaged: int = 0


@dataclass
class RunSummary:
    """What a whole run produced, for the CLI's summary screen."""

    pairs: list[PairResult] = field(default_factory=list)
    #: Wall time of the computation itself (the blocks, their writes and the durability sync).
    seconds: float = 0.0
    #: Wall time before it: checks, fingerprints, preparing outputs, and loading (or compiling) the kernels.
    startup_seconds: float = 0.0
    #: Of ``seconds``: making the outputs durable before they are marked complete (syncfs).
    sync_seconds: float = 0.0
    peak_rss_mb: float = 0.0

    @property
    def pixels(self) -> int:
        """Pixels computed by this run (blocks already done or up to date are not counted)."""
        return sum(p.pixels * p.blocks_computed // max(p.blocks_total, 1) for p in self.pairs)


def _spatial_chunk(size: int, zarr_chunk: int, target: int, radius: int) -> int:
    """A multiple of the zarr chunk near ``target``, at least the radius, at most ``size``."""
    multiple = max(1, round(target / zarr_chunk))
    chunk = min(size, multiple * zarr_chunk)
    while chunk < radius and chunk < size:
        chunk += zarr_chunk
    return min(chunk, size)


def block_pixels(*dtypes: np.dtype) -> int:
    """Pixels per processing block for inputs of these dtypes (see :data:`BLOCK_BYTES`)."""
    per_pixel = sum(np.dtype(d).itemsize for d in dtypes) + 4  # + the float32 output
    return min(MAX_BLOCK_PIXELS, BLOCK_BYTES // per_pixel)


def processing_chunks(info: io.InputInfo, config_chunks: dict[str, int] | None, radius: int,
                      target_pixels: int = MAX_BLOCK_PIXELS) -> tuple[int, ...]:
    """Processing chunk sizes for one input: the config's, else aligned with its zarr chunks.

    Raises
    ------
    ConfigError
        If the config names a dim the input does not have, or a y/x chunk
        shorter than the window radius.
    """
    config_chunks = dict(config_chunks or {})
    unknown = sorted(set(config_chunks) - set(info.dims))
    if unknown:
        raise ConfigError(f"config error: chunks.{unknown[0]}: no such dim; the input's dims are {list(info.dims)}")
    side = int(math.isqrt(target_pixels))
    chunks = []
    for axis, (dim, size, zc) in enumerate(zip(info.dims, info.shape, info.zarr_chunks)):
        spatial = axis >= len(info.shape) - 2
        if dim in config_chunks:
            chunk = min(config_chunks[dim], size)
            if spatial and chunk < radius and chunk < size:
                raise ConfigError(f"config error: chunks.{dim}: {config_chunks[dim]} is shorter than the window "
                                  f"radius {radius}; use at least {radius}")
        elif spatial:
            chunk = _spatial_chunk(size, zc, side, radius)
        else:
            chunk = None  # frames: decided once y and x are known
        chunks.append(chunk)
    if chunks[0] is None:
        frame = chunks[-1] * chunks[-2]
        chunks[0] = max(1, min(info.shape[0], target_pixels // frame))
    return tuple(chunks)


def _fit_budget(config: RunConfig, info: io.InputInfo, chunks: tuple[int, ...], radius: int, dtypes, threads: int,
                reads_pair: bool) -> tuple[int, ...]:
    """Processing chunks within ``compute.memory`` per worker process: the default shrunk to fit, or the
    config's own checked. ``reads_pair``: each task reads its own halo (no ``map_overlap`` exchange)."""
    budget = config.compute.memory
    image = info.shape[-2:]
    in_bytes = budget_.bytes_per_pixel(dtypes) + (1 if config.nodata is not None or "f" in {np.dtype(d).kind
                                                                                               for d in dtypes} else 0)
    out_bytes = 4 * (len(EXTRA_NAMES) if config.extra_outputs else 1)
    frames = chunks[0] if len(chunks) == 3 else 1
    exchange = not reads_pair
    need = budget_.estimate_peak(chunks[-2:], image, in_bytes, out_bytes, threads, frames, exchange)
    if need <= budget:
        return chunks
    where = f"compute.memory {budget_.format_bytes(budget)}"
    if config.chunks and set(config.chunks) & set(info.dims[-2:]):
        raise ConfigError(f"config error: chunks {dict(config.chunks)} need about {budget_.format_bytes(need)} per "
                          f"worker with {threads} thread(s), over {where}; use smaller chunks or raise "
                          "compute.memory")
    step = min(info.zarr_chunks[-1], info.zarr_chunks[-2])
    step = step if step <= 1024 else 256  # huge zarr chunks: give up alignment rather than the budget
    side = budget_.largest_block_side(budget, image, in_bytes, out_bytes, threads, step, max(chunks[-2:]),
                                      halo_exchange=exchange)
    if side is None or side < radius:
        smallest = budget_.estimate_peak((min(step, image[0]), min(step, image[1])), image, in_bytes, out_bytes,
                                         threads, halo_exchange=exchange)
        raise ConfigError(f"config error: {where} is too small: one worker with {threads} thread(s) needs about "
                          f"{budget_.format_bytes(smallest)} even with {step} x {step} blocks; raise compute.memory "
                          "or use fewer threads per worker")
    spatial = (min(side, image[0]), min(side, image[1]))
    if len(chunks) == 3:
        frames = max(1, min(frames, MAX_BLOCK_PIXELS // (spatial[0] * spatial[1])))
        while frames > 1 and budget_.estimate_peak(spatial, image, in_bytes, out_bytes, threads, frames,
                                                   exchange) > budget:
            frames -= 1
        return (frames,) + spatial
    return spatial


def _reads_pair(reference: io.InputInfo, moving: io.InputInfo, masks, order: tuple[int, ...]) -> bool:
    """Whether a run reads this pair as one array, each task with its own halo (:func:`io.open_pair`): inputs of
    one dtype without mask arrays, stored in processing order."""
    return (masks == (None, None) and np.dtype(reference.dtype) == np.dtype(moving.dtype)
            and order == tuple(range(len(order))))


def _reordered(info: io.InputInfo, order: tuple[int, ...]) -> io.InputInfo:
    """``info`` with its axes in ``order`` (what planning sees when frames are not the first axis)."""
    if order == tuple(range(len(info.shape))):
        return info
    from dataclasses import replace

    return replace(info, shape=tuple(info.shape[i] for i in order), dims=tuple(info.dims[i] for i in order),
                   zarr_chunks=tuple(info.zarr_chunks[i] for i in order))


#: Blocks per pair at most: each is a task, a ledger entry (16 KB) and its own chunk files, so a run of tiny
#: blocks crawls (``chunks: 1`` on a 2 Mpx pair planned for minutes and took 1.7 GB before it computed).
MAX_BLOCKS = 50_000


def _check_block_count(info: io.InputInfo, chunks: tuple[int, ...], radius: int) -> None:
    blocks = math.prod(-(-n // min(c, n)) for n, c in zip(info.shape, chunks))
    if blocks <= MAX_BLOCKS:
        return
    frames = info.shape[0] // min(chunks[0], info.shape[0]) if len(chunks) == 3 else 1
    side = math.isqrt(info.shape[-2] * info.shape[-1] * max(frames, 1) // MAX_BLOCKS) + 1
    raise ConfigError(f"config error: chunks {dict(zip(info.dims, chunks))} cut {info.url!r} into {blocks:,} blocks, "
                      f"over the {MAX_BLOCKS:,} a pair may have (each block is a task, a ledger entry and its own files, "
                      f"so tiny blocks make a run crawl); use chunks of at least {max(side, radius)} pixels along "
                      "y and x, or leave chunks out to let lncc choose")


def plan_run(config: RunConfig, *, force: bool = False, threads: int | None = None,
             check_only: bool = False) -> list[PairPlan]:
    """Read every input's metadata and check the whole run before anything is written.

    ``threads`` is the number of threads per worker process, for the memory
    budget; by default what the config implies. ``check_only`` skips reading
    the inputs' content (fingerprints): every check is made, but the plans do
    not say whether an output is up to date.

    Raises
    ------
    InputError, ConfigError
        On the first problem found, naming the input and the fix.
    """
    plans = []
    options = config.storage_options
    inputs = outputs.InputIdentities([url for p in config.all_pairs() for url in (p.reference, p.moving,
                                                                                  p.reference_mask, p.moving_mask)
                                      if url is not None])
    for pair in config.all_pairs():
        ref = io.inspect_input(pair.reference, config.dims, storage_options=options)
        mov = io.inspect_input(pair.moving, config.dims, storage_options=options)
        order = tuple(range(len(ref.shape)))
        try:
            order = (processing_order(ref.dims, f"input {pair.reference!r}") if len(ref.shape) in (2, 3)
                     else tuple(range(len(ref.shape))))  # check_pair refuses other ndims
            ref_shape, mov_shape = (tuple(x.shape[i] for i in order) if len(x.shape) == len(order) else x.shape
                                    for x in (ref, mov))
            radius = check_pair(ref_shape, mov_shape, ref.dtype, mov.dtype, config.window, config.boundary,
                                ref.dims, mov.dims)
        except InputError as exc:
            hint = ""
            if len(ref.shape) == 3 and ref.shape[-1] <= 4 and order[0] != 2 and "colour" not in str(exc):
                hint = (f"; if its last axis (length {ref.shape[-1]}) holds colour channels: colour is not "
                        "supported yet, convert to one grey image (e.g. Rec. 709 luminance) or select one channel")
            raise InputError(f"{pair.reference} / {pair.moving}: {exc}{hint}") from None
        state = outputs.check_output_path(pair.output, inputs, storage_options=options)
        masks = tuple(None if url is None else _check_mask(io.inspect_input(url, config.dims,
                                                                            storage_options=options), ref, role)
                      for url, role in ((pair.reference_mask, "reference_mask"), (pair.moving_mask, "moving_mask")))
        view = _reordered(ref, order)  # planned in processing order
        chunks = processing_chunks(view, config.chunks, radius, block_pixels(ref.dtype, mov.dtype))
        if config.compute.memory is not None:
            chunks = _fit_budget(config, view, chunks, radius, [ref.dtype, mov.dtype] + [m.dtype for m in masks if m],
                                 threads or worker_count(config.compute)[1], _reads_pair(ref, mov, masks, order))
        _check_block_count(view, chunks, radius)
        if check_only:
            plans.append(PairPlan(pair, ref, mov, chunks, radius, {}, "", "fresh", masks, order))
            continue
        fingerprints = {role: io.fingerprint(url, storage_options=options) for role, url in (
            ("reference", pair.reference), ("moving", pair.moving),
            ("reference_mask", pair.reference_mask), ("moving_mask", pair.moving_mask)) if url is not None}
        fingerprints["coordinates"] = _coords_digest(ref)  # the output's coordinates come from the reference
        digest = config_hash(config, pair, chunks)
        action, done, damaged = "fresh", None, 0
        if state == "lncc" and not force:
            previous = io.read_provenance(pair.output, storage_options=options)
            if previous.get("config_hash") == digest and previous.get("fingerprints") == fingerprints:
                # What the output holds is checked, not trusted: blocks whose entry or chunks are damaged or
                # missing are recomputed (a deep check reads local outputs back; URL outputs are listed).
                done, damaged = outputs.usable_blocks(pair.output, deep=io._is_local(pair.output),
                                                      storage_options=options)
                complete = previous.get("status") == "complete" and done.size and done.all()
                action = "up to date" if complete else ("resume" if done.any() else "fresh")
        names = EXTRA_NAMES if config.extra_outputs else ("ncc",)
        if action != "up to date":
            _check_space(pair.output, ref.shape, len(names), config.compressor, done)
        plans.append(PairPlan(pair, ref, mov, chunks, radius, fingerprints, digest, action, masks, order, done,
                              damaged))
    return plans


def _check_space(url: str, shape: tuple[int, ...], variables: int, compressor: str, done) -> None:
    """Refuse, before anything is deleted, a local uncompressed output that cannot fit on its disk."""
    import shutil

    if compressor != "none" or not io._is_local(url):
        return  # compressed sizes are unknown in advance; object stores do not fill up
    need = int(np.prod(shape)) * 4 * variables
    if done is not None and done.size:
        need = int(need * (1 - done.mean()))
    path = io._local_path(url)
    existing = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() and done is None else 0
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free + existing  # a replaced output's space is freed first
    if need > free:
        raise InputError(f"output {url!r} needs about {budget_.format_bytes(need)} but its disk has "
                         f"{budget_.format_bytes(free)} free; free space, choose another output path, or set "
                         "compressor: zstd")


def _coords_digest(info: io.InputInfo) -> str:
    import hashlib

    h = hashlib.sha256()
    for dim in sorted(info.coords):
        values = np.asarray(info.coords[dim].values)
        h.update(f"{dim}:{values.dtype}:{values.shape};".encode())
        h.update(values.tobytes())
    return h.hexdigest()


def _check_mask(mask: io.InputInfo, image: io.InputInfo, role: str) -> io.InputInfo:
    if mask.dtype != np.bool_:
        raise InputError(f"{role} {mask.url!r} has dtype {mask.dtype}; expected a bool array (true = valid): "
                         "convert it, e.g. mask = values != 0")
    if mask.shape != image.shape:
        raise InputError(f"{role} {mask.url!r} has shape {mask.shape} but the images have {image.shape}; "
                         "give a mask of the images' shape")
    return mask


def config_hash(config: RunConfig, pair: PairConfig, chunks: tuple[int, ...]) -> str:
    """SHA-256 of everything that determines an output's bytes: settings, inputs, chunks, lncc version."""
    import hashlib
    import json

    settings = config.model_dump(mode="json", exclude={"pairs", "reference", "moving", "output", "compute",
                                                       "reference_mask", "moving_mask", "storage_options"})
    settings.update(pair.model_dump(exclude={"output"}), chunks=list(chunks),
                    lncc=_versions().get("lncc", "unknown"))
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def _versions() -> dict[str, str]:
    out = {}
    for name in ("lncc", "numpy", "numba", "dask", "distributed", "xarray", "zarr", "numcodecs"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def _provenance(config: RunConfig, plan: PairPlan, started: str) -> dict[str, Any]:
    def describe(info: io.InputInfo) -> dict[str, Any]:
        return {"url": info.url, "shape": list(info.shape), "dtype": str(info.dtype), "dims": list(info.dims),
                "zarr_format": info.zarr_format}

    return {
        "status": "running",
        "software": "lncc",
        "version": _versions().get("lncc", "unknown"),
        "dependencies": _versions(),
        # storage_options may hold credentials: never stored
        "config": config.model_dump(mode="python", exclude={"storage_options"}),
        "config_hash": plan.config_hash,
        "fingerprints": plan.fingerprints,
        "pair": plan.pair.model_dump(),
        "inputs": {"reference": describe(plan.reference), "moving": describe(plan.moving)},
        "processing_chunks": list(plan.chunks),
        "started": started,
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }


def _template(reference: xr.DataArray, names: tuple[str, ...], chunks) -> xr.Dataset:
    """The output's layout (dims, coords, chunks, float32, each variable's own attrs) with no values."""
    data = da.empty(reference.shape, chunks=chunks, dtype=np.float32)
    return xr.Dataset({name: (reference.dims, data, dict(OUTPUT_ATTRS[name])) for name in names},
                      coords=reference.coords)


class _BlockWriter:
    """The sink of a run: writes one block's values and stats where the block was computed.

    With ``defer``, a block's write finishes in the background while its
    thread computes the next block (into the other of its two buffers); the run
    then waits for the writes of its ``run`` id with
    :func:`pipeline.io.finish_writes` in every process that computed. Without
    it, each task waits for its own write: for dask's process pool, whose
    processes cannot be reached after the run. A block is written only while
    the output's provenance names this run (see :class:`pipeline.io.OutputWriter`).
    """

    def __init__(self, url: str, names: tuple[str, ...], storage_options: dict[str, Any] | None = None,
                 defer: bool = True, run: str | None = None, flat: float = 0.0):
        self.names = names
        self.defer = defer
        self.flat = flat
        self.output = io.OutputWriter(url, names, storage_options, run=run, owner=run)

    def buffer(self, shape: tuple[int, ...]) -> np.ndarray:
        return self.output.buffer(shape)

    def __call__(self, values: np.ndarray, region: tuple[slice, ...], index: tuple[int, ...]) -> None:
        blocks = dict(zip(self.names, values)) if len(self.names) > 1 else {self.names[0]: values}
        stats = block_stats(blocks["ncc"], self.flat)
        written = self.output.write_later(blocks, region, index, stats)
        if not self.defer:
            written.result()


class _Reordered:
    """A sink that takes blocks in processing order and hands them to ``sink`` in the inputs' axis order."""

    def __init__(self, sink: _BlockWriter, inverse: tuple[int, ...]):
        self.sink = sink
        self.inverse = inverse

    def __call__(self, values: np.ndarray, region: tuple[slice, ...], index: tuple[int, ...]) -> None:
        lead = values.ndim - len(self.inverse)  # the stacked extra outputs' axis comes first
        axes = tuple(range(lead)) + tuple(lead + i for i in self.inverse)
        block = values.transpose(axes)
        buffer = self.sink.buffer(block.shape)
        buffer[...] = block
        self.sink(buffer, tuple(region[i] for i in self.inverse), tuple(index[i] for i in self.inverse))


class _PeakRss:
    """Samples the resident memory of this process and all its children (e.g. process-pool workers).

    ``ru_maxrss`` would be simpler but on Linux it survives ``exec``, so a
    process started by a large parent reports the parent's peak.
    """

    def __init__(self, interval: float = 0.1):

        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        import psutil

        me = psutil.Process()
        while True:
            total = 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:  # a child that just exited
                    pass
            self.peak = max(self.peak, total)
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> _PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mb(self) -> float:
        return self.peak / 1e6


def run(config: RunConfig, *, force: bool = False, progress: bool = False) -> RunSummary:
    """Run a whole config: every pair's graph is built first, then computed at once.

    Parameters
    ----------
    config : RunConfig
        The validated configuration.
    force : bool
        Recompute outputs that are up to date. Never deletes anything lncc did
        not write (see :func:`pipeline.outputs.check_output_path`).
    progress : bool
        Show dask's progress bar on stderr.

    Returns
    -------
    RunSummary
        Per-pair pixel counts and NCC statistics, and the wall times.
    """
    started = time.perf_counter()
    # Bad configs, inputs and output paths fail before any cluster starts or any lock is taken.
    plan_run(config, force=force, check_only=True)
    with executor(config.compute) as ex, contextlib.ExitStack() as locks:
        # Every process that computes (this one, or each worker) imports lncc and starts numba (~0.2 s, and
        # seconds for a fresh worker) while this process plans the run.
        preload = ex.start(_load_lncc)
        for pair in config.all_pairs():  # planned under the locks: no other run changes an output meanwhile
            locks.enter_context(outputs.OutputLock(pair.output))
        plans = plan_run(config, force=force, threads=ex.threads_per_worker())
        return _execute(config, plans, progress, ex, preload, started)


def _load_lncc() -> None:
    """Load lncc's first compiled function: numba's own start-up, whatever the inputs' dtypes.

    A worker imports lncc (this module and all it imports) to unpickle this function.
    """
    block_stats(np.zeros(4, dtype=np.float32))


def _kernel_kinds(config: RunConfig, plans: list[PairPlan]) -> list[tuple]:
    """The compiled kernel specialisations the plans will call: (dtypes, radius, masked)."""
    kinds = set()
    for plan in plans:
        masked = (config.nodata is not None or any(m is not None for m in plan.masks)
                  or "f" in (plan.reference.dtype.kind, plan.moving.dtype.kind))  # float inputs may hold NaN
        kinds.add((plan.reference.dtype, plan.moving.dtype, plan.radius, masked))
    return sorted(kinds, key=str)


def _warm_kernels(kinds, extras: bool) -> None:
    for reference, moving, radius, masked in kinds:
        warm_up(reference, moving, radius, masked=masked, extras=extras)


def _execute(config: RunConfig, plans: list[PairPlan], progress: bool, ex: Executor, preload,
             started_wall: float) -> RunSummary:
    # Load the compiled kernels (in this process, or in every worker) while the outputs are prepared,
    # instead of in the first block of every thread.
    warming = ex.start(_warm_kernels, _kernel_kinds(config, [p for p in plans if p.action != "up to date"]),
                       config.extra_outputs)
    run_id = uuid.uuid4().hex  # names this run in the outputs' provenance and its background block writes
    tasks, counts = [], {}
    for plan in plans:
        if plan.action != "up to date":
            todo, total = _prepare_pair(config, plan, run_id, tasks)
            counts[plan.pair.output] = (todo, total)
    preload.join()
    warming.join()
    computing = time.perf_counter()
    with _PeakRss() as rss:
        synced = _compute(ex, tasks, run_id, progress, [p.pair.output for p in plans if p.action != "up to date"])
    summary = RunSummary(seconds=time.perf_counter() - computing, startup_seconds=computing - started_wall,
                         sync_seconds=synced, peak_rss_mb=rss.mb)
    summary.pairs = [_finish_pair(config, plan, counts) for plan in plans]
    io.sync_outputs([p.pair.output for p in plans if p.action != "up to date"])  # the completion markers too
    return summary


def _prepare_pair(config: RunConfig, plan: PairPlan, run_id: str, tasks: list) -> tuple[int, int]:
    """Make (or reopen) one pair's output and add the tasks of its blocks still to do; (to do, total)."""
    url = plan.pair.output
    order, inverse = plan.order, tuple(int(i) for i in np.argsort(plan.order))
    stored_chunks = tuple(plan.chunks[i] for i in inverse)  # the processing chunks in the inputs' own axis order
    ref = io.open_input(plan.reference, stored_chunks)  # its dims, coords and chunks shape the output
    names = EXTRA_NAMES if config.extra_outputs else ("ncc",)
    writer = _BlockWriter(url, names, config.storage_options, defer=config.compute.scheduler != "processes",
                          run=run_id, flat=config.flat)
    options = dict(boundary=config.boundary, flat=config.flat, nodata=config.nodata_pair(),
                   min_valid=config.min_valid, extras=config.extra_outputs)
    if _reads_pair(plan.reference, plan.moving, plan.masks, order):  # both images read, halo included, per task
        cache = budget_.chunk_cache_bytes(plan.chunks[-2:], budget_.bytes_per_pixel(
            [plan.reference.dtype, plan.moving.dtype]), plan.chunks[0] if len(plan.chunks) == 3 else 1)
        pair = io.open_pair(plan.reference, plan.moving, halo=plan.radius, cache_bytes=cache)
        marks = local_ncc_pair_into(writer, pair, config.window, chunks=plan.chunks, **options)
    else:  # map_overlap over dask arrays in processing order; blocks go back to the inputs' order to be written
        proc = [ref.dims[i] for i in order]
        mov = io.open_input(plan.moving, stored_chunks).transpose(*proc)
        masks = [None if m is None else io.open_input(m, stored_chunks).transpose(*proc).data for m in plan.masks]
        sink = writer if order == tuple(range(len(order))) else _Reordered(writer, inverse)
        marks = local_ncc_into(sink, ref.transpose(*proc).data, mov.data, config.window, reference_mask=masks[0],
                               moving_mask=masks[1], **options)
    started = datetime.now(timezone.utc).isoformat()
    proc_done = None if plan.done is None else plan.done.transpose(order)  # the block grid in processing order
    if plan.action == "resume" and proc_done is not None and proc_done.shape == marks.numblocks:
        done = proc_done
        outputs.clean_partials(url)
        io.update_provenance(url, {"status": "running", "resumed": started, "run_id": run_id, "pid": os.getpid(),
                                   "host": socket.gethostname(), "damaged_blocks": plan.damaged},
                             storage_options=config.storage_options)
    else:
        blocks = halo_chunks(tuple(ref.data.chunks[i] for i in order), plan.radius)
        outputs.create_output(url, _template(ref, names, tuple(blocks[i] for i in inverse)),
                              _provenance(config, plan, started), run_id=run_id, zarr_format=config.zarr_format,
                              compressor=config.compressor, storage_options=config.storage_options)
        done = np.zeros(marks.numblocks, dtype=bool)
    todo = [index for index in np.ndindex(done.shape) if not done[index]]
    delayed = marks.to_delayed()
    tasks.extend(delayed[index] for index in todo)
    return len(todo), done.size


def _compute(ex: Executor, tasks: list, run_id: str, progress: bool, urls: list[str]) -> float:
    """Compute the blocks, wait for their writes in every process, and make the outputs durable; return the
    seconds the last step took."""
    # The cyclic GC's full passes walk every object of numba, dask, xarray and the graph, again and again while
    # tasks allocate: ~5% of a gigapixel run (perf). Objects alive now are long-lived; exempt them.
    gc.freeze()
    # Blocks' writes may still be landing, in this process or in the workers: the ledger is read, and the
    # output's lock released, only after they are all done (their first error raised here) and the run is
    # closed to writes from tasks still running after a failure.
    try:
        ex.run(tasks, progress=progress)
    except BaseException:
        with contextlib.suppress(Exception):
            ex.start(io.finish_writes, run_id).join()
        raise
    ex.start(io.finish_writes, run_id).join()
    # Durable before any output says complete: the chunk files, the ledger and their renames, flushed by each
    # process that wrote them (syncfs of the output's file system).
    synced = time.perf_counter()
    ex.start(io.sync_outputs, urls).join()
    return time.perf_counter() - synced


def _finish_pair(config: RunConfig, plan: PairPlan, counts: dict) -> PairResult:
    """Check that every block of a pair's output is done, mark it complete, and summarise it."""
    url = plan.pair.output
    ledger = io.read_ledger(url, storage_options=config.storage_options)
    if not done_blocks(ledger).all():
        raise RuntimeError(f"output {url!r} is missing blocks after the run; rerun to finish it")
    stats = summarize(ledger)
    if plan.action != "up to date":
        # The completion marker: written last, after every block and its ledger entry are durable.
        io.update_provenance(url, {"status": "complete", "finished": datetime.now(timezone.utc).isoformat(),
                                   "summary": stats}, storage_options=config.storage_options)
    quantiles = {k: v for k, v in stats.items() if k.startswith("q")}
    computed, total = counts.get(url, (0, int(done_blocks(ledger).size)))
    return PairResult(url, plan.reference.shape, int(np.prod(plan.reference.shape)), stats["mean"], quantiles,
                      stats["nan_fraction"], plan.action, computed, total, stats.get("flat_fraction", 0.0),
                      plan.damaged)
