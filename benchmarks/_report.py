"""What every benchmark records next to its numbers: machine, date, exact command.

Figures from a shared 2-core machine mean little without the load they ran
under, so every section carries the same header, written in one place. Scripts
run as ``python benchmarks/X.py`` have this folder on ``sys.path`` and import
this module as ``_report``. Sections go to benchmarks/RESULTS.md, or to the
file named by ``$SONA_BENCH_RESULTS`` (smoke runs that must not touch it).
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

__all__ = [
    "RESULTS",
    "append_section",
    "command",
    "loadavg",
    "machine",
    "percentiles",
    "results_path",
    "section",
]

RESULTS = Path(__file__).with_name("RESULTS.md")


def results_path() -> Path:
    """Where sections are appended: ``$SONA_BENCH_RESULTS`` when set, else benchmarks/RESULTS.md."""
    return Path(os.environ.get("SONA_BENCH_RESULTS") or RESULTS)


def loadavg() -> str:
    """The 1, 5 and 15-minute load averages, e.g. ``"1.52 1.31 1.20"``."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine(*, torch_threads: int | str | None = None, load_at_start: str | None = None) -> str:
    """One line: OS and architecture, CPU count, Python, torch threads if given, load average now.

    ``load_at_start`` (a :func:`loadavg` taken before the run) adds the load the run started under.
    """
    parts = [
        platform.platform(),
        f"{os.cpu_count()} CPUs",
        f"{platform.python_implementation()} {platform.python_version()}",
    ]
    if torch_threads is not None:
        parts.append(f"torch threads {torch_threads}")
    if load_at_start is None:
        parts.append(f"load average {loadavg()}")
    else:
        parts.append(f"load average at start {load_at_start}, at end {loadavg()}")
    return ", ".join(parts)


def command() -> str:
    """The exact invocation, as run from the repository root."""
    return shlex.join(["python", f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]])


def percentiles(samples: Sequence[float] | np.ndarray, qs: Sequence[int] = (50, 99)) -> dict[int, float]:
    """``{q: q-th percentile}`` of ``samples``, as plain floats."""
    a = np.asarray(samples, dtype=float)
    return {q: float(np.percentile(a, q)) for q in qs}


def section(
    title: str,
    body: str | Sequence[str],
    *,
    notes: Sequence[str] = (),
    torch_threads: int | str | None = None,
    load_at_start: str | None = None,
) -> str:
    """A RESULTS.md section: dated title, machine, command, one bullet per note, then ``body``."""
    text = body if isinstance(body, str) else "\n".join(body)
    header = [
        f"## {title} — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"- machine: {machine(torch_threads=torch_threads, load_at_start=load_at_start)}",
        f"- command: `{command()}`",
        *(f"- {note}" for note in notes),
    ]
    return "\n".join(header) + "\n\n" + text.strip("\n") + "\n"


def append_section(
    title: str,
    body: str | Sequence[str],
    *,
    notes: Sequence[str] = (),
    torch_threads: int | str | None = None,
    load_at_start: str | None = None,
) -> str:
    """Append :func:`section` to :func:`results_path` in one write and return the text written."""
    text = section(title, body, notes=notes, torch_threads=torch_threads, load_at_start=load_at_start)
    with results_path().open("a", encoding="utf-8") as fh:
        fh.write("\n" + text)
    return text
