"""An output's small layers: the in-memory variables written whole beside the map (the registration's ``shift``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import zarr

from .urls import join_url, store_kwargs

__all__ = ["read_layer"]


def read_layer(url: str, name: str, *, storage_options: dict[str, Any] | None = None) -> np.ndarray | None:
    """The values of the output's layer ``name`` (e.g. ``shift``: ``(2,)``, or ``(t, 2)`` for video), whole.

    Layers are small (a shift per frame, a shift per tile), so they are read in
    one go; never call this for the map itself. Returns None when the output
    has no array ``name``; any other failure to read it (a damaged chunk) is
    raised.
    """
    try:
        array = zarr.open_array(store=join_url(url, name), mode="r", **store_kwargs(url, storage_options))
    except (FileNotFoundError, KeyError):
        return None
    return np.asarray(array[...])
