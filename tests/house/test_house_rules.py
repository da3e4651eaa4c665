"""The house's size rules (scripts/check_house.py) catch what they promise to, and the package keeps them; what
a worker process loads."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _checker():
    spec = importlib.util.spec_from_file_location("check_house", ROOT / "scripts" / "check_house.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _function(name: str, code_lines: int, docstring_lines: int = 0, decorator: str = "") -> str:
    doc = ['    """' + "\n".join(["    doc"] * max(docstring_lines - 2, 0)) + '\n    """'] if docstring_lines else []
    body = [f"    x{i} = {i}" for i in range(code_lines - 1)]
    return "\n".join(([decorator] if decorator else []) + [f"def {name}():"] + doc + body) + "\n"


def test_a_long_function_and_a_long_module_are_breaches(tmp_path):
    check = _checker()
    package = tmp_path / "pipeline"
    package.mkdir()
    (package / "ok.py").write_text(_function("fits", 60, docstring_lines=40))  # the docstring does not count
    (package / "long.py").write_text(_function("too_long", 61))
    (package / "kernel.py").write_text("import numba\n\n\n" + _function("loop", 200, decorator="@numba.njit"))
    (package / "big.py").write_text("\n".join(f"x{i} = {i}" for i in range(450)) + "\n")
    check.ROOT = tmp_path
    found = check.breaches(package)
    assert len(found) == 2, found
    assert any("long.py:1: too_long has 61 lines of code" in line for line in found)
    assert any("big.py: 450 lines" in line for line in found)


def test_the_package_keeps_the_house_rules():
    assert _checker().breaches(ROOT / "pipeline") == []


@pytest.mark.slow
def test_worker_processes_do_not_load_the_registration_estimators():
    """A worker imports pipeline.job (its tasks' home) but never estimates: scikit-image and scipy.signal would
    cost each worker ~50 MB of its compute.memory budget (a LocalCluster run under a 450 MB budget stalled)."""
    probe = "import sys, pipeline.job, pipeline.chunked.tasks; print(sorted(m for m in ('skimage', 'scipy.signal') " \
            "if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"
