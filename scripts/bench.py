"""Benchmark lncc against the textbook implementations, and end to end zarr -> zarr.

Usage::

    python scripts/bench.py                    # full run (~5 min on 2 cores)
    python scripts/bench.py --size 2048 --e2e-size 4096   # quick look
    python scripts/bench.py --sections kernel e2e         # only some of: kernel e2e ops scale register formats outputs
    python scripts/bench.py --markdown docs/benchmarks-history.md   # also append the tables to the history

After a run appended to docs/benchmarks-history.md, update the current table of BENCHMARKS.md by hand.

Everything is measured in one process run, so the ratios compare like with like
on a noisy machine. Mpx/s = million output pixels per second. Errors are the
max |difference| to the scipy float64 textbook on windows with variance > 0.5.
Run it alone: other load on the machine skews every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import textwrap
import time
from datetime import date
from pathlib import Path

import numpy as np
from scipy.ndimage import uniform_filter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.core.kernel import local_ncc_numpy  # noqa: E402
from pipeline.core.threads import available_cores  # noqa: E402
from pipeline.testing import sample_pair  # noqa: E402


def naive(a: np.ndarray, b: np.ndarray, window: int) -> np.ndarray:
    """The classic answer: a double loop over windows (valid region only)."""
    r = window // 2
    out = np.zeros(a.shape)
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    for i in range(r, a.shape[0] - r):
        for j in range(r, a.shape[1] - r):
            p1 = a[i - r : i + r + 1, j - r : j + r + 1]
            p2 = b[i - r : i + r + 1, j - r : j + r + 1]
            s = p1.std() * p2.std()
            out[i, j] = ((p1 - p1.mean()) * (p2 - p2.mean())).mean() / s if s > 0 else 0.0
    return out


def textbook(a: np.ndarray, b: np.ndarray, window: int, dtype=np.float64) -> np.ndarray:
    """scipy uniform_filter five times (means of x, y, x^2, y^2, xy)."""
    x = a.astype(dtype)
    y = b.astype(dtype)
    f = lambda v: uniform_filter(v, window, mode="reflect")  # noqa: E731
    mx, my = f(x), f(y)
    vx = f(x * x) - mx * mx
    vy = f(y * y) - my * my
    cov = f(x * y) - mx * my
    with np.errstate(invalid="ignore", divide="ignore"):
        out = cov / np.sqrt(np.clip(vx, 0, None) * np.clip(vy, 0, None))
    return np.where((vx > 0) & (vy > 0), out, 0.0), vx, vy


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def kernel_table(size: int, windows: list[int], repeats: int) -> tuple[list[list[str]], dict[int, float]]:
    a, b = sample_pair((size, size), "uint8", seed=0)
    crop_a, crop_b = a[:96, :96], b[:96, :96]
    rows = []
    ours_rate = {}
    cells: dict[str, list[str]] = {k: [] for k in ("naive", "scipy64", "scipy32", "ours", "ours1", "ours_f32")}
    errors: dict[str, list[float]] = {"scipy32": [], "ours": [], "ours_f32": []}
    px = a.size
    for w in windows:
        r = w // 2
        valid = (96 - 2 * r) ** 2
        t = best_of(lambda w=w: naive(crop_a, crop_b, w), 1)
        cells["naive"].append(f"{valid / t / 1e6:.3f}")
        t = best_of(lambda w=w: textbook(a, b, w), 1)
        cells["scipy64"].append(f"{px / t / 1e6:.1f}")
        ref, vx, vy = textbook(a, b, w)
        mask = (vx > 0.5) & (vy > 0.5)
        t = best_of(lambda w=w: textbook(a, b, w, np.float32), 1)
        cells["scipy32"].append(f"{px / t / 1e6:.1f}")
        errors["scipy32"].append(float(np.abs(textbook(a, b, w, np.float32)[0] - ref)[mask].max()))
        local_ncc_numpy(a, b, w)  # compile / warm
        errors["ours"].append(float(np.abs(local_ncc_numpy(a, b, w) - ref)[mask].max()))
        t = best_of(lambda w=w: local_ncc_numpy(a, b, w, threads=1), repeats)
        cells["ours1"].append(f"{px / t / 1e6:.1f}")
        af, bf = a.astype(np.float32), b.astype(np.float32)
        local_ncc_numpy(af, bf, w)
        t = best_of(lambda af=af, bf=bf, w=w: local_ncc_numpy(af, bf, w), repeats)
        cells["ours_f32"].append(f"{px / t / 1e6:.1f}")
        errors["ours_f32"].append(float(np.abs(local_ncc_numpy(af, bf, w) - ref)[mask].max()))
    # The main row goes last and round-robin over the windows, so that a slow spell of this shared
    # VM (or the memory churn of the rows above) does not land on one window only.
    best = {w: float("inf") for w in windows}
    for _ in range(repeats):
        for w in windows:
            best[w] = min(best[w], best_of(lambda w=w: local_ncc_numpy(a, b, w), 1))
    for w in windows:
        ours_rate[w] = px / best[w] / 1e6
        cells["ours"].append(f"{ours_rate[w]:.1f}")
    labels = {
        "naive": "naive double loop over windows (96x96 crop)",
        "scipy64": "scipy uniform_filter x5, float64 (textbook)",
        "scipy32": "scipy uniform_filter x5, float32",
        "ours": "lncc kernel, uint8 input, 2 threads",
        "ours1": "lncc kernel, uint8 input, 1 thread",
        "ours_f32": "lncc kernel, float32 input, 2 threads",
    }
    errors["ours1"] = errors["ours"]  # same arithmetic, one thread
    fixed = {"naive": "exact (two-pass)", "scipy64": "reference"}
    for key, label in labels.items():
        rows.append([label, *cells[key], fixed.get(key) or f"{max(errors[key]):.1e}"])
    return rows, ours_rate


def make_e2e_pair(directory: Path, size: int, chunk: int) -> tuple[str, str]:
    """A size x size uint8 pair on disk, written block by block (never whole in memory)."""
    import dask.array as da

    from pipeline.io import write_array

    root = directory / f"pair-{size}.zarr"
    ref_url, mov_url = f"{root}/reference", f"{root}/moving"
    if (root / "moving" / "zarr.json").exists():
        return ref_url, mov_url
    blocks = size // chunk

    def block(which: int, block_id=None):
        seed = block_id[0] * blocks + block_id[1]
        return sample_pair((chunk, chunk), "uint8", seed=seed)[which]

    for which, name in ((0, "reference"), (1, "moving")):
        arr = da.map_blocks(block, which, chunks=((chunk,) * blocks, (chunk,) * blocks), dtype=np.uint8)
        write_array(str(root), arr, dims=("y", "x"), chunks=(chunk, chunk), name=name)
    return ref_url, mov_url


def e2e(directory: Path, out_dir: Path, size: int, window: int, chunk: int | None, workers: int,
        compute: dict | None = None) -> dict[str, float]:
    """One `lncc run` of the size^2 pair as a subprocess: its own timing and RSS, and the CPU-seconds of all its
    processes."""
    import resource

    ref_url, mov_url = make_e2e_pair(directory, size, 1024)
    out = out_dir / f"ncc-{size}.zarr"
    config = directory / "bench.yaml"
    chunks = f"chunks: {{y: {chunk}, x: {chunk}}}" if chunk else ""
    compute = compute or {"scheduler": "threads", "workers": workers}
    config.write_text(textwrap.dedent(f"""\
        reference: {ref_url}
        moving: {mov_url}
        output: {out}
        window: {window}
        {chunks}
        """) + f"compute: {json.dumps(compute)}\n")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(config), "--force"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise SystemExit(f"end-to-end run failed: {stderr}")
    shutil.rmtree(out, ignore_errors=True)
    # lncc prints its own peak RSS (all its processes) in the summary; take it from there.
    compute_s = float(stdout.split(" in ")[1].split(" s")[0].replace(",", ""))
    peak_mb = float(stdout.split("peak RSS ")[1].split(" MB")[0].replace(",", ""))
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "compute_s": compute_s, "mpx_s": size * size / compute_s / 1e6,
            "peak_rss_mb": peak_mb, "cpu_s": cpu_s, "summary": stdout}


def operations(directory: Path, size: int, window: int) -> list[str]:
    """What the safety of a run costs on the size^2 pair: input fingerprints (SHA-256 against the CRC-32 used
    before and XXH3-128), making the output durable (syncfs), and an up-to-date rerun that reads the whole
    output back against its checksums."""
    import hashlib
    import zlib

    import xxhash

    from pipeline.config import parse_config
    from pipeline.io import fingerprint, usable_blocks
    from pipeline.job import run

    ref_url, mov_url = make_e2e_pair(directory, size, 1024)
    files = [p for url in (ref_url, mov_url) for p in Path(url).rglob("*") if p.is_file()]
    stored = sum(p.stat().st_size for p in files)

    def digest_all(fn):
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda p: fn(p.read_bytes()), files))

    rows = []
    for label, fn in (("CRC-32 (before)", zlib.crc32), ("SHA-256 (now)", lambda d: hashlib.sha256(d).digest()),
                      ("XXH3-128", lambda d: xxhash.xxh3_128(d).digest())):
        rows.append(f"| {label} | {best_of(lambda fn=fn: digest_all(fn), 3):.3f} |")
    full = best_of(lambda: [fingerprint(u) for u in (ref_url, mov_url)], 3)
    out = directory / f"ops-{size}.zarr"
    shutil.rmtree(out, ignore_errors=True)
    config = parse_config({"reference": ref_url, "moving": mov_url, "output": str(out), "window": window})
    first = run(config)
    t = time.perf_counter()
    again = run(config)
    rerun = time.perf_counter() - t
    t = time.perf_counter()
    usable_blocks(str(out), deep=True)
    verify = time.perf_counter() - t
    shutil.rmtree(out, ignore_errors=True)
    assert again.pairs[0].action == "up to date"
    return ["", f"### Operations, {size} x {size} uint8 pair ({stored / 1e6:.0f} MB stored, page cache warm)", "",
            "| hashing every stored input chunk (4 threads) | s |", "|---|---|", *rows, "",
            f"- `fingerprint` of both inputs (listing, reads and SHA-256): {full:.3f} s.",
            f"- Durability (syncfs of the output's file system before it is marked complete): "
            f"{first.sync_seconds:.3f} s of a {first.seconds:.2f} s computation "
            f"({100 * first.sync_seconds / first.seconds:.0f}%).",
            f"- Up-to-date rerun in process: {rerun:.2f} s, of which reading the "
            f"{size * size * 4 / 1e9:.1f} GB map back against its block checksums {verify:.2f} s."]


def scale_out(args, kernel_rate: float) -> list[str]:
    """Gigapixel runs (threads and a LocalCluster, each with a memory budget) and a scaling table."""
    gp = args.scale_size
    lines = ["", f"### Scale out: {gp} x {gp} uint8 pair ({gp * gp / 1e9:.2f} gigapixel, zarr 3, 1024^2 input "
                 f"chunks, window {args.e2e_window}, output on disk, raw float32 map of {gp * gp * 4 / 1e9:.1f} GB)",
             "",
             f"Best of {args.e2e_repeats} runs (median in brackets). CPU s: user + system time of every process of "
             "the run (start-up included), per gigapixel pair.", "",
             "| scheduler | compute.memory | blocks | compute s | Mpx/s | vs threads | vs in-memory kernel | "
             "peak RSS, all processes | CPU s per gigapixel pair |", "|---|---|---|---|---|---|---|---|---|"]
    variants = [("threads, 2 threads", {"scheduler": "threads", "workers": 2, "memory": "2GB"}),
                ("local, 2 workers x 1 thread", {"scheduler": "local", "workers": 2, "threads_per_worker": 1,
                                                 "memory": "900MB"}),
                ("local, 1 worker x 2 threads", {"scheduler": "local", "workers": 1, "threads_per_worker": 2,
                                                 "memory": "1800MB"})]
    threads_rate = threads_mid = None
    for label, compute in variants:
        runs = sorted((e2e(args.data, args.data, gp, args.e2e_window, None, 2, compute)
                       for _ in range(args.e2e_repeats)), key=lambda r: r["compute_s"])
        res, mid = runs[0], runs[len(runs) // 2]
        threads_rate, threads_mid = threads_rate or res["mpx_s"], threads_mid or mid["mpx_s"]
        block = _blocks(res["summary"])
        lines.append(f"| {label} | {compute['memory']} | {block} | {res['compute_s']:.1f} ({mid['compute_s']:.1f}) | "
                     f"{res['mpx_s']:.0f} ({mid['mpx_s']:.0f}) | {res['mpx_s'] / threads_rate:.2f}x "
                     f"({mid['mpx_s'] / threads_mid:.2f}x) | {res['mpx_s'] / kernel_rate:.2f}x "
                     f"({mid['mpx_s'] / kernel_rate:.2f}x) | "
                     f"{max(r['peak_rss_mb'] for r in runs):.0f} MB | "
                     f"{min(r['cpu_s'] for r in runs) / (gp * gp / 1e9):.1f} |")
        print(lines[-1], flush=True)
    size = args.e2e_size
    lines += ["", f"#### Scaling, {size} x {size} uint8 pair (Mpx/s, one run each; peak RSS in brackets)", "",
              "| processing block | threads, 1 | threads, 2 | local, 1 worker | local, 2 workers |",
              "|---|---|---|---|---|"]
    for chunk in args.scale_chunks:
        cells = []
        for compute in ({"scheduler": "threads", "workers": 1}, {"scheduler": "threads", "workers": 2},
                        {"scheduler": "local", "workers": 1, "threads_per_worker": 1},
                        {"scheduler": "local", "workers": 2, "threads_per_worker": 1}):
            r = e2e(args.data, args.data, size, args.e2e_window, chunk, 2, compute)
            cells.append(f"{r['mpx_s']:.0f} ({r['peak_rss_mb']:.0f} MB)")
        lines.append(f"| {chunk}^2 | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    return lines


def make_shifted_pair(directory: Path, size: int, frames: int, shift=(7.3, -4.6)) -> tuple[str, str, np.ndarray]:
    """A uint8 pair whose moving image is the reference moved by a known subpixel shift, written block by block.

    The content is the camera photograph tiled with its period (512 px), so a Fourier shift of one tile is an
    exact subpixel shift of the whole plane; each 1024^2 block gets its own sensor noise. ``frames`` > 0 makes
    a ``(frames, size, size)`` video whose shift drifts from frame to frame. Returns the URLs and the shifts.
    """
    import dask.array as da

    from pipeline.io import write_array
    from pipeline.testing import camera

    name = f"shifted-{size}" + (f"-video-{frames}" if frames else "") + ".zarr"
    root = directory / name
    ref_url, mov_url = f"{root}/reference", f"{root}/moving"
    rng = np.random.default_rng(0)
    shifts = (np.array([shift]) if not frames else
              np.cumsum(rng.normal(0, 0.3, (frames, 2)), axis=0) + np.array(shift))
    if (root / "moving" / "zarr.json").exists():
        return ref_url, mov_url, shifts
    tile = camera().astype(np.float64)
    spectrum = np.fft.fftn(tile)
    from scipy.ndimage import fourier_shift

    chunk = min(size, 1024)
    blocks = size // chunk

    def block(which: int, block_id=None):
        t = block_id[0] if frames else 0
        noise = np.random.default_rng(int(np.ravel_multi_index(block_id, (max(frames, 1), blocks, blocks)
                                                               [-len(block_id):])) * 2 + which)
        base = tile if which == 0 else 0.8 * np.fft.ifftn(fourier_shift(spectrum, -shifts[t])).real + 20
        image = np.tile(base, (chunk // 512, chunk // 512)) + noise.normal(0, 3, (chunk, chunk))
        out = np.clip(np.round(image), 0, 255).astype(np.uint8)
        return out[None] if frames else out

    chunks = (((1,) * frames,) if frames else ()) + ((chunk,) * blocks, (chunk,) * blocks)
    dims = (("t",) if frames else ()) + ("y", "x")
    for which, array in ((0, "reference"), (1, "moving")):
        data = da.map_blocks(block, which, chunks=chunks, dtype=np.uint8)
        write_array(str(root), data, dims=dims, chunks=tuple(c[0] for c in chunks), name=array)
    return ref_url, mov_url, shifts


def registration(args) -> list[str]:
    """Registered against unregistered runs on a gigapixel pair, and per-frame estimation of a video."""
    import pipeline.config as config_
    from pipeline.job import register_run

    gp = args.scale_size
    ref_url, mov_url, shifts = make_shifted_pair(args.data, gp, 0)
    lines = ["", f"### Registration: {gp} x {gp} uint8 pair ({gp * gp / 1e9:.2f} gigapixel) moved by "
                 f"({shifts[0][0]}, {shifts[0][1]}) px, window {args.e2e_window}, 2 threads, `compute.memory: 2GB`, "
                 "output on disk",
             "", f"Best of {args.e2e_repeats} runs (median in brackets).", "",
             "| run | estimate s | compute s | Mpx/s (estimate included) | vs unregistered | peak RSS | "
             "shift found (error px) |", "|---|---|---|---|---|---|---|"]
    cfg = {"reference": ref_url, "moving": mov_url, "output": str(args.data / f"ncc-shifted-{gp}.zarr"),
           "window": args.e2e_window, "compute": {"scheduler": "threads", "workers": 2, "memory": "2GB"}}
    estimated = []
    for _ in range(args.e2e_repeats):
        t = time.perf_counter()
        found = register_run(config_.parse_config({**cfg, "registration": {"method": "translation"}}))[0][1]
        estimated.append((time.perf_counter() - t, found.shifts))
    estimate_s = min(e[0] for e in estimated)
    error = float(np.abs(estimated[0][1] - shifts[0]).max())
    base = None
    for label, registration_ in (("unregistered", None), ("registered, cubic", {"method": "translation"})):
        runs = sorted((_config_run(args.data, cfg, registration_) for _ in range(args.e2e_repeats)),
                      key=lambda r: r["compute_s"])
        res, mid = runs[0], runs[len(runs) // 2]
        extra = estimate_s if registration_ else 0.0
        rate, rate_mid = (gp * gp / (r["compute_s"] + extra) / 1e6 for r in (res, mid))
        base = base or (rate, rate_mid)
        found = f"({', '.join(f'{v:.3f}' for v in estimated[0][1])}) ({error:.3f})" if registration_ else "-"
        lines.append(f"| {label} | {extra:.2f} | {res['compute_s']:.2f} ({mid['compute_s']:.2f}) | {rate:.0f} "
                     f"({rate_mid:.0f}) | {rate / base[0]:.2f}x ({rate_mid / base[1]:.2f}x) | "
                     f"{max(r['peak_rss_mb'] for r in runs):.0f} MB | {found} |")
        print(lines[-1], flush=True)
    lines.append("")
    lines.append(f"Estimating the shift: {estimate_s:.2f} s, {100 * estimate_s / base_compute(lines):.0f}% of the "
                 "unregistered run's compute time.")
    frames, side = args.video_frames, args.video_size
    ref_url, mov_url, shifts = make_shifted_pair(args.data, side, frames)
    vcfg = {"reference": ref_url, "moving": mov_url, "output": str(args.data / "ncc-video.zarr"),
            "registration": {"method": "translation"}}
    t = time.perf_counter()
    found = register_run(config_.parse_config(vcfg))[0][1]
    seconds = time.perf_counter() - t
    errors = np.abs(found.shifts - shifts).max(axis=1)
    lines += ["", f"Per-frame estimation of a {frames}-frame {side}^2 uint8 video (2 threads, reading the frames "
                  f"from zarr): {frames / seconds:.0f} frames/s ({seconds:.1f} s); largest error "
                  f"{errors.max():.3f} px, median {np.median(errors):.3f} px."]
    print("\n".join(lines[-2:]), flush=True)
    return lines


def _run_config(directory: Path, name: str, cfg: dict) -> dict[str, float]:
    """One `lncc run --force` of ``cfg`` as a subprocess: its compute seconds and peak RSS."""
    config = directory / f"bench-{name}.yaml"
    config.write_text(json.dumps(cfg))
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", str(config), "--force"],
                          capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode:
        raise SystemExit(f"{name} run failed: {proc.stderr}")
    shutil.rmtree(cfg["output"], ignore_errors=True)
    stdout = proc.stdout
    return {"compute_s": float(stdout.split(" in ")[1].split(" s")[0].replace(",", "")), "wall_s": wall,
            "peak_rss_mb": float(stdout.split("peak RSS ")[1].split(" MB")[0].replace(",", ""))}


def _rate_cells(pixels: int, best: dict, mid: dict, base: float | None) -> tuple[str, float]:
    """The table cells "compute s | Mpx/s | vs the first row" of a best and a median run; and the first row's
    rate (``base``, or this row's when it is the first)."""
    rate, mid_rate = pixels / best["compute_s"] / 1e6, pixels / mid["compute_s"] / 1e6
    base = base or rate
    return (f"{best['compute_s']:.2f} ({mid['compute_s']:.2f}) | {rate:.0f} ({mid_rate:.0f}) | "
            f"{rate / base:.2f}x ({mid_rate / base:.2f}x)"), base


def _best(fn, repeats: int) -> tuple[dict, dict]:
    runs = sorted((fn() for _ in range(repeats)), key=lambda r: r["compute_s"])
    return runs[0], runs[len(runs) // 2]


def formats(args) -> list[str]:
    """End to end from TIFF files against the same pair from zarr; a 1080p video pair decoded and correlated."""
    import tifffile
    import zarr


    size, data, out = args.e2e_size, args.data, args.data / "formats-out.zarr"
    ref_url, mov_url = make_e2e_pair(data, size, 1024)
    urls = {"zarr, 1024^2 chunks, uncompressed": (ref_url, mov_url)}
    tiffs = [data / f"pair-{size}-{n}-zstd512.tif" for n in ("reference", "moving")]
    packed = data / f"pair-{size}-zstd512.zarr"
    if not all(t.exists() for t in tiffs) or not (packed / "moving" / "zarr.json").exists():
        for url, tif, name in zip((ref_url, mov_url), tiffs, ("reference", "moving")):
            image = zarr.open_array(url, mode="r")[...]
            tifffile.imwrite(tif, image, tile=(512, 512), compression="zstd")
            from zarr.codecs import ZstdCodec
            group = zarr.open_group(str(packed), mode="a")
            group.create_array(name=name, shape=image.shape, chunks=(512, 512), dtype=image.dtype,
                               compressors=ZstdCodec(level=3), dimension_names=("y", "x"), overwrite=True)[...] = image
            del image
    urls["zarr, 512^2 chunks, zstd"] = (f"{packed}/reference", f"{packed}/moving")
    urls["TIFF, 512^2 tiles, zstd"] = tuple(str(t) for t in tiffs)
    lines = ["", f"### Inputs of other formats: {size} x {size} uint8 pair end to end (window {args.e2e_window}, "
                 f"{available_cores()} threads; best of {args.e2e_repeats}, median in brackets)", "",
             "| inputs | compute s | Mpx/s | vs zarr 1024^2 | peak RSS |", "|---|---|---|---|---|"]
    base = None
    for label, (ref, mov) in urls.items():
        cfg = {"reference": ref, "moving": mov, "output": str(out), "window": args.e2e_window}
        best, mid = _best(lambda cfg=cfg: _run_config(data, "formats", cfg), args.e2e_repeats)
        cells, base = _rate_cells(size * size, best, mid, base)
        lines.append(f"| {label} | {cells} | {best['peak_rss_mb']:.0f} MB |")
        print(lines[-1], flush=True)
    lines += gigapixel_tiff(args)
    video = video_formats(args)
    print("\n".join(video), flush=True)
    return lines + video


def gigapixel_tiff(args) -> list[str]:
    """Peak RSS and speed of a 1-gigapixel pair from 512^2-tiled zstd TIFFs against the same pair from zarr, under
    one memory budget (``compute.memory: 2GB``)."""
    import tifffile
    import zarr

    size = args.scale_size
    ref_url, mov_url, _ = make_shifted_pair(args.data, size, 0)
    tiffs = [args.data / f"shifted-{size}-{n}-zstd512.tif" for n in ("reference", "moving")]
    for url, tif in zip((ref_url, mov_url), tiffs):
        if tif.exists():
            continue
        array = zarr.open_array(url, mode="r")

        def tiles(array=array):  # row band by row band: never the whole image in memory
            for y in range(0, size, 512):
                band = array[y:y + 512]
                for x in range(0, size, 512):
                    yield band[:, x:x + 512]

        tifffile.imwrite(tif, tiles(), shape=(size, size), dtype=np.uint8, tile=(512, 512), compression="zstd",
                         bigtiff=True)
    out = str(args.data / "gigapixel-out.zarr")
    lines = ["", f"### A {size} x {size} uint8 pair (1.07 gigapixel) from TIFF and from zarr, `compute.memory: 2GB`, "
                 f"window {args.e2e_window}, {available_cores()} threads (best of 3, median in brackets)", "",
             "| inputs | compute s | Mpx/s | peak RSS |", "|---|---|---|---|"]
    for label, (ref, mov) in (("zarr, 1024^2 chunks, uncompressed", (ref_url, mov_url)),
                              ("TIFF, 512^2 tiles, zstd (BigTIFF)", tuple(str(t) for t in tiffs))):
        cfg = {"reference": ref, "moving": mov, "output": out, "window": args.e2e_window,
               "compute": {"memory": "2GB"}}
        best, mid = _best(lambda cfg=cfg: _run_config(args.data, "gigapixel", cfg), 3)
        lines.append(f"| {label} | {best['compute_s']:.2f} ({mid['compute_s']:.2f}) | "
                     f"{size * size / best['compute_s'] / 1e6:.0f} ({size * size / mid['compute_s'] / 1e6:.0f}) | "
                     f"{max(best['peak_rss_mb'], mid['peak_rss_mb']):.0f} MB |")
        print(lines[-1], flush=True)
    return lines


def make_video_pair(directory: Path, frames: int, height: int = 1080, width: int = 1920) -> list[Path]:
    """A 1080p H.264 pair (yuv420p, GOP 50) of textured frames drifting by a pixel a frame, encoded once."""
    import av

    paths = [directory / f"video-{width}x{height}-{frames}-{n}.mp4" for n in ("reference", "moving")]
    if all(p.exists() for p in paths):
        return paths
    base = [sample_pair((height + frames, width + frames), "uint8", seed=11)[k] for k in (0, 1)]
    for path, image in zip(paths, base):
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libx264", rate=30)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"g": "50", "preset": "veryfast", "crf": "18"}
            for k in range(frames):
                grey = np.ascontiguousarray(image[k:k + height, k:k + width])
                frame = av.VideoFrame.from_ndarray(np.dstack([grey] * 3), format="rgb24")
                container.mux(stream.encode(frame))
            container.mux(stream.encode())
    return paths


def video_formats(args) -> list[str]:
    """Decode alone (lncc's reader, both videos, in order) and the whole run (decode + NCC + write), frames/s."""
    from pipeline.io import inspect_input, source_of

    frames = args.video_frames_1080
    paths = make_video_pair(args.data, frames)

    def decode() -> dict[str, float]:
        from pipeline.io import process_state

        process_state().videos.clear()  # no frames kept from the last repeat: every frame decoded anew
        sources = [source_of(inspect_input(str(p))) for p in paths]
        t = time.perf_counter()
        from concurrent.futures import ThreadPoolExecutor

        def read_all(src):
            for k in range(0, frames, 8):
                src[k:k + 8]
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(read_all, sources))
        return {"compute_s": time.perf_counter() - t}

    dec, dec_mid = _best(decode, 3)
    out = str(args.data / "video-out.zarr")
    cfg = {"reference": str(paths[0]), "moving": str(paths[1]), "output": out, "window": args.e2e_window}
    run_best, run_mid = _best(lambda: _run_config(args.data, "video", cfg), 3)
    ncc_only = frames / max(run_best["compute_s"] - dec["compute_s"], 1e-9)
    return ["", f"### Video: a 1920 x 1080 H.264 pair of {frames} frames (window {args.e2e_window}, "
                f"{available_cores()} cores; best of 3, median in brackets)", "",
            "| stage | seconds | frames/s (pairs) |", "|---|---|---|",
            f"| decode both videos (lncc's reader, luma plane) | {dec['compute_s']:.2f} ({dec_mid['compute_s']:.2f}) | "
            f"{frames / dec['compute_s']:.0f} ({frames / dec_mid['compute_s']:.0f}) |",
            f"| whole run: decode + NCC + write | {run_best['compute_s']:.2f} ({run_mid['compute_s']:.2f}) | "
            f"{frames / run_best['compute_s']:.0f} ({frames / run_mid['compute_s']:.0f}) |",
            f"| NCC + write (the run less the decode) | {run_best['compute_s'] - dec['compute_s']:.2f} | "
            f"{ncc_only:.0f} |", "", f"Peak RSS of the run: {run_best['peak_rss_mb']:.0f} MB."]


def base_compute(lines: list[str]) -> float:
    """The unregistered run's best compute seconds, from its table row."""
    row = next(line for line in lines if line.startswith("| unregistered"))
    return float(row.split("|")[3].split("(")[0])


def _config_run(directory: Path, cfg: dict, registration_: dict | None) -> dict[str, float]:
    """One `lncc run --force` of ``cfg`` (plus a registration section) as a subprocess."""
    config = directory / "bench-registration.yaml"
    config.write_text(json.dumps({**cfg, **({"registration": registration_} if registration_ else {})}))
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", str(config), "--force"],
                          capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"registration run failed: {proc.stderr}")
    shutil.rmtree(cfg["output"], ignore_errors=True)
    stdout = proc.stdout
    return {"compute_s": float(stdout.split(" in ")[1].split(" s")[0].replace(",", "")),
            "peak_rss_mb": float(stdout.split("peak RSS ")[1].split(" MB")[0].replace(",", ""))}


def _blocks(summary: str) -> str:
    try:
        return summary.split("computed: ")[1].split(" blocks")[0]
    except IndexError:
        return "?"


def disk_speed(directory: Path) -> float:
    """MB/s of a 1 GiB sequential write with fdatasync, as dd measures it."""
    target = directory / "dd-probe"
    proc = subprocess.run(["dd", "if=/dev/zero", f"of={target}", "bs=16M", "count=64", "conv=fdatasync"],
                          capture_output=True, text=True)
    target.unlink(missing_ok=True)
    try:
        line = proc.stderr.strip().splitlines()[-1]
        value, unit = line.rsplit(",", 1)[1].split()
        return float(value) * {"kB/s": 1e-3, "MB/s": 1.0, "GB/s": 1e3}.get(unit, 1.0)
    except (IndexError, ValueError):
        return float("nan")


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {available_cores()} cores, {mem:.0f} GiB, Python {platform.python_version()}"


def _tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def outputs(args) -> list[str]:
    """What the output settings cost: encodings, compression and the multiscale pyramid on the e2e pair; a
    1-gigapixel multiscale run and its preview."""
    size, data = args.e2e_size, args.data
    ref_url, mov_url = make_e2e_pair(data, size, 1024)
    out = data / "outputs-out.zarr"
    variants = [("float32 (default)", {}), ("float32, multiscale", {"multiscale": True}),
                ("float16", {"encoding": "float16"}), ("int16", {"encoding": "int16"}),
                ("int16, zstd level 3", {"encoding": "int16", "compressor": "zstd", "level": 3}),
                ("int16, multiscale", {"encoding": "int16", "multiscale": True})]
    lines = ["", f"### Output settings: {size} x {size} uint8 pair end to end (window {args.e2e_window}, "
                 f"{available_cores()} threads; best of 3, median in brackets)", "",
             "| output | compute s | Mpx/s | vs float32 | output size |", "|---|---|---|---|---|"]
    base = None
    for label, settings in variants:
        cfg = {"reference": ref_url, "moving": mov_url, "output": {"path": str(out), **settings},
               "window": args.e2e_window}
        sizes = []

        def one(cfg=cfg, sizes=sizes):
            config = data / "bench-outputs.yaml"
            config.write_text(json.dumps(cfg))
            proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", str(config), "--force"],
                                  capture_output=True, text=True)
            if proc.returncode:
                raise SystemExit(f"outputs run failed: {proc.stderr}")
            sizes.append(_tree_bytes(out))
            shutil.rmtree(out, ignore_errors=True)
            return {"compute_s": float(proc.stdout.split(" in ")[1].split(" s")[0].replace(",", ""))}

        best, mid = _best(one, 3)
        cells, base = _rate_cells(size * size, best, mid, base)
        lines.append(f"| {label} | {cells} | {max(sizes) / 1e9:.2f} GB |")
        print(lines[-1], flush=True)
    lines += gigapixel_preview(args)
    return lines


def gigapixel_preview(args) -> list[str]:
    """A 1-gigapixel multiscale run (``compute.memory: 2GB``), then ``lncc preview`` of it: from its pyramid,
    and of the same map without one (block means of level 0)."""
    size = args.scale_size
    ref_url, mov_url, _ = make_shifted_pair(args.data, size, 0)
    lines = ["", f"### Previews of a {size} x {size} map (1.07 gigapixel), `lncc preview --size 1600` as a "
                 "subprocess, wall time (best of 3)", "",
             "| map | run compute s | preview wall s | preview of |", "|---|---|---|---|"]
    for label, multiscale in (("multiscale (NGFF pyramid)", True), ("plain float32", False)):
        out = args.data / "gigapixel-preview.zarr"
        shutil.rmtree(out, ignore_errors=True)
        config = args.data / "bench-preview.yaml"
        config.write_text(json.dumps({"reference": ref_url, "moving": mov_url, "window": args.e2e_window,
                                      "output": {"path": str(out), "multiscale": multiscale},
                                      "compute": {"memory": "2GB"}}))
        proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", str(config), "--force"],
                              capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"gigapixel run failed: {proc.stderr}")
        compute_s = float(proc.stdout.split(" in ")[1].split(" s")[0].replace(",", ""))
        walls = []
        for _ in range(3):
            t = time.perf_counter()
            shown = subprocess.run([sys.executable, "-m", "pipeline.cli", "preview", str(out), "-o",
                                    str(args.data / "gigapixel-preview.png")], capture_output=True, text=True)
            walls.append(time.perf_counter() - t)
            if shown.returncode:
                raise SystemExit(f"preview failed: {shown.stderr}")
        lines.append(f"| {label} | {compute_s:.2f} | {min(walls):.2f} | {shown.stdout.strip().splitlines()[-1]} |")
        print(lines[-1], flush=True)
        shutil.rmtree(out, ignore_errors=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=4096, help="kernel benchmark image side (default 4096)")
    parser.add_argument("--windows", type=int, nargs="+", default=[3, 7, 31, 63])
    parser.add_argument("--repeats", type=int, default=5, help="best of N for the lncc kernel (default 5)")
    parser.add_argument("--e2e-size", type=int, default=16384, help="end-to-end pair side (default 16384)")
    parser.add_argument("--e2e-chunk", type=int, default=None, help="processing chunk (default: lncc's own)")
    parser.add_argument("--e2e-window", type=int, default=7)
    parser.add_argument("--e2e-repeats", type=int, default=5, help="best of N end-to-end runs (default 5)")
    parser.add_argument("--data", type=Path, default=ROOT / "bench-data", help="where the e2e pair is kept")
    parser.add_argument("--markdown", type=Path, help="append the tables to this file")
    parser.add_argument("--scale-size", type=int, default=32768, help="gigapixel pair side (default 32768)")
    parser.add_argument("--scale-chunks", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    parser.add_argument("--video-frames", type=int, default=1000, help="registration: video frames (default 1000)")
    parser.add_argument("--video-size", type=int, default=1024, help="registration: video frame side (default 1024)")
    parser.add_argument("--video-frames-1080", type=int, default=300, help="formats: 1080p video frames (default 300)")
    parser.add_argument("--sections", nargs="+",
                        default=["kernel", "e2e", "ops", "scale", "register", "formats", "outputs"],
                        choices=["kernel", "e2e", "ops", "scale", "register", "formats", "outputs"],
                        help="what to measure (default: all)")
    args = parser.parse_args()

    header = f"## {date.today().isoformat()}: {machine()}"
    print(header, flush=True)
    lines: list[str] = []
    kernel_rate = float("nan")
    if "kernel" in args.sections:
        rows, ours = kernel_table(args.size, args.windows, args.repeats)
        lines += [f"### Kernel, {args.size} x {args.size} uint8 pair, reflect borders (Mpx/s)", "",
                  "| implementation | " + " | ".join(f"{w}x{w}" for w in args.windows) + " | max error |",
                  "|---" * (len(args.windows) + 2) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        scipy_rates = [float(c) for c in rows[1][1 : 1 + len(args.windows)]]
        ratio = [ours[w] / s for w, s in zip(args.windows, scipy_rates)]
        spread = (max(ours.values()) - min(ours.values())) / max(ours.values())
        lines += ["", f"lncc / scipy float64 textbook: {', '.join(f'{r:.0f}x' for r in ratio)}; "
                      f"spread of lncc rate across windows: {100 * spread:.0f}%"]
        kernel_rate = ours.get(args.e2e_window) or next(iter(ours.values()))
        print("\n".join(lines), flush=True)

    args.data.mkdir(parents=True, exist_ok=True)
    workers = available_cores()
    if "e2e" in args.sections:
        chunk_text = f"{args.e2e_chunk}^2" if args.e2e_chunk else "default"
        e2e_lines = [
            "", f"### End to end zarr -> zarr, {args.e2e_size} x {args.e2e_size} uint8 pair "
                f"(zarr 3, 1024^2 input chunks, {chunk_text} processing chunks, window {args.e2e_window}, "
                f"{workers} threads)", "",
            f"Disk write speed (dd, 1 GiB, fdatasync): {disk_speed(args.data):.0f} MB/s. "
            f"The float32 map alone is {args.e2e_size ** 2 * 4 / 1e9:.1f} GB.", "",
            f"Best of {args.e2e_repeats} runs (median in brackets); this VM's timings vary by up to 2x from run "
            "to run.", "",
            "| output on | compute s | wall s (incl. start-up) | Mpx/s | vs in-memory kernel | peak RSS |",
            "|---|---|---|---|---|---|",
        ]
        targets = [("disk", args.data)] + ([("tmpfs (/dev/shm)", Path("/dev/shm"))]
                                           if Path("/dev/shm").is_dir() else [])
        for label, out_dir in targets:
            runs = sorted((e2e(args.data, out_dir, args.e2e_size, args.e2e_window, args.e2e_chunk, workers)
                           for _ in range(args.e2e_repeats)), key=lambda r: r["compute_s"])
            res, mid = runs[0], runs[len(runs) // 2]
            e2e_lines.append(f"| {label} | {res['compute_s']:.2f} ({mid['compute_s']:.2f}) | {res['wall_s']:.1f} | "
                             f"{res['mpx_s']:.0f} ({mid['mpx_s']:.0f}) | {res['mpx_s'] / kernel_rate:.2f}x "
                             f"({mid['mpx_s'] / kernel_rate:.2f}x) | {max(r['peak_rss_mb'] for r in runs):.0f} MB |")
        print("\n".join(e2e_lines), flush=True)
        lines += e2e_lines
    if "ops" in args.sections:
        ops_lines = operations(args.data, args.e2e_size, args.e2e_window)
        print("\n".join(ops_lines), flush=True)
        lines += ops_lines
    if "scale" in args.sections:
        lines += scale_out(args, kernel_rate)
    if "register" in args.sections:
        lines += registration(args)
    if "formats" in args.sections:
        lines += formats(args)
    if "outputs" in args.sections:
        lines += outputs(args)
    if args.markdown:
        with args.markdown.open("a") as fh:
            fh.write("\n" + header + "\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
