"""What an output records about the run that made it: the config hash, the versions, the provenance."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import io
from ..config import PairConfig, RunConfig

if TYPE_CHECKING:
    from .plan import PairPlan

__all__ = ["config_hash", "coords_digest", "versions", "provenance_of"]


def coords_digest(info: io.InputInfo) -> str:

    h = hashlib.sha256()
    for dim in sorted(info.coords):
        values = np.asarray(info.coords[dim].values)
        h.update(f"{dim}:{values.dtype}:{values.shape};".encode())
        h.update("\x1f".join(map(str, values.ravel())).encode() if values.dtype.kind in "OUS" else values.tobytes())
    return h.hexdigest()


def config_hash(config: RunConfig, pair: PairConfig, chunks: tuple[int, ...]) -> str:
    """SHA-256 of everything that determines an output's bytes: settings, inputs, chunks, lncc version."""

    settings = config.model_dump(mode="json", exclude={"pairs", "reference", "moving", "output", "compute",
                                                       "reference_mask", "moving_mask", "storage_options"})
    settings.update(pair.model_dump(exclude={"output"}), chunks=list(chunks),
                    lncc=versions().get("lncc", "unknown"))
    if pair.output.settings():  # only where not the defaults: an output of an earlier lncc 0.2 stays up to date
        settings["output"] = pair.output.settings()
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def versions() -> dict[str, str]:
    out = {}
    for name in ("lncc", "numpy", "numba", "dask", "distributed", "xarray", "zarr", "numcodecs"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def provenance_of(config: RunConfig, plan: PairPlan, started: str) -> dict[str, Any]:
    return {
        "status": "running",
        "software": "lncc",
        "version": versions().get("lncc", "unknown"),
        "dependencies": versions(),
        # storage_options may hold credentials: never stored
        "config": config.model_dump(mode="python", exclude={"storage_options"}),
        "config_hash": plan.config_hash,
        "fingerprints": plan.fingerprints,
        "pair": plan.pair.model_dump(),
        "inputs": {"reference": plan.reference.describe(), "moving": plan.moving.describe()},
        "processing_chunks": list(plan.chunks),
        **({"registration": plan.registration.provenance()} if plan.registration is not None else {}),
        "started": started,
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
