"""Checks of a pair and its options that need only shapes, dtypes, dims and values (no data).

The one home of the window, boundary, ``flat`` and ``min_valid`` rules: the config, the Python API and the
planner all ask these functions, and the layers below trust what they return.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

from ..errors import InputError
from .boundary import BOUNDARIES

__all__ = ["check_window", "window_problem", "flat_ok", "check_options", "check_pair", "check_dtype",
           "default_dims", "processing_order", "FRAME_DIMS"]


def window_problem(window: int, show=repr) -> str | None:
    """What is wrong with an integer window side length (what was expected, what came, the fix); None if nothing.

    ``show`` formats the values (the config passes a bounded repr: a YAML int may have thousands of digits).
    """
    if window < 3:
        return f"expected an odd integer >= 3, got {show(window)}; use 3 or more"
    if window % 2 == 0:
        return (f"expected an odd integer (the window needs a centre pixel), got {show(window)}; "
                f"use {show(window - 1)} or {show(window + 1)}")
    return None


def check_window(window: int) -> int:
    """Validate a window side length and return its radius.

    Raises
    ------
    TypeError
        If ``window`` is not an integer.
    ValueError
        If ``window`` is not an odd integer >= 3.
    """
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)):
        raise TypeError(f"window must be an odd integer >= 3, got {window!r} ({type(window).__name__})")
    problem = window_problem(int(window))
    if problem is not None:
        raise ValueError(f"window: {problem}")
    return int(window) // 2


def flat_ok(flat: float) -> bool:
    """Whether ``flat`` may stand for a flat window: NaN or a value NCC can take, in [-1, 1]."""
    return math.isnan(flat) or -1.0 <= flat <= 1.0


def check_options(flat: float, min_valid: float) -> None:
    """Refuse a ``flat`` value outside [-1, 1] (NaN is fine) and a ``min_valid`` fraction outside [0, 1].

    Raises
    ------
    InputError
        Naming the option, its value and the range it must lie in.
    """
    if not flat_ok(flat):
        raise InputError(f"flat must be in [-1, 1] or NaN (NCC values lie in [-1, 1]), got {flat}")
    if not 0.0 <= min_valid <= 1.0:
        raise InputError(f"min_valid must be a fraction in [0, 1], got {min_valid}")


def default_dims(ndim: int) -> tuple[str, ...]:
    """Dimension names used when neither the metadata nor the config gives them."""
    if ndim == 2:
        return ("y", "x")
    if ndim == 3:
        return ("t", "y", "x")
    raise InputError(f"inputs must be 2-D (y, x) or 3-D (t, y, x), got {ndim}-D; select a 2-D or 3-D array")


def check_dtype(dtype: np.dtype, what: str) -> None:
    """Refuse dtypes that have no meaningful correlation (bool, complex, strings, objects)."""
    dtype = np.dtype(dtype)
    if dtype.kind not in "iuf":
        raise InputError(
            f"{what} has dtype {dtype}, which lncc cannot correlate; "
            "expected a real integer or float image (uint8, uint16, int16, float32, ...): convert it first"
        )


def check_pair(
    ref_shape: Sequence[int],
    mov_shape: Sequence[int],
    ref_dtype: np.dtype,
    mov_dtype: np.dtype,
    window: int,
    boundary: str = "reflect",
    ref_dims: Sequence[str] | None = None,
    mov_dims: Sequence[str] | None = None,
    *,
    caller: Literal["config", "api"] = "config",
) -> int:
    """Validate a reference/moving pair and the window; return the window radius.

    Parameters
    ----------
    caller : {"config", "api"}, default "config"
        Who gave the pair, so that a fix names what that caller can change:
        config keys for a run, arguments and DataArray methods for
        :func:`pipeline.local_ncc`.

    Raises
    ------
    InputError
        On a shape, ndim or dims mismatch, an unsupported dtype, an empty
        array, or a window larger than the image.
    """
    ref_shape, mov_shape = tuple(ref_shape), tuple(mov_shape)
    if ref_shape != mov_shape:
        raise InputError(
            f"reference and moving must have the same shape, got {ref_shape} and {mov_shape}; "
            "crop or resample one of them to match"
        )
    if len(ref_shape) not in (2, 3):
        raise InputError(
            f"inputs must be 2-D (y, x) or 3-D (t, y, x), got {len(ref_shape)}-D shape {ref_shape}; "
            "select a 2-D or 3-D array"
        )
    if ref_dims is not None and mov_dims is not None and tuple(ref_dims) != tuple(mov_dims):
        if caller == "api":
            renames = {m: r for m, r in zip(mov_dims, ref_dims) if m != r}
            fix = f"give both DataArrays the same dims, e.g. moving.rename({renames!r})"
        else:
            fix = "set 'dims' in the config to name them"
        raise InputError(
            f"reference and moving must have the same dims, got {tuple(ref_dims)} and {tuple(mov_dims)}; {fix}"
        )
    check_dtype(ref_dtype, "reference")
    check_dtype(mov_dtype, "moving")
    if 0 in ref_shape:
        raise InputError(f"inputs are empty (shape {ref_shape}); give arrays with at least one pixel")
    if boundary not in BOUNDARIES:
        raise InputError(f"boundary must be one of {', '.join(BOUNDARIES)}, got {boundary!r}")
    try:
        radius = check_window(window)
    except (TypeError, ValueError) as exc:
        raise InputError(str(exc)) from None
    height, width = ref_shape[-2:]
    if min(height, width) < 3:
        raise InputError(f"image {height} x {width} is smaller than the smallest window (3 x 3); give a larger image")
    if window > min(height, width):
        raise InputError(
            f"window {window} is larger than the image ({height} x {width}); "
            f"use a window of at most {min(height, width) - (1 - min(height, width) % 2)}"
        )
    return radius


#: Names a 3-D input's frame axis may have; the other two axes are the image's (the window spans them). A
#: channel axis (``c``) is one too: each channel is correlated as an image of its own.
FRAME_DIMS = ("t", "time", "c", "channel")


def processing_order(dims: Sequence[str], what: str) -> tuple[int, ...]:
    """The axes of an input in the order lncc processes them: the frame axis (3-D) first, then the image axes.

    The image axes are found by name wherever they are; the output keeps the
    input's own order.

    Raises
    ------
    InputError
        For a 3-D input with no frame or channel axis (``t``, ``time``, ``c``,
        ``channel``).
    """
    dims = tuple(dims)
    if len(dims) == 2:
        return (0, 1)  # both axes are the image's: the square window treats them alike
    frames = [i for i, d in enumerate(dims) if d in FRAME_DIMS]
    if len(frames) != 1:
        odd = [d for d in dims if d not in FRAME_DIMS + ("y", "x")] or [d for d in dims if d not in FRAME_DIMS]
        raise InputError(
            f"{what} has dims {dims}: a 3-D input needs exactly one frame or channel axis named "
            f"{', '.join(FRAME_DIMS)} beside its two image axes, and {odd[-1]!r} is none; name the axes with the "
            "config's dims (e.g. [y, x, c] for colour channels, each correlated on its own)")
    return (frames[0],) + tuple(i for i in range(3) if i != frames[0])
