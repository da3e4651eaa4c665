"""``lncc preview``: a picture of an NCC map, computed out of core from a coarse level of it (block means
through dask, NaN-aware, so missing pixels do not eat their neighbours), optionally beside the two inputs
(the moving one moved by the applied shift), as in the classic three-panel figure."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from .. import io
from ..core.checks import FRAME_DIMS
from ..errors import InputError

__all__ = ["PreviewSummary", "preview"]

#: The most frames a grid of frames shows.
_MAX_FRAMES = 16


@dataclass(frozen=True)
class PreviewSummary:
    """What a preview drew: the file, the frames, and how much the map was reduced."""

    path: str
    frames: tuple[int, ...]
    factor: int
    shape: tuple[int, int]


def _frames(count: int | None, frame: int | None, frames: str | None) -> list[int | None]:
    if count is None:
        if frame is not None or frames is not None:
            raise InputError("--frame/--frames apply to video maps (t, y, x); this map is one image: remove them")
        return [None]
    if frames is not None:
        parts = frames.split(":")
        try:
            numbers = [int(p) if p else None for p in parts]
            chosen = list(range(count))[slice(*numbers)]
        except (ValueError, TypeError):
            raise InputError(f"--frames expects START:STOP[:STEP] such as 0:100:10, got {frames!r}") from None
        if not chosen:
            raise InputError(f"--frames {frames} selects no frame of the {count}; give a range within 0..{count - 1}")
        return chosen[:_MAX_FRAMES]
    chosen = 0 if frame is None else frame
    if not 0 <= chosen < count:
        raise InputError(f"--frame {chosen} is not a frame of this map (0..{count - 1}); give one of those")
    return [chosen]


def _coarse(array: xr.DataArray, factor: int, dims: tuple[str, str]) -> np.ndarray:
    """Means of ``factor`` x ``factor`` blocks, NaN-aware, computed block by block through dask."""
    values = array.astype(np.float32)
    if factor > 1:
        values = values.coarsen({dims[0]: factor, dims[1]: factor}, boundary="pad").mean()  # skips NaN
    return np.asarray(values.transpose(*dims).values, dtype=np.float64)


def preview(output: str, png: str, *, size: int = 1600, with_inputs: bool = False, frame: int | None = None,
            frames: str | None = None, storage_options: dict[str, Any] | None = None) -> PreviewSummary:
    """Draw the NCC map at ``output`` (an lncc output) into the PNG ``png``.

    Raises
    ------
    InputError
        If ``output`` is not an lncc output, or the frames asked are not in it.
    """
    if size < 64:
        raise InputError(f"--size is the picture's long side in pixels, at least 64; got {size}")
    if io.output_state(output, storage_options=storage_options) != "lncc":
        raise InputError(f"{output!r} is not an lncc output; give the output path of an lncc run")
    provenance = io.read_provenance(output, storage_options=storage_options)
    ncc = xr.open_zarr(output, consolidated=False, **io.store_kwargs(output, storage_options))["ncc"]
    frame_dim = next((d for d in ncc.dims if d in FRAME_DIMS), None)
    image_dims = tuple(d for d in ncc.dims if d != frame_dim)
    height, width = (ncc.sizes[d] for d in image_dims)
    chosen = _frames(None if frame_dim is None else ncc.sizes[frame_dim], frame, frames)
    columns = 3 if with_inputs else 1
    per_row = 1 if with_inputs else min(len(chosen), 4)
    factor = max(1, math.ceil(max(height * per_row, width * columns * per_row) / size))
    source, base, factor = _level_for(output, ncc, provenance, factor, storage_options)
    inputs = _inputs(provenance, storage_options) if with_inputs else None
    shifts = _shifts(provenance)
    rows: list[list[tuple[str, np.ndarray, str]]] = []
    for k in chosen:
        pick = (lambda a: a) if k is None else (lambda a, k=k: a.isel({frame_dim: k}))
        label = "" if k is None else f"frame {k}: "
        panel = (f"{label}local NCC", _coarse(pick(source), factor // base, image_dims), "ncc")
        if inputs is None:
            rows.append([panel])
            continue
        ref, mov = (_coarse(pick(x), factor, image_dims) for x in inputs)
        shift = None if shifts is None else (shifts if shifts.ndim == 1 else shifts[k])
        if shift is not None:
            mov = _moved(ref, mov, shift / factor)
        rows.append([(f"{label}reference", ref, "input"),
                     (f"{label}moving" + (" (registered)" if shift is not None else ""), mov, "input"), panel])
    if not with_inputs and len(rows) > 1:  # a grid of frames, four to a row
        flat = [r[0] for r in rows]
        rows = [flat[i:i + 4] for i in range(0, len(flat), 4)]
    io.draw_preview(png, rows, _title(output, provenance, shifts, factor), size)
    return PreviewSummary(png, tuple(k for k in chosen if k is not None), factor, (height, width))


def _level_for(output: str, ncc: xr.DataArray, provenance: dict, factor: int, storage_options
               ) -> tuple[xr.DataArray, int, int]:
    """The coarsest pyramid level no coarser than ``factor`` (the map itself without a pyramid), the level-0
    pixels a side one of its pixels stands for, and the reduction drawn (a multiple of that, at most factor)."""
    layout = io.read_levels(provenance)
    k = 0 if layout is None else min(layout[0], int(math.log2(factor)))
    if k == 0:
        return ncc, 1, factor
    level = xr.DataArray(io.open_level(output, "ncc", k, storage_options), dims=ncc.dims)
    return level, 2 ** k, 2 ** k * (factor // 2 ** k)  # never coarser than asked


def _inputs(provenance: dict, storage_options) -> tuple[xr.DataArray, xr.DataArray]:
    """The run's two inputs, opened lazily as the run read them (series, level, channel policy)."""
    config, pair = provenance.get("config") or {}, provenance.get("pair") or {}
    out = []
    for role in ("reference", "moving"):
        url = pair.get(role)
        if url is None:
            raise InputError(f"the output's provenance names no {role} input; preview it without --with-inputs")
        try:
            info = io.inspect_input(url, config.get("dims"), storage_options=storage_options,
                                    series=config.get("series", 0), level=config.get("level", 0),
                                    channels=config.get("channels"))
        except InputError as exc:
            raise InputError(f"--with-inputs: {exc}") from None
        out.append(io.open_input(info, tuple(max(c, min(n, 2048)) for c, n in zip(info.zarr_chunks, info.shape))))
    return out[0], out[1]


def _shifts(provenance: dict) -> np.ndarray | None:
    shifts = (provenance.get("registration") or {}).get("shifts")
    return None if shifts is None else np.asarray(shifts, dtype=np.float64)


def _moved(ref: np.ndarray, mov: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """The coarse moving image moved by the (coarse) shift onto the reference, as the run moved it (linear is
    enough for a picture)."""
    from ..chunked.shift import apply_shift

    moved, _, _ = apply_shift(ref, mov, shift, "linear", None, None, fixed=False)
    return np.asarray(moved, dtype=np.float64)


def _title(output: str, provenance: dict, shifts: np.ndarray | None, factor: int) -> str:
    window = (provenance.get("config") or {}).get("window")
    parts = [output, f"window {window}" if window else ""]
    if shifts is not None:
        parts.append(f"shift (dy, dx) = ({shifts[0]:+.2f}, {shifts[1]:+.2f}) px" if shifts.ndim == 1
                     else f"{len(shifts)} per-frame shifts")
    if factor > 1:
        parts.append(f"means of {factor} x {factor} pixels")
    return "  |  ".join(p for p in parts if p)
