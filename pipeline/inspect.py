"""What an lncc output holds: complete or not, how much is done, and its provenance."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import io
from .errors import InputError

__all__ = ["describe_output"]


def describe_output(url: str, *, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Describe an lncc output without changing it.

    ``storage_options`` are the fsspec options for a URL output; ``lncc inspect``
    uses the defaults (credentials and endpoint from the environment).

    Returns
    -------
    dict
        ``state`` (``complete`` or ``incomplete``), ``blocks_done``,
        ``blocks_total`` and ``provenance`` (the group's ``lncc`` attribute).

    Raises
    ------
    InputError
        If ``url`` is not an lncc output.
    """
    state = io.output_state(url, storage_options=storage_options)
    if state != "lncc":
        what = "does not exist" if state == "absent" else "was not written by lncc"
        raise InputError(f"{url!r} {what}; give the output path of an lncc run")
    provenance = io.read_provenance(url, storage_options=storage_options)
    try:
        done = ~np.isnan(io.read_ledger(url, storage_options=storage_options)[..., -1])
    except Exception:  # an output killed before its ledger was created has no blocks done
        done = np.zeros(0, dtype=bool)
    complete = provenance.get("status") == "complete" and done.size > 0 and bool(done.all())
    return {
        "state": "complete" if complete else "incomplete",
        "blocks_done": int(done.sum()),
        "blocks_total": int(done.size),
        "provenance": provenance,
    }
