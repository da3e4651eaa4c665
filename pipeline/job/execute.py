"""Running a plan: prepare each output, compute every block where the config says, mark the outputs complete."""

from __future__ import annotations

import contextlib
import gc
import os
import socket
import time
import uuid
from datetime import UTC, datetime

import dask.array as da
import numpy as np
import xarray as xr

from .. import io
from ..chunked.entry import local_ncc_into, local_ncc_pair_into
from ..chunked.graph import halo_chunks
from ..chunked.shift import one_frame, shift_dask
from ..config import RunConfig
from ..core.interpolation import missing_value, shifted_dtype
from ..core.kernel import warm_up
from ..core.stats import block_stats, done_blocks, summarize
from ..core.variables import EXTRA_NAMES, OUTPUT_ATTRS
from . import budget as budget_
from .cluster import Executor, executor
from .plan import PairPlan, plan_run, reads_pair
from .provenance import provenance_of
from .sinks import BlockWriter, Reordered
from .summary import PairResult, PeakRss, RunSummary

__all__ = ["run"]


def run(config: RunConfig, *, force: bool = False, progress: bool = False) -> RunSummary:
    """Run a whole config: every pair's graph is built first, then computed at once.

    Parameters
    ----------
    config : RunConfig
        The validated configuration.
    force : bool
        Recompute outputs that are up to date. Never deletes anything lncc did
        not write (see :func:`pipeline.io.check_output_path`).
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
            locks.enter_context(io.OutputLock(pair.output.path))
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
        masked = (config.nodata is not None or any(m is not None for m in plan.masks) or plan.registration is not None
                  or "f" in (plan.reference.dtype.kind, plan.moving.dtype.kind))  # float inputs may hold NaN
        dtypes = (plan.reference.dtype, plan.moving.dtype)
        if plan.registration is not None:  # the moving image is read shifted; the reference keeps its dtype
            dtypes = (plan.reference.dtype, shifted_dtype(plan.moving.dtype, plan.reference.dtype,
                                                          fixed=not config.extra_outputs))
        kinds.add((*dtypes, plan.radius, masked))
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
            counts[plan.pair.output.path] = (todo, total)
    preload.join()
    warming.join()
    computing = time.perf_counter()
    with PeakRss() as rss:
        in_order = any(info.file_format == "video" for p in plans for info in (p.reference, p.moving))
        synced = _compute(ex, tasks, run_id, progress, [p.pair.output.path for p in plans if p.action != "up to date"],
                          in_order)
    summary = RunSummary(seconds=time.perf_counter() - computing, startup_seconds=computing - started_wall,
                         sync_seconds=synced, peak_rss_mb=rss.mb)
    summary.pairs = [_finish_pair(config, plan, counts) for plan in plans]
    io.sync_outputs([p.pair.output.path for p in plans if p.action != "up to date"])  # the completion markers too
    return summary


def _prepare_pair(config: RunConfig, plan: PairPlan, run_id: str, tasks: list) -> tuple[int, int]:
    """Make (or reopen) one pair's output and add the tasks of its blocks still to do; (to do, total)."""
    url = plan.pair.output.path
    order, inverse = plan.order, tuple(int(i) for i in np.argsort(plan.order))
    stored_chunks = tuple(plan.chunks[i] for i in inverse)  # the processing chunks in the inputs' own axis order
    ref = io.open_input(plan.reference, stored_chunks)  # its dims, coords and chunks shape the output
    names = names_of(config)
    writer = BlockWriter(url, names, config.storage_options, defer=config.compute.scheduler != "processes",
                         run=run_id, flat=config.flat, pyramid=plan.pyramid)
    nodata, reg = config.nodata_pair(), plan.registration
    options = dict(boundary=config.boundary, flat=config.flat, nodata=nodata, min_valid=config.min_valid,
                   extras=config.extra_outputs)
    if reads_pair(plan.reference, plan.moving, plan.masks, order, reg is not None):  # read, halo included, per task
        cache = budget_.chunk_cache_bytes(plan.chunks[-2:], budget_.bytes_per_pixel(
            [plan.reference.dtype, plan.moving.dtype]), plan.chunks[0] if len(plan.chunks) == 3 else 1)
        if reg is None:
            pair = io.open_pair(plan.reference, plan.moving, halo=plan.radius, cache_bytes=cache)
        else:  # the moving image read through its shift(s), its nodata and mask folded into NaN
            pair = io.open_shifted_pair(plan.reference, plan.moving, reg.shifts, reg.interpolation, nodata=nodata[1],
                                        mask=plan.masks[1], halo=plan.radius, cache_bytes=cache,
                                        fixed=not config.extra_outputs, reference_frame=reg.reference_frame)
            options["nodata"] = (nodata[0], missing_value(pair.dtypes[1]))
        marks = local_ncc_pair_into(writer, pair, config.window, chunks=plan.chunks, radius=plan.radius, **options)
    else:  # map_overlap over dask arrays in processing order; blocks go back to the inputs' order to be written
        proc = [ref.dims[i] for i in order]
        mov = io.open_input(plan.moving, stored_chunks).transpose(*proc).data
        masks = [None if m is None else io.open_input(m, stored_chunks).transpose(*proc).data for m in plan.masks]
        if reg is not None:
            mov, masks[1] = shift_dask(mov, reg.shifts, reg.interpolation, nodata=nodata[1], valid=masks[1],
                                       dtype=shifted_dtype(plan.moving.dtype, plan.reference.dtype,
                                                           fixed=not config.extra_outputs)), None
            options["nodata"] = (nodata[0], missing_value(mov.dtype))
        reference = ref.transpose(*proc).data
        if reg is not None and reg.reference_frame is not None:  # every moving frame against one reference frame
            reference, masks[0] = (None if x is None else one_frame(x, reg.reference_frame) for x in (reference,
                                                                                                       masks[0]))
        sink = writer if order == tuple(range(len(order))) else Reordered(writer, inverse)
        marks = local_ncc_into(sink, reference, mov, config.window, reference_mask=masks[0],
                               moving_mask=masks[1], radius=plan.radius, **options)
    started = datetime.now(UTC).isoformat()
    proc_done = None if plan.done is None else plan.done.transpose(order)  # the block grid in processing order
    if plan.action == "resume" and proc_done is not None and proc_done.shape == marks.numblocks:
        done = proc_done
        io.clean_partials(url)
        io.update_provenance(url, {"status": "running", "resumed": started, "run_id": run_id, "pid": os.getpid(),
                                   "host": socket.gethostname(), "damaged_blocks": plan.damaged},
                             storage_options=config.storage_options)
    else:
        blocks = halo_chunks(tuple(ref.data.chunks[i] for i in order), plan.radius)
        io.create_output(url, _template(ref, names, tuple(blocks[i] for i in inverse)),
                         provenance_of(config, plan, started), run_id=run_id, zarr_format=config.zarr_format,
                         compressor=config.compressor_of(plan.pair.output), level=plan.pair.output.level,
                         encoding=plan.pair.output.encoding, storage_options=config.storage_options,
                         layers=_registration_layers(ref, plan), pyramid=plan.pyramid)
        done = np.zeros(marks.numblocks, dtype=bool)
    todo = [index for index in np.ndindex(done.shape) if not done[index]]
    delayed = marks.to_delayed()
    tasks.extend(delayed[index] for index in todo)
    return len(todo), done.size


def _compute(ex: Executor, tasks: list, run_id: str, progress: bool, urls: list[str], in_order: bool = False
             ) -> float:
    """Compute the blocks (``in_order``: in waves, for inputs read in order), wait for their writes in every
    process, and make the outputs durable; return the seconds the last step took."""
    # The cyclic GC's full passes walk every object of numba, dask, xarray and the graph, again and again while
    # tasks allocate: ~5% of a gigapixel run (perf). Objects alive now are long-lived; exempt them.
    gc.freeze()
    # Blocks' writes may still be landing, in this process or in the workers: the ledger is read, and the
    # output's lock released, only after they are all done (their first error raised here) and the run is
    # closed to writes from tasks still running after a failure.
    try:
        ex.run(tasks, progress=progress, in_order=in_order)
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
    url = plan.pair.output.path
    ledger = io.read_ledger(url, storage_options=config.storage_options)
    if not done_blocks(ledger).all():
        raise RuntimeError(f"output {url!r} is missing blocks after the run; rerun to finish it")
    stats = summarize(ledger)
    if plan.action != "up to date":
        # A worker killed mid-write (its blocks redone elsewhere) leaves its temporary file: every write of this
        # run has landed and the run holds the lock, so any left now is garbage, and a complete output has none.
        io.clean_partials(url)
        if plan.pyramid is not None:  # the levels the blocks could not make, from the deepest they made
            io.finish_pyramid(url, names_of(config), *plan.pyramid, storage_options=config.storage_options)
            io.sync_outputs([url])
        # The completion marker: written last, after every block and its ledger entry are durable.
        io.update_provenance(url, {"status": "complete", "finished": datetime.now(UTC).isoformat(),
                                   "summary": stats}, storage_options=config.storage_options)
    quantiles = {k: v for k, v in stats.items() if k.startswith("q")}
    computed, total = counts.get(url, (0, int(done_blocks(ledger).size)))
    return PairResult(url, plan.reference.shape, int(np.prod(plan.reference.shape)), stats["mean"], quantiles,
                      stats["nan_fraction"], plan.action, computed, total, stats.get("flat_fraction", 0.0),
                      plan.damaged, None if plan.registration is None else plan.registration.describe(),
                      _channels_line(plan))


def names_of(config: RunConfig) -> tuple[str, ...]:
    """The variables a run writes."""
    return EXTRA_NAMES if config.extra_outputs else ("ncc",)


def _channels_line(plan: PairPlan) -> str | None:
    """How the pair's colour was read, for the summary: each image's policy, and alpha masks."""
    how = {"luminance": "luminance (Rec. 709 weights)", "mean": "the mean of its channels",
           "separate": "one map per channel (c)"}
    parts = []
    for role, info in (("reference", plan.reference), ("moving", plan.moving)):
        if info.channels is None:
            continue
        text = ("luminance (its luma plane)" if info.file_format == "video" and info.channels == "luminance"
                else how.get(info.channels, f"channel {info.channels}"))
        parts.append(f"{role} read as {text}" + (", its alpha channel as the validity mask" if info.alpha else ""))
    return "; ".join(parts) or None


def _registration_layers(reference: xr.DataArray, plan: PairPlan) -> xr.Dataset | None:
    """The registration's variables (``shift``, the local method's field), with the frames' coordinate."""
    if plan.registration is None:
        return None
    frame = reference.dims[plan.order[0]] if reference.ndim == 3 else None
    return plan.registration.layers(frame, reference.coords[frame].variable if frame in reference.coords else None)


def _template(reference: xr.DataArray, names: tuple[str, ...], chunks) -> xr.Dataset:
    """The output's layout (dims, coords, chunks, float32, each variable's own attrs) with no values."""
    data = da.empty(reference.shape, chunks=chunks, dtype=np.float32)
    return xr.Dataset({name: (reference.dims, data, dict(OUTPUT_ATTRS[name])) for name in names},
                      coords=reference.coords)
