"""Runs that stop, fill a disk or meet damaged inputs: SIGTERM, kill -9 of a process pool, syncfs before
'complete', collision-resistant input fingerprints, and error lines that say where.

Every test drives the real CLI on real zarr stores written here: in a subprocess (``lncc``) for the runs that
are signalled, killed or traced and those whose error line up to the process's exit is checked, and as the
command's app in this process (``invoke_cli``) for the inspections, the runs that set up or check an output and
the refusals before anything is written; outputs are compared with the in-memory NCC of the same images (and,
on crops, with the textbook reference).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import zarr

from pipeline import local_ncc
from pipeline.io import write_array
from pipeline.testing import reference_ncc, sample_pair, write_config
from support import blocks_done, chunk_files, invoke_cli
from support import run_cli as lncc

pytestmark = pytest.mark.slow

BIG = 4096  # 256 blocks of 256 x 256: ~3 s on one thread, long enough to be signalled part way
LOCK = ".lncc.lock"


# ----------------------------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def big_pair(tmp_path_factory) -> tuple[np.ndarray, np.ndarray, str, str]:
    """A 4096 x 4096 uint8 pair in 256 x 256 chunks (zstd), written once for the module."""
    root = tmp_path_factory.mktemp("big")
    ref, mov = sample_pair((BIG, BIG), "uint8", seed=11)
    return (ref, mov, write_array(str(root / "big.zarr"), ref, chunks=(256, 256), name="ref"),
            write_array(str(root / "big.zarr"), mov, chunks=(256, 256), name="mov"))


@pytest.fixture
def small_pair(tmp_path: Path) -> tuple[np.ndarray, np.ndarray, str, str]:
    ref, mov = sample_pair((300, 340), "uint8", seed=3)
    return (ref, mov, write_array(str(tmp_path / "in.zarr"), ref, chunks=(64, 64), name="ref"),
            write_array(str(tmp_path / "in.zarr"), mov, chunks=(64, 64), name="mov"))


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A 256 KiB tmpfs mounted at ``tmp_path / "disk"`` (skipped where mounting is not allowed)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        if subprocess.run(["umount", str(disk)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def _start(cfg: Path, cwd: Path) -> subprocess.Popen:
    """`lncc run CFG --quiet` in the background, its stderr to ``cwd / "stderr.txt"`` (a file, not a pipe:
    pool processes that outlive the run would hold a pipe open)."""
    with (cwd / "stderr.txt").open("w") as stderr:
        return subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(cfg), "--quiet"], cwd=cwd,
                                stdout=subprocess.DEVNULL, stderr=stderr)


def _stop(proc: subprocess.Popen, sig: int, cwd: Path, timeout: float = 60) -> str:
    """Send ``sig`` to the run, wait for it to end, and return its stderr."""
    proc.send_signal(sig)
    proc.wait(timeout=timeout)
    return (cwd / "stderr.txt").read_text()


def _pool_processes(pid: int) -> list:
    """The process-pool workers among ``pid``'s descendants."""
    import psutil

    found = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            cmdline = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "spawn_main" in cmdline or "forkserver" in cmdline:
            found.append(child)
    return found


def _alive(procs: list) -> list:
    """Those of ``procs`` still running (a zombie no one reaps has exited: it does not count)."""
    import psutil

    alive = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except psutil.NoSuchProcess:
            pass
    return alive


def _wait_until_running(proc: subprocess.Popen, out: Path, blocks: int, pool: int = 0, timeout: float = 90):
    """Wait until the run at ``proc`` has ``blocks`` ledger entries (and ``pool`` pool processes); those."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        workers = _pool_processes(proc.pid) if pool else []
        if blocks_done(out) >= blocks and len(workers) >= pool:
            return workers
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended (exit {proc.returncode}) before it could be stopped"
    raise AssertionError(f"no {blocks} blocks done (and {pool} pool processes) within {timeout} s")


def _lock_files(root: Path) -> list[Path]:
    """Every lock file (and lock temporary) under ``root``, wherever a version of lncc puts it."""
    return [p for p in root.rglob("*") if p.name.startswith(LOCK) or p.name.endswith(".lock")]


def _one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith("lncc: error: "), stderr
    return lines[0]


def _check_against_reference(result: np.ndarray, ref: np.ndarray, mov: np.ndarray, window: int,
                             y: slice, x: slice) -> None:
    """The textbook two-pass NCC on a crop (with its halo) agrees with ``result`` there."""
    r = window // 2
    crop = (slice(y.start - r, y.stop + r), slice(x.start - r, x.stop + r))
    expected = reference_ncc(ref[crop], mov[crop], window)[r:-r, r:-r]
    np.testing.assert_allclose(result[y, x], expected, atol=2e-5, rtol=0)


# ----------------------------------------------------------------------------------------------- SIGTERM


def test_sigterm_stops_like_ctrl_c_releases_the_lock_and_the_rerun_resumes_exactly(tmp_path: Path, big_pair):
    """SIGTERM part way (as a batch system sends): exit 143 with one 'terminated by SIGTERM' line, no lock
    left, the output reported incomplete, and a rerun computes just the missing blocks to the exact map."""
    ref, mov, ref_url, mov_url = big_pair
    out = tmp_path / "out.zarr"
    cfg = write_config(tmp_path / "c.yaml", reference=ref_url, moving=mov_url, output=str(out), window=7,
                       chunks={"y": 256, "x": 256}, compute={"scheduler": "threads", "workers": 1})
    proc = _start(cfg, tmp_path)
    try:
        _wait_until_running(proc, out, blocks=5)
        stderr = _stop(proc, signal.SIGTERM, tmp_path)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, (proc.returncode, stderr)
    line = _one_error_line(stderr)
    assert line.startswith("lncc: error: terminated by SIGTERM"), line
    assert not (out / LOCK).exists() and not _lock_files(tmp_path)

    inspect = invoke_cli("inspect", str(out), cwd=tmp_path)
    assert inspect.returncode == 0, inspect.stderr
    assert inspect.stdout.splitlines()[0].startswith(f"{out}: incomplete")
    done = blocks_done(out)
    assert 5 <= done < 256

    rerun = lncc("run", str(cfg), cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resumed: {256 - done} of 256 blocks computed" in rerun.stdout
    assert "complete (256 of 256 blocks)" in invoke_cli("inspect", str(out), cwd=tmp_path).stdout
    result = zarr.open_array(str(out / "ncc"))[...]
    np.testing.assert_array_equal(result, local_ncc(ref, mov, 7))
    _check_against_reference(result, ref, mov, 7, slice(1000, 1060), slice(2030, 2090))  # across block edges


# --------------------------------------------------------------------------------------- process pools


@contextlib.contextmanager
def _processes_run(tmp_path: Path, big_pair):
    """A `lncc run` with scheduler: processes (2 workers), once 2 blocks are done and its 2 pool processes run:
    (process, pool processes, output, config). Whatever this test leaves alive is killed afterwards."""
    _, _, ref_url, mov_url = big_pair
    out = tmp_path / "out.zarr"
    cfg = write_config(tmp_path / "c.yaml", reference=ref_url, moving=mov_url, output=str(out), window=7,
                       chunks={"y": 256, "x": 256}, compute={"scheduler": "processes", "workers": 2})
    proc = _start(cfg, tmp_path)
    workers = []
    try:
        workers = _wait_until_running(proc, out, blocks=2, pool=2, timeout=120)
        yield proc, workers, out, cfg
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for worker in _alive(workers):  # the processes this test started, if an assertion failed
            worker.kill()


def _outlived(workers, seconds: float) -> list:
    deadline = time.monotonic() + seconds
    while _alive(workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    return _alive(workers)


def test_kill_minus_9_of_a_processes_run_takes_its_pool_processes_with_it(tmp_path: Path, big_pair):
    """kill -9 of `lncc run` with scheduler: processes: its pool processes are gone within 5 s (they used to
    keep computing, orphaned, for the rest of the run)."""
    with _processes_run(tmp_path, big_pair) as (proc, workers, _, _):
        assert len(_alive(workers)) == 2
        _stop(proc, signal.SIGKILL, tmp_path)
        left = _outlived(workers, 5)
        assert not left, f"pool processes {[p.pid for p in left]} outlived their run by 5 s"


def test_sigterm_of_a_processes_run_exits_143_and_leaves_no_pool_process(tmp_path: Path, big_pair):
    """SIGTERM of a run with scheduler: processes: exit 143 with one line, its pool processes end with it,
    the lock is released, and the rerun resumes to the exact map."""
    ref, mov = big_pair[:2]
    with _processes_run(tmp_path, big_pair) as (proc, workers, out, cfg):
        stderr = _stop(proc, signal.SIGTERM, tmp_path)
        left = _outlived(workers, 3)
    assert proc.returncode == 143, (proc.returncode, stderr)
    assert _one_error_line(stderr).startswith("lncc: error: terminated by SIGTERM")
    assert not left, f"pool processes {[p.pid for p in left]} outlived their run"
    assert not _lock_files(tmp_path)
    done = blocks_done(out)
    rerun = lncc("run", str(cfg), "--set", "compute.scheduler=threads", cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resumed: {256 - done} of 256 blocks computed" in rerun.stdout
    np.testing.assert_array_equal(zarr.open_array(str(out / "ncc"))[...], local_ncc(ref, mov, 7))


# ----------------------------------------------------------------------------------------------- syncfs


_SYSCALL = re.compile(r"^(\d+)\s+(syncfs|rename|renameat|renameat2)\((.*)$")


def test_syncfs_of_the_outputs_file_system_comes_between_the_last_block_and_complete(tmp_path: Path,
                                                                                     small_pair):
    """Traced with strace: a successful syncfs of the output's file system is called after the last chunk or
    ledger file is renamed into place and before the group's zarr.json is renamed to say 'complete'."""
    if shutil.which("strace") is None:
        pytest.skip("strace is not on PATH")
    _, _, ref_url, mov_url = small_pair
    out = tmp_path / "out.zarr"
    cfg = write_config(tmp_path / "c.yaml", reference=ref_url, moving=mov_url, output=str(out),
                       chunks={"y": 64, "x": 64})
    log = tmp_path / "strace.log"
    traced = subprocess.run(["strace", "-f", "-y", "-e", "trace=syncfs,rename,renameat,renameat2", "-o", str(log),
                             sys.executable, "-m", "pipeline.cli", "run", str(cfg), "--quiet"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert traced.returncode == 0, traced.stderr
    prov = json.JSONDecoder().raw_decode(invoke_cli("inspect", str(out), cwd=tmp_path).stdout.split("\n", 1)[1])[0]
    assert prov["status"] == "complete"

    device = os.stat(out).st_dev
    group_marker = str(out / "zarr.json")
    syncs, marker_renames, data_renames = [], [], []
    for i, line in enumerate(log.read_text().splitlines()):
        match = _SYSCALL.match(line)
        if not match:
            continue  # signals, exits, '<... resumed>' halves
        name, args = match.group(2), match.group(3)
        if name == "syncfs":
            fd_path = re.match(r"\d+<(.*?)>", args)
            ok = line.rstrip().endswith("= 0") or "<unfinished ...>" in line
            if fd_path and ok and os.path.exists(fd_path.group(1)) and os.stat(fd_path.group(1)).st_dev == device:
                syncs.append(i)
            continue
        paths = re.findall(r'"((?:[^"\\]|\\.)*)"', args)
        if len(paths) < 2:
            continue
        target = os.path.normpath(os.path.join(tmp_path, paths[-1]))
        if target == group_marker:
            marker_renames.append(i)
        elif target.startswith(str(out / "ncc") + os.sep) or target.startswith(str(out / "_lncc") + os.sep):
            data_renames.append(i)
    assert data_renames, "no chunk or ledger file renamed into the output: strace saw nothing of the writes"
    assert marker_renames, "the group's zarr.json was never renamed into place"
    last_data, complete = max(data_renames), max(marker_renames)
    assert last_data < complete
    assert any(last_data < s < complete for s in syncs), (
        f"no syncfs on the output's file system between the last block write (log line {last_data}) and "
        f"'complete' (log line {complete}); syncfs calls at {syncs}")


# ----------------------------------------------------------------------------------- input fingerprints


def _crc_preserving_edit(data: bytes, edits: dict[int, int], at: int) -> bytes:
    """``data`` with the byte at each key of ``edits`` XORed with its value, and the 4 bytes at ``at`` XORed so
    that the file's CRC-32 is unchanged.

    CRC-32 is affine over GF(2): for equal lengths crc(x ^ d) = crc(x) ^ crc(d) ^ crc(0...0), so the
    compensation c must satisfy L(c) = L(edits) with L(d) = crc(d) ^ crc(0...0) linear; L of each of the 32
    bits of the 4 bytes spans the 32-bit space, and Gaussian elimination finds c.
    """
    n = len(data)
    zero = zlib.crc32(bytes(n))

    def linear(d: bytes) -> int:
        return zlib.crc32(d) ^ zero

    delta = bytearray(n)
    for pos, value in edits.items():
        delta[pos] ^= value
    target = linear(bytes(delta))
    basis: dict[int, tuple[int, int]] = {}  # pivot bit -> (vector whose highest bit is the pivot, which bits)
    for bit in range(32):
        unit = bytearray(n)
        unit[at + bit // 8] = 1 << (bit % 8)
        vector, combo = linear(bytes(unit)), 1 << bit
        while vector and (vector.bit_length() - 1) in basis:
            v, c = basis[vector.bit_length() - 1]
            vector, combo = vector ^ v, combo ^ c
        if vector:
            basis[vector.bit_length() - 1] = (vector, combo)
    solution = 0
    while target:
        v, c = basis[target.bit_length() - 1]  # KeyError: these 4 bytes cannot compensate (never for CRC-32)
        target, solution = target ^ v, solution ^ c
    for k in range(4):
        delta[at + k] ^= (solution >> (8 * k)) & 0xFF
    return bytes(a ^ b for a, b in zip(data, delta))


def test_an_edit_that_keeps_the_chunk_files_crc32_is_still_seen_and_recomputed(tmp_path: Path):
    """12 pixels of an uncompressed input chunk changed, plus 4 bytes that keep the file's CRC-32: the rerun
    recomputes (not 'up to date') and the output is the NCC of the changed input, not the stale one."""
    ref, mov = sample_pair((256, 256), "uint8", seed=8)
    group = zarr.open_group(str(tmp_path / "raw.zarr"), mode="w", zarr_format=3)
    urls = {}
    for name, image in (("ref", ref), ("mov", mov)):
        array = group.create_array(name, shape=image.shape, chunks=(64, 64), dtype=image.dtype, compressors=None,
                                   dimension_names=("y", "x"))
        array[...] = image
        urls[name] = str(tmp_path / "raw.zarr" / name)
    chunk = tmp_path / "raw.zarr" / "mov" / "c" / "1" / "2"
    original = chunk.read_bytes()
    assert original == mov[64:128, 128:192].tobytes()  # the chunk file is the raw pixels, uncompressed

    out = tmp_path / "out.zarr"
    cfg = write_config(tmp_path / "c.yaml", reference=urls["ref"], moving=urls["mov"], output=str(out), window=7,
                       chunks={"y": 64, "x": 64})
    first = invoke_cli("run", str(cfg), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    stale = zarr.open_array(str(out / "ncc"))[...]

    edits = {64 * (20 + k) + 30 + 2 * k: 0x55 for k in range(12)}  # 12 pixels on a diagonal
    edited = _crc_preserving_edit(original, edits, at=64 * 40 + 10)
    chunk.write_bytes(edited)
    assert zlib.crc32(edited) == zlib.crc32(original) and len(edited) == len(original)
    assert sum(a != b for a, b in zip(edited, original)) >= 13  # the 12 pixels and the compensation

    changed = zarr.open_array(urls["mov"])[...]
    assert int((changed != mov).sum()) >= 13
    rerun = invoke_cli("run", str(cfg), cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert "computed:" in rerun.stdout and "up to date" not in rerun.stdout, rerun.stdout
    result = zarr.open_array(str(out / "ncc"))[...]
    assert not np.array_equal(result, stale)
    np.testing.assert_array_equal(result, local_ncc(ref, changed, 7))
    _check_against_reference(result, ref, changed, 7, slice(70, 120), slice(140, 200))


# ------------------------------------------------------------------------------------ errors name where


def test_a_corrupt_input_chunk_is_exit_2_naming_the_chunk_file(tmp_path: Path, small_pair):
    """An input chunk file overwritten with garbage: exit 2, one line naming that file and saying the array
    is damaged (not just zstd's 'invalid input data'); no lock is left behind."""
    _, _, ref_url, mov_url = small_pair
    chunk = Path(mov_url) / "c" / "2" / "3"
    assert chunk.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"  # a zstd frame: the input is compressed
    chunk.write_bytes(np.random.default_rng(0).integers(0, 256, 700, dtype=np.uint8).tobytes())
    out = tmp_path / "out.zarr"
    cfg = write_config(tmp_path / "c.yaml", reference=ref_url, moving=mov_url, output=str(out),
                       chunks={"y": 64, "x": 64})
    result = lncc("run", str(cfg), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    line = _one_error_line(result.stderr)
    assert str(chunk) in line and "damaged" in line, line
    assert not _lock_files(tmp_path)


def test_a_full_disk_is_exit_1_naming_the_file_with_no_traceback(tmp_path: Path, tiny_disk: Path):
    """A compressed output that outgrows a 256 KiB disk: exit 1, one line naming a file inside the output and
    'No space left on device', no traceback, the lock released and the output left incomplete (four times,
    so that the disk fills at more than one kind of write: a chunk, a checksum, a ledger entry)."""
    ref, mov = sample_pair((512, 512), "uint8", seed=4)
    ref_url = write_array(str(tmp_path / "in.zarr"), ref, chunks=(128, 128), name="ref")
    mov_url = write_array(str(tmp_path / "in.zarr"), mov, chunks=(128, 128), name="mov")
    out = tiny_disk / "out.zarr"
    # Small blocks: a block's chunk file takes about as many pages of the tmpfs as its checksum and ledger
    # entry files, so the disk fills at any of the three kinds of write.
    cfg = write_config(tmp_path / "c.yaml", reference=ref_url, moving=mov_url, output=str(out),
                       chunks={"y": 32, "x": 32}, compressor="zstd")
    # Which write meets the full disk first depends on timing: three runs, each from an empty disk.
    for attempt in range(3):
        result = lncc("run", str(cfg), cwd=tmp_path)
        assert result.returncode == 1, (attempt, result.returncode, result.stdout, result.stderr)
        line = _one_error_line(result.stderr)
        assert "No space left on device" in line, line
        assert re.search(re.escape(str(out)) + r"/[^\s'\"]+", line), f"run {attempt}: no path inside {out} in: {line}"
        assert not _lock_files(tiny_disk)
        inspect = invoke_cli("inspect", str(out), cwd=tmp_path)
        assert "incomplete" in inspect.stdout.splitlines()[0], inspect.stdout + inspect.stderr
        shutil.rmtree(out)


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(bytes|B|kB|KB|KiB|MB|MiB|GB|GiB)\b")
_UNITS = {"bytes": 1, "B": 1, "kB": 1e3, "KB": 1e3, "KiB": 2**10, "MB": 1e6, "MiB": 2**20, "GB": 1e9,
          "GiB": 2**30}


def _sizes(line: str) -> list[tuple[float, float]]:
    """Each size in ``line`` as (bytes, rounding error allowed by the digits shown)."""
    found = []
    for number, unit in _SIZE.findall(line):
        decimals = len(number.split(".")[1]) if "." in number else 0
        found.append((float(number) * _UNITS[unit], 0.5 * 10**-decimals * _UNITS[unit]))
    return found


def test_an_uncompressed_output_that_cannot_fit_is_refused_before_anything_is_written(tmp_path: Path,
                                                                                      tiny_disk: Path):
    """compressor: none on a 256 KiB disk for a 1 MiB map: exit 2 at once, one line giving what the output
    needs and what is free (both right to the digits shown), and nothing but an empty folder left."""
    ref, mov = sample_pair((512, 512), "uint8", seed=4)
    ref_url = write_array(str(tmp_path / "in.zarr"), ref, chunks=(128, 128), name="ref")
    mov_url = write_array(str(tmp_path / "in.zarr"), mov, chunks=(128, 128), name="mov")
    out = tiny_disk / "out.zarr"
    cfg = write_config(tmp_path / "c.yaml", reference=ref_url, moving=mov_url, output=str(out),
                       chunks={"y": 128, "x": 128}, compressor="none")
    free = shutil.disk_usage(tiny_disk).free
    result = invoke_cli("run", str(cfg), cwd=tmp_path)
    assert result.returncode == 2, (result.returncode, result.stderr)
    line = _one_error_line(result.stderr)
    assert "free" in line and str(out) in line, line
    sizes = _sizes(line)
    assert len(sizes) >= 2, f"expected the size needed and the size free in: {line}"
    (needed, needed_err), (shown_free, free_err) = sizes[0], sizes[1]
    assert abs(needed - 512 * 512 * 4) <= needed_err + 0.05 * 512 * 512 * 4, line
    assert abs(shown_free - free) <= free_err + 16 * 2**10, line  # the run's lock file takes a page
    assert not out.exists() or not list(out.iterdir())
    assert [p.name for p in tiny_disk.iterdir()] in ([], ["out.zarr"])


def test_force_onto_a_disk_too_small_keeps_the_complete_output_untouched(tmp_path: Path, tiny_disk: Path):
    """A complete output, then `run --force` of a config whose uncompressed map cannot fit there: exit 2,
    and the old output is still complete, bit for bit, with its provenance (nothing deleted first)."""
    small_ref, small_mov = sample_pair((128, 128), "uint8", seed=1)
    big_ref, big_mov = sample_pair((512, 512), "uint8", seed=4)
    inputs = tmp_path / "in.zarr"
    urls = {name: write_array(str(inputs), image, chunks=(64, 64), name=name) for name, image in (
        ("small_ref", small_ref), ("small_mov", small_mov), ("big_ref", big_ref), ("big_mov", big_mov))}
    out = tiny_disk / "out.zarr"
    small = write_config(tmp_path / "small.yaml", reference=urls["small_ref"], moving=urls["small_mov"],
                         output=str(out), window=5, chunks={"y": 64, "x": 64}, compressor="none")
    big = write_config(tmp_path / "big.yaml", reference=urls["big_ref"], moving=urls["big_mov"], output=str(out),
                       window=7, chunks={"y": 64, "x": 64}, compressor="none")
    made = invoke_cli("run", str(small), "--quiet", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    before = invoke_cli("inspect", str(out), cwd=tmp_path)
    assert before.stdout.startswith(f"{out}: complete (4 of 4 blocks)"), before.stdout
    files = chunk_files(out)
    assert len(files) == 4 + 1  # four chunks and the array's zarr.json

    refused = invoke_cli("run", str(big), "--force", cwd=tmp_path)
    assert refused.returncode == 2, (refused.returncode, refused.stderr)
    line = _one_error_line(refused.stderr)
    assert "free" in line, line

    after = invoke_cli("inspect", str(out), cwd=tmp_path)
    assert after.returncode == 0, after.stderr
    assert after.stdout == before.stdout  # the same state line and the same provenance
    assert invoke_cli("inspect", str(out), "--verify", cwd=tmp_path).stdout == before.stdout  # every block intact
    assert chunk_files(out) == files
    np.testing.assert_array_equal(zarr.open_array(str(out / "ncc"))[...], local_ncc(small_ref, small_mov, 5))
    assert not _lock_files(tiny_disk)
