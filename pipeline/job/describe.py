"""What an lncc output holds: complete or not, how much is done and intact, its map's statistics, the applied
shift(s) and its provenance; and those statistics and shifts as the lines ``lncc inspect`` prints.

The statistics come from the block ledger (``_lncc/blocks``: one stats vector per block, see
:mod:`pipeline.core.stats`), never from the map, so describing a map of any size reads a few kilobytes per
block; the merging and quantile maths are :func:`pipeline.core.stats.describe_stats`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import io
from ..core.stats import describe_stats
from ..errors import InputError

__all__ = ["describe_output", "report_lines"]

#: Width of the text histogram's longest bar: with its bin range and share a line stays within 80 columns.
_BAR = 50


def describe_output(url: str, *, verify: bool = False, storage_options: dict[str, Any] | None = None
                    ) -> dict[str, Any]:
    """Describe an lncc output without changing it.

    Every block the ledger counts is checked: its entry must be valid and its
    chunk files present; with ``verify``, their values are also read back and
    compared with the checksum written with them. The statistics cover the
    blocks found usable, so those of an incomplete or damaged output are of
    the blocks done so far.

    ``storage_options`` are the fsspec options for a URL output; ``lncc inspect``
    uses the defaults (credentials and endpoint from the environment).

    Returns
    -------
    dict
        Strict JSON (non-finite numbers as None, apart from the provenance as
        stored): ``state`` (``complete``, ``incomplete`` or ``damaged``: the
        output says complete, but some blocks are missing or do not match
        their checksums), ``blocks_done`` (usable blocks), ``blocks_damaged``,
        ``blocks_total``, ``statistics`` (None until a block is done; else
        :func:`pipeline.core.stats.describe_stats`' dict plus ``blocks``, the
        blocks it covers), ``registration`` (None for an unregistered run; else
        the applied shift(s), how they were found, and where they were read)
        and ``provenance`` (the group's ``lncc`` attribute).

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
        "statistics": _statistics(url, done, storage_options),
        "registration": _registration(url, provenance, storage_options),
        "encoding": _encoding(url, provenance, storage_options),
        "provenance": provenance,
    }


def _encoding(url: str, provenance: dict[str, Any], storage_options) -> dict[str, Any] | None:
    """How the map is stored (encoding, precision, compressor) and its pyramid; None if ``ncc`` is unreadable."""
    try:
        found = io.output_encoding(url, storage_options=storage_options)
    except Exception:  # noqa: BLE001 - a damaged or missing ncc array: the blocks' state already says so
        return None
    layout = io.read_levels(provenance)
    found["multiscale"] = None if layout is None else {"levels": layout[0], **(provenance.get("pyramid") or {})}
    return _strict(found)


def _statistics(url: str, done: np.ndarray, storage_options) -> dict[str, Any] | None:
    """The map's statistics over the usable blocks, from their ledger entries; None while no block is usable."""
    if not done.any():
        return None  # also when the ledger is absent or of another layout: usable_blocks found none then
    ledger = io.read_ledger(url, storage_options=storage_options)
    if ledger.shape[:-1] != done.shape:
        raise InputError(f"{url!r} changed while it was inspected (its block grid is now {ledger.shape[:-1]}, "
                         f"it was {done.shape}): a run is replacing it; inspect it again once that run is done")
    stats = describe_stats(ledger, where=done)  # a block whose entry came since usable_blocks looked is left out
    return _strict({**stats, "blocks": int(done.sum())})


def _registration(url: str, provenance: dict[str, Any], storage_options) -> dict[str, Any] | None:
    """The applied shift(s): from the output's ``shift`` variable, or the provenance's record if it has none.

    Returns None for an unregistered run; else ``source`` (``shift variable``,
    or ``provenance`` when the variable is missing or unreadable), ``method``,
    ``interpolation``, ``origin`` (``estimated`` or ``given``), ``frames``
    (None for an image), ``shift`` (an image's ``[dy, dx]``) or ``shifts``
    (video: one per frame), ``dy`` and ``dx`` (their ``[min, max]``),
    ``correlation`` (the lowest correlation after registration of the
    estimates, None if given) and ``field`` (True when the output has the
    local method's ``shift_field``).
    """
    recorded = provenance.get("registration")
    recorded = recorded if isinstance(recorded, dict) else {}
    layers = provenance.get("layers") or []
    shifts, source = None, "shift variable"
    if "shift" in layers:
        try:
            shifts = io.read_layer(url, "shift", storage_options=storage_options)
        except Exception:  # noqa: BLE001 - a damaged layer: the provenance's record of the same shifts stands in
            shifts = None
    if shifts is None:
        shifts, source = recorded.get("shifts"), "provenance"
    if shifts is None:
        return None
    shifts = np.asarray(shifts, dtype=np.float64)
    video = shifts.ndim == 2
    quality = [e["correlation"] for e in recorded.get("estimates") or []
               if isinstance(e, dict) and isinstance(e.get("correlation"), (int, float))
               and math.isfinite(e["correlation"])]
    return _strict({
        "source": source, "method": recorded.get("method"), "interpolation": recorded.get("interpolation"),
        "origin": recorded.get("origin"), "frames": len(shifts) if video else None,
        "shift": None if video else shifts.tolist(), "shifts": shifts.tolist() if video else None,
        "dy": [float(np.min(shifts[..., 0])), float(np.max(shifts[..., 0]))],
        "dx": [float(np.min(shifts[..., 1])), float(np.max(shifts[..., 1]))],
        "correlation": min(quality) if quality else None, "field": "shift_field" in layers,
    })


def _strict(value: Any) -> Any:
    """``value`` with every non-finite float as None, so that it is strict JSON (``json.dumps`` writes NaN)."""
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def report_lines(report: dict[str, Any]) -> list[str]:
    """The lines ``lncc inspect`` prints after the provenance: the applied shift(s) and the map's statistics.

    Each line fits in 80 columns. ``report`` is :func:`describe_output`'s.
    """
    lines = ["", *_registration_lines(report["registration"]), *_encoding_lines(report.get("encoding"))]
    stats, total = report["statistics"], report["blocks_total"]
    if stats is None:
        return [*lines, f"ncc statistics: none yet, 0 of {total} blocks are done"]
    return [*lines, *_statistics_lines(stats, total, report["state"])]


def _encoding_lines(encoding: dict[str, Any] | None) -> list[str]:
    if encoding is None:
        return ["stored: unknown (the ncc array cannot be read)"]
    lines = [f"stored: {encoding['line']}"]
    pyramid = encoding.get("multiscale")
    if pyramid:
        lines.append(f"  multiscale: OME-Zarr {pyramid.get('ngff')} pyramid, levels 0..{pyramid['levels']} "
                     "(levels/ncc/K)")
    return lines


def _registration_lines(reg: dict[str, Any] | None) -> list[str]:
    if reg is None:
        return ["registered: no (registration method none: the moving image as stored)"]
    if reg["frames"] is None:
        text = f"shift (dy, dx) = ({reg['shift'][0]:+.3f}, {reg['shift'][1]:+.3f}) px"
    else:
        text = (f"{reg['frames']} frame shifts, dy {reg['dy'][0]:+.3f}..{reg['dy'][1]:+.3f}, "
                f"dx {reg['dx'][0]:+.3f}..{reg['dx'][1]:+.3f} px")
    how = ", ".join(str(v) for v in (reg["method"], reg["origin"], reg["interpolation"]) if v)
    quality = "" if reg["correlation"] is None else f"; correlation after registration {reg['correlation']:.3f}"
    lines = [f"registered: {text}", f"  {how}{quality}"]
    if reg["field"]:
        lines.append("  and a shift per tile: the output's shift_field (tile_y, tile_x, axis)")
    if reg["source"] != "shift variable":
        lines.append("  (read from the provenance: the output's shift variable is missing or unreadable)")
    if reg["frames"] is not None:
        lines.append("  per-frame shifts: lncc inspect --json, under registration.shifts")
    return lines


def _statistics_lines(stats: dict[str, Any], total: int, state: str) -> list[str]:
    """Coverage, mean and extremes, quantiles, shares and the text histogram of ``describe_output``'s stats."""
    blocks = stats["blocks"]
    whole = " (the whole map)" if blocks == total else ""
    lines = ["ncc statistics (from the block ledger, not the map):",
             f"  covering {blocks} of {total} blocks{whole}, {stats['pixels']:,} pixels"]
    if blocks < total:
        which = "the intact blocks (a rerun recomputes the others)" if state == "damaged" else \
            "the blocks done so far"
        lines.append(f"  PARTIAL: only {which}, not the whole map")
    number = lambda v, digits: "n/a" if v is None else f"{v:+.{digits}f}"  # noqa: E731
    lines.append(f"  mean {number(stats['mean'], 4)}   min {number(stats['min'], 4)}   "
                 f"max {number(stats['max'], 4)}")
    names = list(stats["quantiles"])
    lines.append("  quantiles " + "".join(f"{name[1:].lstrip('0') or '0':>6}%" for name in names))
    lines.append("            " + "".join(f"{number(stats['quantiles'][n], 3):>7}" for n in names))
    flat = "NaN" if stats["flat_value"] is None else number(stats["flat_value"], 3)
    lines.append(f"  pixels    finite {_percent(stats['finite_fraction'])}   flat (= {flat}) "
                 f"{_percent(stats['flat_fraction'])}   NaN/nodata {_percent(stats['nonfinite_fraction'])}")
    if stats["flat_value"] is None:
        lines.append("            (flat windows are NaN in this map: counted as NaN/nodata)")
    return lines + _histogram_lines(stats)


def _percent(fraction: float | None) -> str:
    return "n/a" if fraction is None else f"{100 * fraction:.2f}%"


def _histogram_lines(stats: dict[str, Any]) -> list[str]:
    """One line per bin: its range, a bar of '#' scaled to the largest bin, its share of the finite values."""
    edges, counts, finite = stats["histogram"]["edges"], stats["histogram"]["counts"], stats["finite"]
    if not finite:
        return ["  histogram: no finite values"]
    flat_bin = stats["histogram"]["flat_bin"]
    note = "" if flat_bin is None else f" (* holds the {stats['flat']:,} flat pixels)"
    lines = [f"  histogram of the finite values, % of them{note}:"]
    largest = max(counts)
    for k, count in enumerate(counts):
        close = "]" if k == len(counts) - 1 else ")"  # numpy's bins: the last one holds 1.0
        bar = "#" * (max(1, round(_BAR * count / largest)) if count else 0)  # a bin with a pixel shows
        share = 100 * count / finite
        share = f"{share:6.2f}" if share >= 0.005 or not count else " <0.01"
        lines.append(f"    [{edges[k]:+.1f}, {edges[k + 1]:+.1f}{close} {bar:<{_BAR}} {share}%"
                     + ("*" if k == flat_bin else ""))
    return lines
