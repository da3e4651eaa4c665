"""A pair's registration in a run: the shift(s) to apply, estimated from the stored inputs, given, or recorded.

The estimate reads a bounded set of regions of both images (a coarse level, then full-resolution tiles; see
:mod:`pipeline.core.registration`), through the inputs' readers and a thread pool, never the whole image.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr
from threadpoolctl import threadpool_limits

from .. import io
from ..config import PairConfig, RunConfig
from ..core.interpolation import as_missing
from ..core.threads import available_cores
from ..errors import InputError

# The estimators (pipeline.core.registration and .tilefield: scikit-image, scipy.signal) are imported where
# they run (register_pair, _frame_readers), in the planning process: a worker process imports this module too,
# and they would cost each worker ~50 MB of its memory budget for nothing.

__all__ = ["Registration", "register_pair", "recorded_registration", "check_registration", "given_shifts",
           "CONVENTION"]

#: What a shift means, said in the output's attrs.
CONVENTION = ("scikit-image's: the shift (dy, dx) in pixels that registers the moving image onto the reference, "
              "in (y, x) order; the registered image at pixel p is the moving image at p - shift")


@dataclass(frozen=True)
class Registration:
    """The shift(s) a pair's moving image is read through, and how they were found."""

    method: str
    interpolation: str
    #: ``(2,)`` for an image, ``(t, 2)`` for video, in (y, x) order.
    shifts: np.ndarray
    #: ``estimated`` or ``given`` (the config's ``shift``).
    origin: str
    #: Per estimate (one, or one per frame): its quality figures (see :class:`pipeline.core.registration.Estimate`).
    estimates: list[dict[str, Any]] = field(default_factory=list)
    #: The local method's field: ``shift`` (..., ny, nx, 2), ``quality`` (..., ny, nx), ``centres_y``, ``centres_x``.
    field: dict[str, np.ndarray] | None = None
    #: True when read back from an existing output (a resume or an up-to-date check), not found by this run.
    recorded: bool = False
    #: Video: the reference frame every moving frame is registered to and correlated with (None: each its own).
    reference_frame: int | None = None

    def provenance(self) -> dict[str, Any]:
        """What the output's attrs record (JSON-safe), enough for a resume to apply the same shifts."""
        return {"method": self.method, "interpolation": self.interpolation, "convention": CONVENTION,
                "origin": self.origin,
                "shifts": np.asarray(self.shifts, dtype=np.float64).tolist(), "estimates": self.estimates}

    def layers(self, frame_dim: str | None, frame_coord: Any = None) -> xr.Dataset:
        """The output's registration variables: ``shift``, and for ``local`` ``shift_field`` and its quality."""
        axis = {"axis": np.array(["y", "x"], dtype=object)}
        lead = (frame_dim,) if frame_dim is not None and self.shifts.ndim == 2 else ()
        coords = dict(axis)
        if lead and frame_coord is not None:
            coords[frame_dim] = frame_coord
        attrs = {"long_name": "applied shift of the moving image", "units": "pixel", "convention": CONVENTION,
                 "interpolation": self.interpolation, "origin": self.origin}
        data = {"shift": (lead + ("axis",), np.asarray(self.shifts, dtype=np.float64), attrs)}
        if self.field is not None:
            coords.update(tile_y=self.field["centres_y"], tile_x=self.field["centres_x"])
            data["shift_field"] = (lead + ("tile_y", "tile_x", "axis"), self.field["shift"],
                                   {"long_name": "shift of each tile (global + residual)", "units": "pixel",
                                    "convention": CONVENTION, "tile_coordinates": "tile centres, reference pixels"})
            data["shift_quality"] = (lead + ("tile_y", "tile_x"), self.field["quality"],
                                     {"long_name": "NCC of each tile after its own shift", "units": "1"})
        return xr.Dataset(data, coords=coords)

    def describe(self) -> str:
        """One line for the run's summary: the applied shift(s)."""
        shifts = np.asarray(self.shifts)
        if shifts.ndim == 1:
            text = f"shift (dy, dx) = ({shifts[0]:+.3f}, {shifts[1]:+.3f}) px"
        else:
            text = (f"{len(shifts)} frame shifts, dy {shifts[:, 0].min():+.3f}..{shifts[:, 0].max():+.3f}, "
                    f"dx {shifts[:, 1].min():+.3f}..{shifts[:, 1].max():+.3f} px")
        quality = [e["correlation"] for e in self.estimates if "correlation" in e]
        tail = f", correlation after registration {min(quality):.3f}" if quality else ""
        origin = f"{self.origin}, recorded" if self.recorded else self.origin
        return f"{text} ({origin}, {self.interpolation}{tail})" + self._field_text()

    def _field_text(self) -> str:
        """The local method's field in a few numbers (on a line of its own), or nothing."""
        if self.field is None:
            return ""
        shifts = self.field["shift"]
        known = np.isfinite(shifts[..., 0])
        grid = " x ".join(str(n) for n in shifts.shape[:-1])
        if not known.any():
            return f"\n    shift field: {grid} tiles, none textured enough to tell"
        dy, dx = (np.percentile(shifts[..., k][known], [5, 50, 95]) for k in (0, 1))
        return (f"\n    shift field: {grid} tiles, dy {dy[0]:+.2f}..{dy[2]:+.2f} (median {dy[1]:+.2f}), "
                f"dx {dx[0]:+.2f}..{dx[2]:+.2f} (median {dx[1]:+.2f}) px over the 5-95% of "
                f"{int(known.sum())} tiles ({int((~known).sum())} too flat or unmatched)")


def _reader(image: io.InputInfo, nodata, mask_info: io.InputInfo | None, order: tuple[int, ...]):
    """``read(region)`` over a stored input in processing order: float64, NaN where missing."""
    source = io.source_of(image)
    mask = None if mask_info is None else io.source_of(mask_info)
    inverse = tuple(int(i) for i in np.argsort(order))

    def read(region):
        key = tuple(region[inverse[axis]] for axis in range(len(order)))
        values = np.transpose(source[key], order)
        valid = None if mask is None else np.transpose(mask[key], order)
        return as_missing(values, nodata, valid)

    return read


def register_pair(config: RunConfig, pair: PairConfig, inputs: tuple, shape: tuple[int, ...],
                  order: tuple[int, ...]) -> Registration:
    """The registration of one pair (``shape`` in processing order): given shifts, or estimated from its inputs.

    ``inputs`` are the pair's reference, moving image and their masks (:class:`pipeline.io.InputInfo`, None for
    no mask), as the plan inspected them.

    Raises
    ------
    InputError
        When the pair cannot be registered (flat or unrelated images, a shift beyond ``max_shift``, tiles
        that disagree), naming the pair and the fix.
    """
    from ..core.registration import register_images

    settings = config.registration
    frames = shape[0] if len(shape) == 3 else None
    given = settings.known_shifts()
    if given is not None and settings.method == "translation":
        return Registration(settings.method, settings.interpolation,
                            given_shifts(given, frames, pair, shape[-2:]), "given",
                            reference_frame=_reference_frame(settings, frames))
    nodata = config.nodata_pair()
    ref, mov, ref_mask, mov_mask = inputs
    read_ref = _reader(ref, nodata[0], ref_mask, order)
    read_mov = _reader(mov, nodata[1], mov_mask, order)
    workers = min(available_cores(), os.cpu_count() or 1)
    if frames is not None:
        read_ref, read_mov = _frame_readers(read_ref, read_mov, shape)
    known = None if given is None else given_shifts(given, frames, pair, shape[-2:])  # local around a given shift
    try:
        with threadpool_limits(1), ThreadPoolExecutor(workers) as pool:  # one BLAS thread each (see pipeline.api)
            found = register_images(read_ref, read_mov, shape, method=settings.method, upsample=settings.upsample,
                                    max_shift=settings.max_shift, tolerance=settings.tolerance,
                                    reference_frame=settings.reference_frame, tile=settings.tile,
                                    search=settings.search, shift=known, map=pool.map)
    except InputError as exc:
        raise InputError(f"{ref.url} / {mov.url}: cannot register: {exc}") from None
    shifts, estimates, tiles = found.shift, [e.as_dict() for e in found.estimates], _field_layers(found.field)
    return Registration(settings.method, settings.interpolation, shifts, "estimated", estimates, tiles,
                        reference_frame=_reference_frame(settings, frames))


def _reference_frame(settings, frames: int | None) -> int | None:
    """The one reference frame of a video registered with ``reference_frame: k`` (None otherwise)."""
    return None if frames is None or settings.reference_frame == "each" else int(settings.reference_frame)


def _field_layers(field) -> dict[str, np.ndarray] | None:
    """The local method's field (one, or one per frame) as the arrays the output's layers take."""
    if field is None:
        return None
    frames = field if isinstance(field, list) else None
    stack = (lambda name: np.stack([getattr(f, name) for f in frames])) if frames else \
        (lambda name: getattr(field, name))
    first = frames[0] if frames else field
    return {"shift": stack("shift"), "quality": stack("quality"), "centres_y": first.centres_y,
            "centres_x": first.centres_x}


def _frame_readers(read_ref, read_mov, shape):
    """``read(t, region)`` per frame, from ``read(region)`` readers of a ``(t, y, x)`` input of ``shape``.

    The estimate of a frame reads many regions of it (a coarse level, then tiles), and each region read from
    the store decodes whole chunks: a frame of at most :data:`pipeline.core.registration.CACHED_FRAME` pixels is
    read once, in each of the few threads that ask for it, and its regions are sliced from memory.
    """
    from ..core.registration import CACHED_FRAME

    whole = (slice(0, shape[-2]), slice(0, shape[-1]))
    if shape[-2] * shape[-1] > CACHED_FRAME:
        return [lambda t, region, read=read: read((slice(t, t + 1),) + tuple(region))[0]
                for read in (read_ref, read_mov)]

    def cached(read):
        held: OrderedDict = OrderedDict()
        lock = threading.Lock()

        def frame_region(t, region):
            with lock:
                frame = held.get(t)
            if frame is None:
                frame = read((slice(t, t + 1),) + whole)[0]
                with lock:
                    held[t] = frame
                    while len(held) > 2 * available_cores():  # the frames the pool's threads are working on
                        held.popitem(last=False)
            return frame[tuple(region)]

        return frame_region

    return [cached(read_ref), cached(read_mov)]


def check_registration(config: RunConfig, pair: PairConfig, shape: tuple[int, ...]) -> None:
    """What can be checked of a pair's registration settings from its shape (processing order), reading nothing."""
    settings = config.registration
    if not settings.enabled:
        return
    frames = shape[0] if len(shape) == 3 else None
    name = io.input_label(pair.reference)
    if settings.known_shifts() is not None:
        given_shifts(settings.known_shifts(), frames, pair, shape[-2:])
    if frames is not None and settings.reference_frame != "each" and settings.reference_frame >= frames:
        raise InputError(f"{name}: registration.reference_frame is {settings.reference_frame} but the "
                         f"video has {frames} frames (0 to {frames - 1}); give a frame index below {frames}")


def given_shifts(given: list[tuple[float, float]], frames: int | None, pair: PairConfig,
                 size: tuple[int, int]) -> np.ndarray:
    """The config's ``shift`` as an array for this pair: ``(2,)``, or ``(t, 2)`` for video (``size``: (y, x))."""
    far = [s for s in given if abs(s[0]) >= size[0] or abs(s[1]) >= size[1]]
    name = io.input_label(pair.reference)
    if far:
        raise InputError(f"{name}: registration.shift {list(far[0])} moves the moving image entirely off "
                         f"the reference's {size[0]} x {size[1]} grid; give a shift smaller than the image")
    if frames is None:
        if len(given) != 1:
            raise InputError(f"{name}: registration.shift holds {len(given)} shifts but the images are "
                             "2-D; give one [dy, dx]")
        return np.asarray(given[0], dtype=np.float64)
    if len(given) not in (1, frames):
        raise InputError(f"{name}: registration.shift holds {len(given)} shifts but the video has "
                         f"{frames} frames; give one [dy, dx] for all frames or one per frame")
    return np.asarray(given * frames if len(given) == 1 else given, dtype=np.float64)


def recorded_registration(provenance: dict[str, Any], config: RunConfig) -> Registration | None:
    """The registration an existing output recorded (for a resume or an up-to-date check); None if none."""
    recorded = provenance.get("registration")
    if not isinstance(recorded, dict) or not isinstance(recorded.get("shifts"), list):
        return None
    shifts = np.asarray(recorded["shifts"], dtype=np.float64)
    if shifts.shape[-1:] != (2,) or not np.isfinite(shifts).all():
        return None
    origin = recorded.get("origin") if recorded.get("origin") in ("estimated", "given") else "estimated"
    frames = len(shifts) if shifts.ndim == 2 else None
    return Registration(config.registration.method, config.registration.interpolation, shifts, origin,
                        list(recorded.get("estimates") or []), recorded=True,
                        reference_frame=_reference_frame(config.registration, frames))
