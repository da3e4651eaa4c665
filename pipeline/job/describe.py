"""What an lncc output holds: complete or not, how much is done and intact, and its provenance."""

from __future__ import annotations

from typing import Any

from .. import io
from ..errors import InputError

__all__ = ["describe_output"]


def describe_output(url: str, *, verify: bool = False, storage_options: dict[str, Any] | None = None
                    ) -> dict[str, Any]:
    """Describe an lncc output without changing it.

    Every block the ledger counts is checked: its entry must be valid and its
    chunk files present; with ``verify``, their values are also read back and
    compared with the checksum written with them.

    ``storage_options`` are the fsspec options for a URL output; ``lncc inspect``
    uses the defaults (credentials and endpoint from the environment).

    Returns
    -------
    dict
        ``state`` (``complete``, ``incomplete`` or ``damaged``: the output says
        complete, but some blocks are missing or do not match their checksums),
        ``blocks_done`` (usable blocks), ``blocks_damaged``, ``blocks_total`` and
        ``provenance`` (the group's ``lncc`` attribute).

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
    done, damaged = io.usable_blocks(url, deep=verify, storage_options=storage_options)
    says_complete = provenance.get("status") == "complete"
    if says_complete and done.size and done.all():
        verdict = "complete"
    else:
        verdict = "damaged" if says_complete else "incomplete"
    return {
        "state": verdict,
        "blocks_done": int(done.sum()),
        "blocks_damaged": damaged,
        "blocks_total": int(done.size),
        "provenance": provenance,
    }
