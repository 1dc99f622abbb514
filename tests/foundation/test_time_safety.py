"""No test builds time-sensitive data at import time, and the auth tests pass when run late.

A token minted while pytest collects ages until its test runs; on a loaded machine
that took minutes and turned "issued in the future" tokens valid. Two checks keep it
from coming back: a static one over every test module, and a run of the
token-heavy auth tests whose collection happens ten minutes "before" they run.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
#: Calls whose result depends on the current time, by their last dotted name part(s).
CLOCK_CALLS = {
    "time.time",
    "time.time_ns",
    "time.monotonic",
    "datetime.now",
    "datetime.utcnow",
    "date.today",
    "issue_token",
    "jwt.encode",
}


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _module_level_clock_calls(tree: ast.AST) -> list[tuple[int, str]]:
    """Clock calls that run on import: outside every function and lambda body."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            return  # runs when called, not on import (decorators and defaults aside)
        if isinstance(node, ast.Call):
            name = _dotted(node.func)
            if any(name == c or name.endswith("." + c) for c in CLOCK_CALLS):
                found.append((node.lineno, name))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def test_the_checker_finds_an_import_time_token() -> None:
    bad = ast.parse(
        "import time\nTOKEN = issue_token('u', 's')\nNOW = time.time()\ndef f():\n    return time.time()\n"
    )
    assert _module_level_clock_calls(bad) == [(2, "issue_token"), (3, "time.time")]


def test_no_test_module_reads_the_clock_at_import_time() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {name}()"
        for path in sorted(TESTS.rglob("*.py"))
        for line, name in _module_level_clock_calls(ast.parse(path.read_text(), str(path)))
    ]
    assert not offenders, "build these in a fixture or the test body:\n" + "\n".join(offenders)


@pytest.mark.slow
def test_auth_tests_pass_when_they_run_ten_minutes_after_collection() -> None:
    env = {**os.environ, "SONA_TEST_COLLECTION_AGE": "600"}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "tests._slow_collection",
            "tests/serving/test_auth_and_errors.py",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
