"""Start-up times a new user feels: `sona --help`, `import sona`, and `make quickstart` fresh and again.

Each figure is the median of fresh interpreter runs (nothing cached in the
process; the OS file cache is warm after the first run, as it is for a user
who runs a command twice). ``import torch`` is timed beside them: it is what
the lazy imports keep out of ``--help`` and dataset loading. The quickstart is
run as ``python -m serving.quickstart --check`` (train, serve, run the printed
curl commands, exit) in a fresh data directory, then again in the same one
(reuses model and adapters); its parent process's resident memory is sampled
while it runs (it trains in a child and only waits on the server).

Run: .venv/bin/python benchmarks/cli_speed.py [--repeat 5] [--no-quickstart] [--synthetic]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import append_section, loadavg

ROOT = Path(__file__).resolve().parents[1]
SONA = Path(sys.executable).with_name("sona")
HELP_COMMANDS = [
    [],
    ["fit"],
    ["train-adapters"],
    ["evaluate"],
    ["serve"],
    ["consume"],
    ["demo-events"],
    ["token"],
    ["db", "upgrade"],
]


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "BENTOML_DO_NOT_TRACK": "True", **extra}
    env.pop("KAFKA_BROKERS", None)
    env.pop("DATABASE_URL", None)
    return env


def _time(cmd: list[str], repeat: int, **env: str) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        done = subprocess.run(cmd, cwd=ROOT, env=_env(**env), capture_output=True, text=True)
        out.append(time.perf_counter() - t0)
        if done.returncode != 0:
            raise SystemExit(f"{cmd} failed: {done.stderr[-2000:]}")
    return out


def _quickstart(data_dir: Path, synthetic: bool) -> tuple[float, float]:
    """Wall seconds of one ``--check`` run and the parent's peak resident MB sampled every 0.1 s."""
    cmd = [sys.executable, "-m", "serving.quickstart", "--check", *(["--synthetic"] if synthetic else [])]
    with tempfile.TemporaryFile() as log:  # not a pipe: nobody reads it while the run goes on
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=_env(SONA_DATA_DIR=str(data_dir)), stdout=log, stderr=subprocess.STDOUT
        )
        peak_kb = 0
        status = Path(f"/proc/{proc.pid}/status")
        while proc.poll() is None:
            try:
                line = next(x for x in status.read_text().splitlines() if x.startswith("VmRSS:"))
                peak_kb = max(peak_kb, int(line.split()[1]))
            except (OSError, StopIteration):
                pass
            time.sleep(0.1)
        seconds = time.perf_counter() - t0
        log.seek(0)
        output = log.read().decode(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"quickstart failed ({proc.returncode}):\n{output[-3000:]}")
    return seconds, peak_kb / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-quickstart", action="store_true")
    ap.add_argument(
        "--synthetic", action="store_true", help="quickstart on synthetic data instead of ml-100k"
    )
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    start_load = loadavg()
    py = sys.executable
    ml100k = ROOT.parent / "shared" / "datasets" / "ml-100k"
    rows: list[tuple[str, list[float]]] = [("`sona --help`", _time([str(SONA), "--help"], args.repeat))]
    sub = {" ".join(c): _time([str(SONA), *c, "--help"], args.repeat) for c in HELP_COMMANDS[1:]}
    slowest = max(sub, key=lambda c: statistics.median(sub[c]))
    rows.append((f"slowest subcommand `--help` (`sona {slowest} --help`, of {len(sub)})", sub[slowest]))
    rows.append(("`python -c 'import sona'`", _time([py, "-c", "import sona"], args.repeat)))
    probe = (
        "import sys, sona\n"
        f"sona.datasets.load_movielens({str(ml100k)!r})\n"
        "assert 'torch' not in sys.modules\n"
    )
    if ml100k.is_dir():
        rows.append(
            (
                "`import sona` + `load_movielens(ml-100k)` (torch not loaded)",
                _time([py, "-c", probe], args.repeat),
            )
        )
    rows.append(
        (
            "`python -c 'import torch'` (what the lazy imports avoid)",
            _time([py, "-c", "import torch"], args.repeat),
        )
    )
    rows.append(
        (
            "`python -c 'from sona import Sona'` (loads torch)",
            _time([py, "-c", "from sona import Sona"], args.repeat),
        )
    )

    lines = ["| what | median s | min s | runs |", "|---|---:|---:|---:|"]
    lines += [f"| {name} | {statistics.median(t):.2f} | {min(t):.2f} | {len(t)} |" for name, t in rows]
    notes = [
        f"process niceness {os.nice(0)} (other jobs shared the machine)",
        "every `sona <command> --help` median: "
        + ", ".join(f"{c} {statistics.median(t):.2f}" for c, t in sub.items()),
    ]
    if not args.no_quickstart:
        with tempfile.TemporaryDirectory(prefix="sona-qs-") as tmp:
            data = Path(tmp) / "data"
            fresh, fresh_mb = _quickstart(data, args.synthetic)
            again, again_mb = _quickstart(data, args.synthetic)
        what = "synthetic" if args.synthetic or not ml100k.is_dir() else "ml-100k"
        lines += [
            "",
            f"| quickstart on {what} (`serving.quickstart --check`) | wall s | parent peak RSS MB |",
            "|---|---:|---:|",
            f"| fresh data dir (fit, 100 adapters, server start, 3 curls) | {fresh:.1f} | {fresh_mb:.0f} |",
            f"| second run (reuses model and adapters) | {again:.1f} | {again_mb:.0f} |",
        ]
        notes.append(
            "quickstart: one run each (not a median); the parent trains in a child process, then waits"
        )
    text = "\n".join(lines)
    print(text)
    if not args.no_record:
        append_section(
            "CLI and quickstart start-up (cli_speed.py)", text, notes=notes, load_at_start=start_load
        )


if __name__ == "__main__":
    main()
