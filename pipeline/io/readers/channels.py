"""Colour inputs made grey-level images (or one image per channel) by the run's channel policy.

Readers of colour formats give their channels on one axis of the base array; :class:`ChannelView` reads
that array as the image lncc correlates. Policies (config ``channels``):

- ``luminance`` (the default for colour): Rec. 709 luma weights of R, G, B (a grey+alpha image: its grey);
- ``mean``: the mean of the colour channels;
- ``separate``: each colour channel its own image, on a leading ``c`` axis named by channel;
- an index ``N``: channel N as it is stored.

An alpha channel (grey+alpha, RGBA) is never correlated: it is the image's validity mask (alpha 0 is
invalid), read through the same view with ``mask=True``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import InputError
from .info import ReadsByKey

__all__ = ["LUMINANCE", "ChannelPlan", "channel_plan", "ChannelView"]

#: Rec. 709 (sRGB) luma weights of R, G and B.
LUMINANCE = (0.2126, 0.7152, 0.0722)

#: Channel names by channel count, and which of them is alpha; other counts are numbered, with no alpha.
_LAYOUTS = {2: (("L", "A"), 1), 3: (("R", "G", "B"), None), 4: (("R", "G", "B", "A"), 3)}


@dataclass(frozen=True)
class ChannelPlan:
    """How a colour input's channels become the image: which channels, with which weights, kept apart or not."""

    policy: str  # luminance, mean, separate or the index as text
    select: tuple[int, ...]  # the base channels read
    weights: tuple[float, ...] | None  # summed with these weights (None: taken as stored)
    separate: bool  # the selected channels on a leading c axis
    names: tuple[str, ...]  # the selected channels' names
    alpha: int | None  # the alpha channel's index, the validity mask (None: no alpha, or it is the image)


def channel_plan(what: str, count: int, policy: str | int | None) -> ChannelPlan:
    """The plan of ``policy`` (None: luminance) for an input of ``count`` channels; one-line errors name the fix."""
    names, alpha = _LAYOUTS.get(count, (tuple(str(i) for i in range(count)), None))
    colour = tuple(i for i in range(count) if i != alpha)
    policy = "luminance" if policy is None else policy
    if isinstance(policy, int):
        if not 0 <= policy < count:
            raise InputError(f"{what} has {count} channels ({', '.join(names)}) but channels is {policy}; "
                             f"give an index 0..{count - 1}, or luminance, mean or separate")
        return ChannelPlan(str(policy), (policy,), None, False, (names[policy],), None if policy == alpha else alpha)
    if policy == "luminance":
        if len(colour) == 1:  # grey + alpha: the grey is the luminance
            return ChannelPlan(policy, colour, None, False, (names[colour[0]],), alpha)
        if len(colour) != 3:
            raise InputError(f"{what} has {count} channels, not RGB(A), so it has no luminance; set channels: "
                             f"mean, separate or an index 0..{count - 1}")
        return ChannelPlan(policy, colour, LUMINANCE, False, ("luminance",), alpha)
    if policy == "mean":
        return ChannelPlan(policy, colour, (1.0 / len(colour),) * len(colour), False, ("mean",), alpha)
    if policy == "separate":
        return ChannelPlan(policy, colour, None, True, tuple(names[i] for i in colour), alpha)
    raise InputError(f"channels is {policy!r}; expected luminance, mean, separate or a channel index")


class ChannelView(ReadsByKey):
    """A base array with channels on axis ``axis`` read as the image its :class:`ChannelPlan` makes.

    With ``mask=True`` the view reads the plan's alpha channel as a bool validity mask (alpha > 0), shaped
    like the image (repeated along ``c`` for ``separate``). Weighted channels are summed in float64 and
    given as float32 (float64 for float64 inputs); selected channels keep their stored dtype.
    """

    def __init__(self, base, axis: int, plan: ChannelPlan, *, mask: bool = False):
        if mask and plan.alpha is None:
            raise ValueError("the plan has no alpha channel to read as a mask")
        self.base, self.axis, self.plan, self.mask = base, axis, plan, mask
        rest = tuple(n for i, n in enumerate(base.shape) if i != axis)
        chunks = tuple(c for i, c in enumerate(base.chunks) if i != axis)
        lead = (len(plan.select),) if plan.separate else ()
        self.shape, self.chunks = lead + rest, ((1,) if lead else ()) + chunks
        self.ndim = len(self.shape)
        if mask:
            self.dtype = np.dtype(bool)
        elif plan.weights is not None:
            self.dtype = np.dtype(np.float64 if np.dtype(base.dtype) == np.float64 else np.float32)
        else:
            self.dtype = np.dtype(base.dtype)

    def __dask_tokenize__(self):
        return ("lncc-channels", getattr(self.base, "url", id(self.base)), self.axis, self.plan, self.mask)

    def __getitem__(self, key) -> np.ndarray:
        key = tuple(key) if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (self.ndim - len(key))
        lead, rest = (key[0], key[1:]) if self.plan.separate else (None, key)
        base_key = rest[:self.axis] + (slice(None),) + rest[self.axis:]
        values = np.moveaxis(np.asarray(self.base[base_key]), self.axis, -1)
        if self.mask:
            valid = values[..., self.plan.alpha] > 0
            return np.broadcast_to(valid, (len(range(*lead.indices(self.shape[0]))),) + valid.shape).copy() \
                if self.plan.separate else valid
        chosen = [self.plan.select[i] for i in range(*lead.indices(self.shape[0]))] if self.plan.separate \
            else list(self.plan.select)
        if self.plan.separate:
            return np.ascontiguousarray(np.moveaxis(values[..., chosen], -1, 0))
        if self.plan.weights is None:
            return np.ascontiguousarray(values[..., chosen[0]])
        total = np.zeros(values.shape[:-1], dtype=np.float64)
        for index, weight in zip(chosen, self.plan.weights):
            total += weight * values[..., index]
        return total.astype(self.dtype, copy=False)
