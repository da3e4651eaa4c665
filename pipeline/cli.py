"""The ``lncc`` command: thin wrappers over :mod:`pipeline.config` and :mod:`pipeline.job`.

Exit codes: 0 success; 2 bad config or bad input (one line on stderr, nothing
written); 1 any other failure (one line on stderr; set ``LNCC_DEBUG=1`` for the
traceback).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

# lncc's parallelism is dask's threads, and it calls no BLAS. numpy's and scipy's OpenBLAS would each start
# a thread per core that spins after start-up, taking ~0.4 CPU-s from a 2-core run; dask's workers set the
# same limits. Set before anything imports numpy (the package's __init__ does not); a user's values win.
for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import typer  # noqa: E402

__all__ = ["app", "main"]

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Local normalized cross-correlation maps between image pairs, zarr to zarr.",
)

ConfigArg = Annotated[Path, typer.Argument(help="YAML config file (see configs/reference.yaml).", show_default=False)]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config key, e.g. --set window=9 --set compute.workers=2.",
                 metavar="KEY=VALUE", show_default=False),
]


#: The storage_options of the config being run, hidden from every error line: they may hold credentials.
_storage_options: dict | None = None


def _hide(storage_options: dict | None) -> None:
    global _storage_options
    _storage_options = storage_options


def _fail(code: int, message: str) -> None:
    if _storage_options:
        from .io import redact

        message = redact(message, _storage_options)
    typer.echo(f"lncc: error: {message}", err=True)
    _silence_abandoned_requests()
    raise typer.Exit(code)


def _silence_abandoned_requests() -> None:
    """Keep the error to its one line: requests to an object store that zarr left pending when a read
    failed are finalised at exit, and aiobotocore then raises from them ("Exception ignored in:
    <coroutine ...>" with a multi-line traceback). They have nothing left to report."""
    import inspect

    default = sys.unraisablehook

    def hook(unraisable) -> None:
        if not inspect.iscoroutine(unraisable.object):
            default(unraisable)

    sys.unraisablehook = hook


class Terminated(KeyboardInterrupt):
    """SIGTERM (what SLURM, PBS and Kubernetes send first), raised where SIGINT's KeyboardInterrupt would be:
    the run stops the same way, releasing its locks and leaving a resumable output."""

    def __init__(self, signal_name: str = "SIGTERM"):
        super().__init__(signal_name)
        self.signal_name = signal_name


def _on_terminate(signum, frame) -> None:
    import signal

    signal.signal(signum, signal.SIG_DFL)  # a second SIGTERM ends the process at once
    raise Terminated(signal.Signals(signum).name)


def _stdout_closed() -> bool:
    """True when stdout is a pipe whose reader has gone (``lncc inspect OUT | head``), so that a
    BrokenPipeError from anything else (a socket, a subprocess) is still reported as a failure."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll() (Windows) or no real stdout: trust the error
        return True


def _quit_quietly() -> None:
    """Python's documented recipe for SIGPIPE: point stdout at devnull, so the interpreter's final flush
    of what is still buffered does not fail again, and exit 0 (the reader had all it wanted)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    raise typer.Exit(0)


def _guarded(func):
    """Run ``func`` turning errors into one stderr line and the documented exit code.

    When stdout is closed early (piped into ``head``), exit 0 without a word.
    """
    from .errors import LnccError

    try:
        result = func()
        sys.stdout.flush()  # a closed pipe shows here rather than in the interpreter's final flush
        return result
    except typer.Exit:
        raise
    except LnccError as exc:
        _fail(2, str(exc))
    except KeyboardInterrupt as exc:
        if isinstance(exc, Terminated):
            _fail(143, f"terminated by {exc.signal_name}; the output's lock is released and a rerun resumes "
                       "where this run stopped")
        _fail(1, "interrupted; a rerun resumes where this run stopped")
    except Exception as exc:
        if isinstance(exc, BrokenPipeError) and _stdout_closed():
            _quit_quietly()
        if os.environ.get("LNCC_DEBUG"):
            raise
        _fail(1, f"{type(exc).__name__}: {exc} (set LNCC_DEBUG=1 for the traceback)")


def _format_summary(summary) -> str:
    seconds = max(summary.seconds, 1e-9)
    lines = [
        f"lncc: {len(summary.pairs)} pair(s), {summary.pixels / 1e6:,.1f} Mpx in {summary.seconds:.2f} s "
        f"({summary.pixels / seconds / 1e6:,.1f} Mpx/s) after {summary.startup_seconds:.2f} s of start-up "
        f"(checks, outputs, kernel loading or compiling), peak RSS {summary.peak_rss_mb:,.0f} MB",
    ]
    for p in summary.pairs:
        q = p.quantiles
        repaired = f" ({p.damaged} damaged or missing blocks among them)" if p.damaged else ""
        state = {"up to date": "up to date, nothing to do",
                 "resume": f"resumed: {p.blocks_computed} of {p.blocks_total} blocks computed{repaired}",
                 "fresh": f"computed: {p.blocks_total} blocks"}[p.action]
        lines.append(f"  {p.output}  shape {tuple(p.shape)}  {state}")
        if p.channels is not None:
            lines.append(f"    colour: {p.channels}")
        if p.registration is not None:
            lines.append(f"    registered: {p.registration}")
        lines.append(
            f"    ncc mean {p.mean:+.4f}  q05 {q['q05']:+.3f}  q25 {q['q25']:+.3f}  median {q['q50']:+.3f}  "
            f"q75 {q['q75']:+.3f}  q95 {q['q95']:+.3f}  NaN {100 * p.nan_fraction:.2f}%"
        )
    return "\n".join(lines)


def _degenerate(summary) -> list[str]:
    """Warnings for maps that are mostly flat or NaN: they run fine and still tell nothing."""
    lines = []
    for p in summary.pairs:
        if p.flat_fraction + p.nan_fraction > 0.5:
            lines.append(f"{p.output}: {100 * p.flat_fraction:.0f}% of the map is flat (a window without variation "
                         f"in either image) and {100 * p.nan_fraction:.0f}% NaN (missing data, or flat with "
                         "flat: .nan); check that the inputs are the images meant (not empty or constant), their "
                         "nodata and masks, and the window")
    return lines


@app.command()
def run(
    config: ConfigArg,
    set_: SetOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no summary.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Recompute outputs even if up to date (lncc never deletes "
                                                        "what it did not write).")] = False,
) -> None:
    """Compute the local NCC map(s) described by CONFIG."""

    def body():
        from .config import load_config
        from .job import run as run_config

        cfg = load_config(config, set_ or [])
        _hide(cfg.storage_options)
        summary = run_config(cfg, force=force, progress=not quiet and sys.stderr.isatty())
        if not quiet:
            typer.echo(_format_summary(summary))
        for line in _degenerate(summary):
            typer.echo(f"lncc: warning: {line}", err=True)

    _guarded(body)


def _parse_chunks(text: str | None) -> dict[str, int] | None:
    """``y=512,x=512`` as {"y": 512, "x": 512}; a one-line usage error otherwise."""
    if not text:
        return None
    out = {}
    for part in text.split(","):
        name, sep, size = part.partition("=")
        if not sep or not name.strip() or not size.strip().isdigit() or int(size) < 1:
            _fail(2, f"--chunks expects NAME=SIZE pairs such as y=1024,x=1024, got {text!r}")
        out[name.strip()] = int(size)
    return out


def _parse_channels(text: str | None) -> str | int | None:
    if text is None:
        return None
    if text.isdigit():
        return int(text)
    if text not in ("luminance", "mean", "separate"):
        _fail(2, f"--channels expects luminance, mean, separate or a channel index, got {text!r}")
    return text


@app.command()
def ingest(
    source: Annotated[str, typer.Argument(help="Input to convert: a TIFF, image, video or zarr path, or a quoted "
                                               "glob of frame files such as 'frames/left_*.png'.",
                                          show_default=False)],
    dest: Annotated[str, typer.Argument(help="The zarr group to write, e.g. left.zarr.", show_default=False)],
    chunks: Annotated[str | None, typer.Option("--chunks", help="Stored chunks by dim, e.g. y=1024,x=1024 "
                                               "(default 1024 per image axis, 1 frame).")] = None,
    zarr_format: Annotated[int, typer.Option("--zarr-format", help="Zarr format, 2 or 3.")] = 3,
    channels: Annotated[str | None, typer.Option("--channels", help="Colour: luminance (default), mean, separate "
                                                 "or a channel index.")] = None,
    series: Annotated[int, typer.Option("--series", help="TIFF image series.")] = 0,
    level: Annotated[int, typer.Option("--level", help="TIFF pyramid level (0: full resolution).")] = 0,
    compressor: Annotated[str, typer.Option("--compressor", help="zstd, lz4 or none.")] = "zstd",
    force: Annotated[bool, typer.Option("--force", help="Replace an earlier ingest of another source or settings "
                                                        "(never anything lncc did not write).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no summary.")] = False,
) -> None:
    """Convert SOURCE once into a chunked zarr group DEST (resumable: run it again after a kill)."""

    def body():
        from .job import ingest as ingest_input

        bar = None
        if not quiet and sys.stderr.isatty():
            bar = typer.progressbar(length=1, label="ingest", file=sys.stderr)

        def progress(done: int, total: int) -> None:
            if bar is not None:
                bar.length = total
                bar.update(done - bar.pos)

        try:
            summary = ingest_input(source, dest, chunks=_parse_chunks(chunks), zarr_format=zarr_format,
                                   channels=_parse_channels(channels), series=series, level=level,
                                   compressor=compressor, force=force, progress=progress)
        finally:
            if bar is not None:
                bar.render_finish()
        if not quiet:
            typer.echo(summary.describe())

    _guarded(body)


@app.command()
def preview(
    output: Annotated[str, typer.Argument(help="An lncc output (its zarr group).", show_default=False)],
    out: Annotated[Path, typer.Option("-o", "--out", help="The PNG to write.")] = Path("preview.png"),
    with_inputs: Annotated[bool, typer.Option("--with-inputs", help="The reference, the (registered) moving image "
                                                                    "and the map side by side.")] = False,
    frame: Annotated[int | None, typer.Option("--frame", help="Video: the frame to draw (default 0).")] = None,
    frames: Annotated[str | None, typer.Option("--frames", help="Video: a grid of frames START:STOP[:STEP], "
                                               "e.g. 0:100:10 (at most 16).")] = None,
    size: Annotated[int, typer.Option("--size", help="Pixels along the picture's long side.")] = 1600,
) -> None:
    """Draw OUTPUT's NCC map into a PNG (out of core, from block means), optionally beside its inputs."""

    def body():
        from .job import preview as draw

        summary = draw(output, str(out), size=size, with_inputs=with_inputs, frame=frame, frames=frames)
        frames_text = f", frames {', '.join(map(str, summary.frames))}" if summary.frames else ""
        typer.echo(f"wrote {summary.path}: {output} ({summary.shape[0]} x {summary.shape[1]}"
                   f"{frames_text}), means of {summary.factor} x {summary.factor} pixels")

    _guarded(body)


@app.command()
def validate(
    config: ConfigArg,
    set_: SetOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Plan as run --force would (recompute up-to-date outputs)."
                                        )] = False,
) -> None:
    """Check CONFIG and its inputs without computing or writing anything."""

    def body():
        from .config import load_config
        from .job import plan_run

        cfg = load_config(config, set_ or [])
        _hide(cfg.storage_options)
        plans = plan_run(cfg, force=force, estimate=False)
        for plan in plans:
            typer.echo(f"ok: {plan.reference.url} x {plan.moving.url} -> {plan.pair.output.path}  "
                       f"shape {plan.reference.shape} {plan.reference.dtype}/{plan.moving.dtype}  "
                       f"dims {list(plan.reference.dims)}  chunks {plan.chunks}")

    _guarded(body)


@app.command()
def register(
    config: ConfigArg,
    set_: SetOpt = None,
    json_: Annotated[bool, typer.Option("--json", help="Print the estimates as JSON.")] = False,
) -> None:
    """Estimate (or check the given) registration of CONFIG's pairs and print it; writes nothing."""

    def body():
        from .config import load_config
        from .job import register_run

        cfg = load_config(config, set_ or [])
        _hide(cfg.storage_options)
        if not cfg.registration.enabled:
            _fail(2, "registration.method is none: nothing to register; set registration.method: translation "
                     "(or local) in the config, or --set registration.method=translation")
        results = register_run(cfg)
        if json_:
            import json

            typer.echo(json.dumps([_registration_record(plan, reg) for plan, reg in results], indent=2))
            return
        for plan, reg in results:
            typer.echo(f"{plan.reference.url} x {plan.moving.url}: {reg.describe()}")
            for line in _estimate_lines(reg):
                typer.echo(f"  {line}")

    _guarded(body)


def _registration_record(plan, reg) -> dict:
    import numpy as np

    record = {"reference": plan.pair.reference, "moving": plan.pair.moving, **reg.provenance()}
    if reg.field is not None:
        shifts = reg.field["shift"]
        record["field"] = {"tiles": list(shifts.shape[:-1]), "unknown_tiles": int(np.isnan(shifts[..., 0]).sum())}
    return record


def _estimate_lines(reg) -> list[str]:
    """The quality figures of the estimate(s): one line per image, a summary over the frames of a video."""
    lines = []
    if len(reg.estimates) == 1:
        e = reg.estimates[0]
        lines.append(f"quality: correlation {e['correlation']:.4f} after registration, gain {e['gain']:.3f}, "
                     f"offset {e['offset']:+.2f}, phase peak {e['peak']:.3f}, tile spread {e['spread']:.3f} px "
                     f"over {e['tiles']} tiles")
    elif reg.estimates:
        corr = [e["correlation"] for e in reg.estimates]
        spread = [e["spread"] for e in reg.estimates]
        lines.append(f"quality over {len(corr)} frames: correlation {min(corr):.4f}..{max(corr):.4f}, tile "
                     f"spread at most {max(spread):.3f} px")
    return lines


@app.command("job-script")
def job_script(config: ConfigArg, set_: SetOpt = None) -> None:
    """Print the batch script one job of CONFIG's jobqueue cluster would run (nothing is submitted)."""

    def body():
        from .config import load_config
        from .errors import ConfigError
        from .job.cluster import job_script as build

        cfg = load_config(config, set_ or [])
        if cfg.compute.jobqueue is None:
            raise ConfigError(f"config {str(config)!r} has compute.scheduler {cfg.compute.scheduler!r}; a job "
                              "script needs scheduler: jobqueue and a compute.jobqueue section "
                              "(see configs/cluster-slurm.yaml)")
        typer.echo(build(cfg.compute.jobqueue))

    _guarded(body)


@app.command()
def inspect(
    output: Annotated[str, typer.Argument(help="An lncc output (zarr group path or URL).", show_default=False)],
    verify: Annotated[bool, typer.Option("--verify", help="Also read every block back and compare it with its "
                                                          "checksum.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole report as one JSON document.")] = False,
) -> None:
    """Say whether OUTPUT is complete (and how much is done and intact), print its provenance, the applied shift
    and the map's statistics (from the block ledger: over the blocks done so far if incomplete).

    Exits 1 when the output says complete but blocks are missing or (with --verify) damaged; a rerun of its
    config recomputes just those blocks.
    """

    def body():
        import json

        from .job.describe import describe_output, report_lines

        report = describe_output(output, verify=verify)
        damaged = f", {report['blocks_damaged']} damaged or missing" if report["blocks_damaged"] else ""
        if as_json:
            typer.echo(json.dumps({"output": output, **report}, indent=2))
        else:
            typer.echo(f"{output}: {report['state']} ({report['blocks_done']} of {report['blocks_total']} blocks"
                       f"{damaged})")
            typer.echo(json.dumps(report["provenance"], indent=2, sort_keys=True))
            typer.echo("\n".join(report_lines(report)))
        if report["state"] == "damaged":
            raise typer.Exit(1)

    _guarded(body)


def main() -> None:
    """Console-script entry point."""
    # When a process-pool worker dies, multiprocessing's resource tracker (its own process, started
    # with these options) warns about leaked semaphores after lncc has reported the failure on one line.
    sys.warnoptions.append("ignore::UserWarning:multiprocessing.resource_tracker")
    import signal

    signal.signal(signal.SIGTERM, _on_terminate)
    app(prog_name="lncc")


if __name__ == "__main__":
    main()
