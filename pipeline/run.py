"""One configured run: validate everything, build the whole graph, compute it, record provenance."""

from __future__ import annotations

import math
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import dask
import dask.array as da
import numpy as np

from . import io
from .api import local_ncc
from .config import PairConfig, RunConfig
from .errors import ConfigError, InputError
from .validate import check_pair

__all__ = ["PairPlan", "PairResult", "RunSummary", "plan_run", "run", "processing_chunks"]

#: Default processing block: about 4 Mpx per block keeps a task at ~100 MB
#: (two inputs, halos, five float64 row buffers, the float32 output) while giving
#: dask enough blocks to keep every core busy.
TARGET_BLOCK_PIXELS = 2048 * 2048

_HIST_BINS = 2000


@dataclass(frozen=True)
class PairPlan:
    """A validated pair, ready to be wired into the graph."""

    pair: PairConfig
    reference: io.InputInfo
    moving: io.InputInfo
    chunks: tuple[int, ...]
    radius: int


@dataclass
class PairResult:
    """What one pair's run produced."""

    output: str
    shape: tuple[int, ...]
    pixels: int
    mean: float
    quantiles: dict[str, float]
    nan_fraction: float


@dataclass
class RunSummary:
    """What a whole run produced, for the CLI's summary screen."""

    pairs: list[PairResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def pixels(self) -> int:
        return sum(p.pixels for p in self.pairs)


def _spatial_chunk(size: int, zarr_chunk: int, target: int, radius: int) -> int:
    """A multiple of the zarr chunk near ``target``, at least the radius, at most ``size``."""
    multiple = max(1, round(target / zarr_chunk))
    chunk = min(size, multiple * zarr_chunk)
    while chunk < radius and chunk < size:
        chunk += zarr_chunk
    return min(chunk, size)


def processing_chunks(info: io.InputInfo, config_chunks: dict[str, int] | None, radius: int) -> tuple[int, ...]:
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
    side = int(math.isqrt(TARGET_BLOCK_PIXELS))
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
        chunks[0] = max(1, min(info.shape[0], TARGET_BLOCK_PIXELS // frame))
    return tuple(chunks)


def plan_run(config: RunConfig, *, force: bool = False) -> list[PairPlan]:
    """Read every input's metadata and check the whole run before anything is written.

    Raises
    ------
    InputError, ConfigError
        On the first problem found, naming the input and the fix.
    """
    plans = []
    for pair in config.all_pairs():
        ref = io.inspect_input(pair.reference, config.dims)
        mov = io.inspect_input(pair.moving, config.dims)
        try:
            radius = check_pair(ref.shape, mov.shape, ref.dtype, mov.dtype, config.window, config.boundary,
                                ref.dims, mov.dims)
        except InputError as exc:
            raise InputError(f"{pair.reference} / {pair.moving}: {exc}") from None
        state = io.output_state(pair.output)
        if state == "foreign" and not force:
            raise InputError(f"output {pair.output!r} exists and was not written by lncc; "
                             "choose another output path or pass --force to overwrite it")
        plans.append(PairPlan(pair, ref, mov, processing_chunks(ref, config.chunks, radius), radius))
    return plans


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
        "config": config.model_dump(mode="python"),
        "pair": plan.pair.model_dump(),
        "inputs": {"reference": describe(plan.reference), "moving": describe(plan.moving)},
        "processing_chunks": list(plan.chunks),
        "started": started,
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }


def _summary_stats(counts: np.ndarray, total: float, n_finite: int, pixels: int) -> tuple[float, dict[str, float], float]:
    edges = np.linspace(-1.0, 1.0, _HIST_BINS + 1)
    mean = total / n_finite if n_finite else float("nan")
    quantiles = {}
    cumulative = np.cumsum(counts)
    for q in (0.05, 0.25, 0.5, 0.75, 0.95):
        if n_finite:
            idx = int(np.searchsorted(cumulative, q * cumulative[-1]))
            quantiles[f"q{int(q * 100):02d}"] = float(0.5 * (edges[idx] + edges[idx + 1]))
        else:
            quantiles[f"q{int(q * 100):02d}"] = float("nan")
    return float(mean), quantiles, 1.0 - n_finite / pixels if pixels else 0.0


def _scheduler_kwargs(config: RunConfig) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"scheduler": config.compute.scheduler}
    if config.compute.workers is not None and config.compute.scheduler != "synchronous":
        kwargs["num_workers"] = config.compute.workers
    return kwargs


def run(config: RunConfig, *, force: bool = False, progress: bool = False) -> RunSummary:
    """Run a whole config: every pair's graph is built first, then computed at once.

    Parameters
    ----------
    config : RunConfig
        The validated configuration.
    force : bool
        Overwrite outputs that exist and were not written by lncc.
    progress : bool
        Show dask's progress bar on stderr.

    Returns
    -------
    RunSummary
        Per-pair pixel counts and NCC statistics, and the wall time.
    """
    plans = plan_run(config, force=force)
    started_wall = time.perf_counter()
    started = datetime.now(timezone.utc).isoformat()
    stores, stats = [], []
    for plan in plans:
        ref = io.open_input(plan.reference, plan.chunks)
        mov = io.open_input(plan.moving, plan.chunks)
        ncc = local_ncc(ref, mov, config.window, boundary=config.boundary, flat=config.flat)
        stores.append(io.prepare_output(plan.pair.output, ncc, _provenance(config, plan, started),
                                        zarr_format=config.zarr_format, compressor=config.compressor))
        data = ncc.data
        finite = da.isfinite(data)
        counts, _ = da.histogram(data, bins=_HIST_BINS, range=(-1.0, 1.0))
        stats.append((counts, da.where(finite, data, 0).sum(dtype=np.float64), finite.sum()))
    # Delayed writes and array statistics go in separate lists: dask 2026.8 reorders the
    # results of a flat argument list that mixes Delayed objects and arrays.
    if progress:
        from dask.diagnostics import ProgressBar

        with ProgressBar(out=sys.stderr, minimum=1.0):
            _, results = dask.compute(stores, stats, **_scheduler_kwargs(config))
    else:
        _, results = dask.compute(stores, stats, **_scheduler_kwargs(config))
    summary = RunSummary(seconds=time.perf_counter() - started_wall)
    finished = datetime.now(timezone.utc).isoformat()
    for plan, (counts, total, n_finite) in zip(plans, results):
        pixels = int(np.prod(plan.reference.shape))
        mean, quantiles, nan_fraction = _summary_stats(np.asarray(counts), float(total), int(n_finite), pixels)
        io.update_provenance(plan.pair.output, {
            "status": "complete", "finished": finished,
            "summary": {"mean": mean, **quantiles, "nan_fraction": nan_fraction},
        })
        summary.pairs.append(PairResult(plan.pair.output, plan.reference.shape, pixels, mean, quantiles, nan_fraction))
    return summary
