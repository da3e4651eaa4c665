"""Check the house's size rules: every module of pipeline/ under 450 lines, every function at most 60.

Usage::

    python scripts/check_house.py            # exit 1 and one line per breach

A function's length is its code, from its ``def`` line to its last line, without its docstring (a numpydoc
docstring documents; it is not what makes a function hard to read). The numba-compiled kernels are exempt:
they are long loops on purpose, kept whole so that numba compiles them as one. ``.ci/run`` runs this
before the tests, beside ruff and import-linter.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Lines a module of the package may have (fewer than).
MODULE_LINES = 450
#: Code lines a function may have (at most).
FUNCTION_LINES = 60


def _compiled(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    return any("numba" in ast.unparse(d) for d in node.decorator_list)


def _code_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    length = node.end_lineno - node.lineno + 1
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        length -= first.end_lineno - first.lineno + 1
    return length


def breaches(package: Path) -> list[str]:
    """One line per module or function of ``package`` that breaks a size rule."""
    found = []
    for path in sorted(package.rglob("*.py")):
        text = path.read_text()
        name = path.relative_to(ROOT)
        lines = len(text.splitlines())
        if lines >= MODULE_LINES:
            found.append(f"{name}: {lines} lines, the most a module may have is {MODULE_LINES - 1}; split it by job")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not _compiled(node):
                code = _code_lines(node)
                if code > FUNCTION_LINES:
                    found.append(f"{name}:{node.lineno}: {node.name} has {code} lines of code, the most is "
                                 f"{FUNCTION_LINES}; split it into named steps")
    return found


def main() -> int:
    found = breaches(ROOT / "pipeline")
    for line in found:
        print(line)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
