"""Kill lncc runs at random moments and check that no output ever claims more than it holds.

Usage::

    python scripts/kill_trials.py --trials 40          # ~5 min on 2 cores
    python scripts/kill_trials.py --trials 5 --size 1024

Each trial starts runs on one output (the same config, another window, or --force) and kills each one
at a random moment (SIGKILL, sometimes SIGTERM), one to three times. After every kill it checks the
output: if ``lncc inspect --verify`` says complete, the map must equal the in-memory map of the window
its provenance names. The trial then runs the first config to the end: the map must equal its in-memory
map bit for bit, and inspect --verify must say complete. It prints the counts, and exits 1 on any
violation.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import local_ncc  # noqa: E402
from pipeline.io import write_array  # noqa: E402
from pipeline.testing import sample_pair, write_config  # noqa: E402


def lncc(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=cwd, capture_output=True, text=True)


def check(out: Path, expected: dict[int, np.ndarray], cwd: Path) -> str | None:
    """None if the output claims nothing it does not hold, else what is wrong."""
    report = lncc("inspect", "--verify", str(out), cwd=cwd)
    if report.returncode == 2:  # nothing there yet (killed before the group was made)
        return None if "does not exist" in report.stderr else f"inspect: {report.stderr.strip()}"
    state = report.stdout.split("\n", 1)[0]
    if ": complete" not in state:
        return None
    window = json.loads(report.stdout.split("\n", 1)[1])["config"]["window"]
    values = zarr.open_array(str(out / "ncc"), mode="r")[...]
    return None if np.array_equal(values, expected[window]) else f"complete (window {window}) but values differ"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--size", type=int, default=2048, help="pair side (default 2048: 256 blocks of 128^2)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ref, mov = sample_pair((args.size, args.size), "uint8", seed=1)
        urls = [write_array(str(work / "in.zarr"), a, chunks=(128, 128), name=n) for a, n in ((ref, "ref"),
                                                                                           (mov, "mov"))]
        expected = {w: local_ncc(ref, mov, w) for w in (7, 9)}
        out = work / "out.zarr"
        config = write_config(work / "c.yaml", reference=urls[0], moving=urls[1], output=str(out), window=7,
                              chunks={"y": 128, "x": 128}, compute={"scheduler": "threads", "workers": 2})
        variants = [[], ["--set", "window=9"], ["--force"]]
        kills = violations = 0
        started = time.monotonic()
        for trial in range(args.trials):
            for _ in range(rng.randint(1, 3)):
                proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(config), "--quiet",
                                         *rng.choice(variants)], cwd=work, stderr=subprocess.DEVNULL)
                time.sleep(rng.uniform(0.3, 3.0))
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM if rng.random() < 0.25 else signal.SIGKILL)
                    kills += 1
                proc.wait()
                problem = check(out, expected, work)
                if problem:
                    violations += 1
                    print(f"trial {trial}: after a kill: {problem}", flush=True)
            final = lncc("run", str(config), "--quiet", cwd=work)
            values = zarr.open_array(str(out / "ncc"), mode="r")[...] if final.returncode == 0 else None
            verified = lncc("inspect", "--verify", str(out), cwd=work).stdout.split("\n", 1)[0]
            if final.returncode or not np.array_equal(values, expected[7]) or ": complete" not in verified:
                violations += 1
                print(f"trial {trial}: the final run: exit {final.returncode} {final.stderr.strip()} {verified}",
                      flush=True)
        print(f"{args.trials} trials, {kills} kills, {violations} violations, {time.monotonic() - started:.0f} s")
        sys.exit(1 if violations else 0)


if __name__ == "__main__":
    main()
