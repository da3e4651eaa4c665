"""Planning a run: every input's metadata read and every check made before anything is written.

The plan carries the checked values down (the window radius, the processing order and chunks, the
fingerprints): the layers below trust it and check nothing again.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .. import io
from ..config import PairConfig, RunConfig
from ..core.checks import check_pair, processing_order
from ..core.pyramid import block_levels, level_count
from ..core.variables import EXTRA_NAMES
from ..errors import InputError
from .chunking import block_pixels, check_block_count, check_space, fit_budget, processing_chunks
from .cluster import worker_count
from .provenance import config_hash, coords_digest
from .registration import Registration, check_registration, recorded_registration, register_pair

__all__ = ["PairPlan", "plan_run", "reads_pair", "register_run"]


#: What a registered block holds beside its inputs, read by its task (the moving image shifted into int32 or
#: float32; the resampling keeps only a few rows) or through dask (also the moving image as float64, NaN where
#: missing, which the shift reads).
REGISTERED_BUFFERS = {True: [np.dtype(np.float32)], False: [np.dtype(np.float64), np.dtype(np.float32)]}


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
    #: For "resume": the blocks already done and intact (see :func:`pipeline.io.usable_blocks`).
    done: np.ndarray | None = field(default=None, compare=False, repr=False)
    #: Blocks the ledger said were done whose chunks are missing or damaged: recomputed by this run.
    damaged: int = 0
    #: The shift(s) the moving image is read through (``registration.method`` not ``none``; not in a check).
    registration: Registration | None = None
    #: ``output.multiscale``: (levels below level 0, the deepest of them each block makes; see core.pyramid).
    pyramid: tuple[int, int] | None = None


def reads_pair(reference: io.InputInfo, moving: io.InputInfo, masks, order: tuple[int, ...],
               registered: bool = False) -> bool:
    """Whether a run reads this pair itself, each task with its own halo (:func:`io.open_pair`): inputs without
    mask arrays, stored in processing order (each image is read in its own dtype). A registered pair's moving
    image is shifted as it is read, its mask folded in, so only the reference's mask and order count."""
    if registered:
        return masks[0] is None and order == tuple(range(len(order)))
    return masks == (None, None) and order == tuple(range(len(order)))


def reordered_info(info: io.InputInfo, order: tuple[int, ...]) -> io.InputInfo:
    """``info`` with its axes in ``order`` (what planning sees when frames are not the first axis)."""
    if order == tuple(range(len(info.shape))):
        return info

    return replace(info, shape=tuple(info.shape[i] for i in order), dims=tuple(info.dims[i] for i in order),
                   zarr_chunks=tuple(info.zarr_chunks[i] for i in order))


def plan_run(config: RunConfig, *, force: bool = False, threads: int | None = None,
             check_only: bool = False, estimate: bool = True) -> list[PairPlan]:
    """Read every input's metadata and check the whole run before anything is written.

    ``threads`` is the number of threads per worker process, for the memory
    budget; by default what the config implies. ``check_only`` skips reading
    the inputs' content (fingerprints): every check is made, but the plans do
    not say whether an output is up to date. Without ``estimate``, no registration is estimated (the plans'
    ``registration`` is then None unless an output records one).

    Raises
    ------
    InputError, ConfigError
        On the first problem found, naming the input and the fix.
    """
    inputs = io.InputIdentities([path for p in config.all_pairs() for spec in (p.reference, p.moving,
                                                                               p.reference_mask, p.moving_mask)
                                 for path in io.input_files(spec)])
    return [_plan_pair(config, pair, inputs, force=force, threads=threads, check_only=check_only, estimate=estimate)
            for pair in config.all_pairs()]


def _plan_pair(config: RunConfig, pair: PairConfig, inputs: io.InputIdentities, *, force: bool,
               threads: int | None, check_only: bool, estimate: bool = True) -> PairPlan:
    """Check one pair (images, output path, masks, chunks) and decide what its run does."""
    options = config.storage_options
    ref, mov, order, radius = _check_images(config, pair)
    state = io.check_output_path(pair.output.path, inputs, storage_options=options)
    masks = tuple(_mask(config, url, image, role) for url, image, role in (
        (pair.reference_mask, ref, "reference_mask"), (pair.moving_mask, mov, "moving_mask")))
    view = reordered_info(ref, order)  # planned in processing order
    registered = config.registration.enabled
    # A registered run whose tasks read the pair keeps the blocks of an unregistered one (the same chunks decoded
    # once each: smaller blocks decode more of them twice); its extra buffers count against the memory budget.
    reads = reads_pair(ref, mov, masks, order, registered)
    extra = REGISTERED_BUFFERS[reads] if registered else []
    work = [ref.dtype, mov.dtype] + extra
    chunks = processing_chunks(view, config.chunks, radius, block_pixels(*work[:2], *([] if reads else extra)))
    if config.compute.memory is not None:
        chunks = fit_budget(config, view, chunks, radius, work + [m.dtype for m in masks if m],
                            threads or worker_count(config.compute)[1], reads)
    check_block_count(view, chunks, radius)
    check_registration(config, pair, view.shape)
    pyramid = _pyramid(pair, ref, order, chunks)
    if check_only:
        return PairPlan(pair, ref, mov, chunks, radius, {}, "", "fresh", masks, order, pyramid=pyramid)
    fingerprints = _fingerprints(pair, ref, options)
    digest = config_hash(config, pair, chunks)
    action, done, damaged = "fresh", None, 0
    if state == "lncc" and not force:
        action, done, damaged = _previous_run(pair.output.path, digest, fingerprints, options)
    registration = None
    if config.registration.enabled:
        if action != "fresh":  # the shifts the output was made with, not a new estimate
            registration = recorded_registration(io.read_provenance(pair.output.path, storage_options=options), config)
            action, done, damaged = (action, done, damaged) if registration is not None else ("fresh", None, 0)
        if registration is None and estimate:
            registration = register_pair(config, pair, (ref, mov) + masks, view.shape, order)
    names = EXTRA_NAMES if config.extra_outputs else ("ncc",)
    if action != "up to date":
        check_space(pair.output.path, ref.shape, names, config.compressor_of(pair.output), done,
                    encoding=pair.output.encoding, multiscale=pair.output.multiscale)
    return PairPlan(pair, ref, mov, chunks, radius, fingerprints, digest, action, masks, order, done, damaged,
                    registration, pyramid)


def _pyramid(pair: PairConfig, ref: io.InputInfo, order: tuple[int, ...], chunks: tuple[int, ...]
             ) -> tuple[int, int] | None:
    """``output.multiscale``'s pyramid: (levels, block levels); NGFF wants the frames (time, channel) first."""
    if not pair.output.multiscale:
        return None
    if order != tuple(range(len(order))):
        raise InputError(f"output.multiscale: an OME-Zarr image stores its frames on the first axis, but the inputs "
                         f"are stored as {tuple(ref.dims)}; write them frames first (lncc ingest does) or set "
                         "output.multiscale: false")
    shape, block = tuple(ref.shape[-2:]), tuple(chunks[-2:])
    levels = level_count(shape)
    return levels, block_levels(shape, block, levels)


def _check_images(config: RunConfig, pair: PairConfig) -> tuple[io.InputInfo, io.InputInfo, tuple[int, ...], int]:
    """Both images' metadata, checked as a pair: (reference, moving, processing order, window radius)."""
    options = config.storage_options
    ref, mov = (io.inspect_input(url, config.dims, storage_options=options, series=config.series, level=config.level,
                                 channels=config.channels) for url in (pair.reference, pair.moving))
    order = tuple(range(len(ref.shape)))
    try:
        order = (processing_order(ref.dims, f"input {ref.url!r}") if len(ref.shape) in (2, 3)
                 else tuple(range(len(ref.shape))))  # check_pair refuses other ndims
        ref_shape, mov_shape = (tuple(x.shape[i] for i in order) if len(x.shape) == len(order) else x.shape
                                for x in (ref, mov))
        radius = check_pair(ref_shape, mov_shape, ref.dtype, mov.dtype, config.window, config.boundary,
                            ref.dims, mov.dims)
    except InputError as exc:
        hint = ""
        if len(ref.shape) == 3 and ref.shape[-1] <= 4 and order[0] != 2 and "colour" not in str(exc):
            hint = (f"; if its last axis (length {ref.shape[-1]}) holds colour channels: set dims: [y, x, c] for a "
                    "map per channel, or convert it with `lncc ingest SRC DEST.zarr --channels luminance`")
        raise InputError(f"{ref.url} / {mov.url}: {exc}{hint}") from None
    return ref, mov, order, radius


def _fingerprints(pair: PairConfig, ref: io.InputInfo, options) -> dict[str, str]:
    """The content fingerprint of each input of the pair, and of the coordinates the output takes."""
    fingerprints = {role: io.fingerprint(url, storage_options=options) for role, url in (
        ("reference", pair.reference), ("moving", pair.moving),
        ("reference_mask", pair.reference_mask), ("moving_mask", pair.moving_mask)) if url is not None}
    fingerprints["coordinates"] = coords_digest(ref)  # the output's coordinates come from the reference
    return fingerprints


def _previous_run(output: str, digest: str, fingerprints: dict[str, str], options
                  ) -> tuple[str, np.ndarray | None, int]:
    """What an existing lncc output lets this run skip: (action, blocks done and intact, blocks damaged)."""
    previous = io.read_provenance(output, storage_options=options)
    if previous.get("config_hash") != digest or previous.get("fingerprints") != fingerprints:
        return "fresh", None, 0
    # What the output holds is checked, not trusted: blocks whose entry or chunks are damaged or
    # missing are recomputed (a deep check reads local outputs back; URL outputs are listed).
    done, damaged = io.usable_blocks(output, deep=io.is_local(output), storage_options=options)
    complete = previous.get("status") == "complete" and done.size and done.all()
    return ("up to date" if complete else ("resume" if done.any() else "fresh")), done, damaged


def _mask(config: RunConfig, url, image: io.InputInfo, role: str) -> io.InputInfo | None:
    """An image's validity mask: the config's, or its alpha channel's; both at once is an error."""
    alpha = io.alpha_mask(image)
    if url is None:
        return alpha
    if alpha is not None:
        raise InputError(f"{role} {io.input_label(url)!r} is given but {image.url!r} has an alpha channel, which is "
                         f"its validity mask already; remove {role}, or drop the alpha channel from the image")
    return _check_mask(io.inspect_input(url, config.dims, storage_options=config.storage_options), image, role)


def _check_mask(mask: io.InputInfo, image: io.InputInfo, role: str) -> io.InputInfo:
    if mask.dtype != np.bool_:
        raise InputError(f"{role} {mask.url!r} has dtype {mask.dtype}; expected a bool array (true = valid): "
                         "convert it, e.g. mask = values != 0")
    if mask.shape != image.shape:
        raise InputError(f"{role} {mask.url!r} has shape {mask.shape} but the images have {image.shape}; "
                         "give a mask of the images' shape")
    return mask


def register_run(config: RunConfig) -> list[tuple[PairPlan, Registration | None]]:
    """Every pair checked, then registered as a run would (estimated or given); nothing is written.

    Pairs with ``registration.method: none`` get None.
    """
    plans = plan_run(config, check_only=True)
    if not config.registration.enabled:
        return [(plan, None) for plan in plans]
    return [(plan, register_pair(config, plan.pair, (plan.reference, plan.moving) + tuple(plan.masks),
                                 reordered_info(plan.reference, plan.order).shape, plan.order))
            for plan in plans]
