"""An output group's metadata: where lncc's provenance lives, and reading and writing it from the files themselves."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import zarr

from .urls import put_atomic, read_json, store_kwargs

__all__ = ["PROVENANCE_KEY", "STATE_GROUP", "LEDGER", "CHECKSUMS", "ATTRS_FILE", "FORMAT_FILES", "GROUP_FILES",
           "group_attributes", "write_group", "update_provenance", "read_provenance", "json_safe",
           "zarr_format_of", "ignore_zarr_warnings"]


def ignore_zarr_warnings() -> None:
    """zarr 3 warns that consolidated metadata is an extension of its spec (xarray reads it either way)."""
    warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
    warnings.filterwarnings("ignore", message="Object at .* is not recognized", category=UserWarning)


# Filtered for good rather than in a catch_warnings block around the calls: such a block is not thread-safe,
# and another thread's (numba compiles in one while outputs are prepared) may restore filters without ours
# while zarr consolidates.
ignore_zarr_warnings()


#: Group attribute that holds the run's provenance; its presence marks an lncc output.
PROVENANCE_KEY = "lncc"


#: The group of an output's bookkeeping, and its arrays: the block ledger (a stats vector per block done) and
#: the block checksums (:func:`block_digest`).
STATE_GROUP = "_lncc"


LEDGER = "blocks"


CHECKSUMS = "checksums"


#: The metadata file that holds a zarr group's attributes, by zarr format.
ATTRS_FILE = {3: "zarr.json", 2: ".zattrs"}


#: A zarr group's own metadata files, by format (consolidated metadata: in format 3's zarr.json, format 2's
#: .zmetadata, which is rewritten after every provenance update).
FORMAT_FILES = {3: ("zarr.json",), 2: (".zgroup", ".zattrs")}


GROUP_FILES = (*FORMAT_FILES[3], *FORMAT_FILES[2], ".zmetadata")


def group_attributes(url: str, *, storage_options: dict[str, Any] | None = None,
                     zarr_format: int | None = None) -> dict[str, Any] | None:
    """The attributes of the zarr group at ``url``, read from its metadata file; None if it is no group.

    Read from the file itself, never from consolidated metadata, which may lag behind. A format-2
    group's ``.zattrs`` counts even before its ``.zgroup`` exists: :func:`write_group` writes it first.
    ``zarr_format``, when known, reads just that format's file.
    """
    if zarr_format == 2:  # known: one read (a block writer asks for every block)
        attrs = read_json(url, ATTRS_FILE[2], storage_options)
        return attrs if isinstance(attrs, dict) else None
    meta = read_json(url, ATTRS_FILE[3], storage_options)
    if meta is not None or zarr_format == 3:
        meta = meta or {}
        ok = isinstance(meta, dict) and meta.get("node_type") == "group"
        return dict(meta.get("attributes") or {}) if ok else None
    attrs = read_json(url, ATTRS_FILE[2], storage_options)
    if not isinstance(attrs, dict) or read_json(url, ".zarray", storage_options) is not None:
        return None
    return attrs


def write_group(url: str, attributes: dict[str, Any], *, zarr_format: int = 3,
                storage_options: dict[str, Any] | None = None) -> None:
    """Create the zarr group at ``url`` with its ``attributes`` in its first metadata write.

    No moment leaves a group without them (a killed run's output must still say whose it is): format 3
    writes one ``zarr.json``; format 2 writes ``.zattrs`` before ``.zgroup``.
    """
    import json

    attributes = json_safe(attributes)
    if zarr_format == 3:
        meta = {"zarr_format": 3, "node_type": "group", "attributes": attributes}
        put_atomic(url, ATTRS_FILE[3], json.dumps(meta, indent=2).encode(), storage_options)
    else:
        put_atomic(url, ATTRS_FILE[2], json.dumps(attributes, indent=2).encode(), storage_options)
        put_atomic(url, ".zgroup", json.dumps({"zarr_format": 2}).encode(), storage_options)


def update_provenance(url: str, updates: dict[str, Any], *,
                      storage_options: dict[str, Any] | None = None) -> None:
    """Merge ``updates`` into the output group's provenance attribute (read from the group's own file)."""
    current = read_provenance(url, storage_options=storage_options)
    current.update(json_safe(updates))
    group = zarr.open_group(store=url, mode="r+", use_consolidated=False, **store_kwargs(url, storage_options))
    group.attrs[PROVENANCE_KEY] = current
    # Refreshed on every update so that xarray.open_zarr(path) opens quickly and never sees stale metadata.
    ignore_zarr_warnings()  # again: a catch_warnings block left since import (pytest's) may have dropped them
    zarr.consolidate_metadata(group.store_path)  # the open store: it carries the storage options


def json_safe(value: Any) -> Any:
    """Strict-JSON form of attrs: non-finite floats become strings, tuples lists."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else str(float(value))
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def read_provenance(url: str, *, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The provenance attribute of an lncc output (empty if there is none or no group)."""
    provenance = (group_attributes(url, storage_options=storage_options) or {}).get(PROVENANCE_KEY)
    return dict(provenance) if isinstance(provenance, dict) else {}


def zarr_format_of(url: str, storage_options: dict[str, Any] | None = None) -> int:
    """The zarr format of the group at ``url``: 3 when it has a ``zarr.json``, else 2."""
    return 3 if read_json(url, ATTRS_FILE[3], storage_options) is not None else 2
