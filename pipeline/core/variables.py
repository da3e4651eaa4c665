"""The variables an NCC map is made of: their names, in order, and their attributes."""

from __future__ import annotations

__all__ = ["EXTRA_NAMES", "OUTPUT_ATTRS"]


#: Names of the stacked outputs when extras are requested, in order.
EXTRA_NAMES = ("ncc", "valid_fraction", "std_reference", "std_moving")


#: The attrs (CF ``long_name`` and ``units``) of each output in :data:`EXTRA_NAMES`, for in-memory and stored
#: outputs alike; copy before changing. The stds have the units of their input, which only the caller knows.
OUTPUT_ATTRS = {
    "ncc": {"long_name": "local normalized cross-correlation", "units": "1"},
    "valid_fraction": {"long_name": "fraction of the window valid in both images", "units": "1"},
    "std_reference": {"long_name": "local standard deviation of the reference image"},
    "std_moving": {"long_name": "local standard deviation of the moving image"},
}
