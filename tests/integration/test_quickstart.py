"""``make quickstart``'s entry point end to end on synthetic data: the printed curl commands work."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import ROOT, base_env

pytestmark = [pytest.mark.redis, pytest.mark.slow]

QUICKSTART = [sys.executable, "-m", "serving.quickstart", "--synthetic", "--epochs", "3", "--adapters", "20"]


def _read_until_ready(proc: subprocess.Popen[str], timeout: float) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError("quickstart exited early:\n" + "".join(lines))
        lines.append(line)
        if line.startswith("serving until Ctrl-C"):
            return lines
    raise AssertionError("quickstart did not come up in time:\n" + "".join(lines))


def test_quickstart_serves_and_printed_curls_return_2xx(tmp_path: Path, private_redis_url: str) -> None:
    env = {**base_env(tmp_path), "REDIS_URL": private_redis_url}
    proc = subprocess.Popen(
        QUICKSTART, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        lines = _read_until_ready(proc, timeout=240)
        out = "".join(lines)
        assert "training the base model on synthetic" in out
        assert "training LoRA adapters" in out
        token = re.search(r"^dev JWT for user '([^']+)'.*\n  (\S+)$", out, re.M)
        assert token is not None, out
        curls = [line.strip() for line in lines if line.startswith("curl ")]
        assert len(curls) == 3
        bodies = []
        for cmd in curls:  # exactly as printed; --fail-with-body makes 4xx/5xx a non-zero exit
            done = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, f"{cmd}\n{done.stdout}\n{done.stderr}"
            bodies.append(json.loads(done.stdout))
        recs, search, session = bodies
        assert len(recs["recommendations"]) == 5

        # The waiting parent holds no model: no torch mapped, a small resident set.
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        assert "libtorch" not in maps
        rss_mb = (
            int(re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{proc.pid}/status").read_text(), re.M)[1])
            / 1024
        )
        assert rss_mb < 250, f"the quickstart's parent holds {rss_mb:.0f} MB while it waits"

        # The printed `sona token` command mints a service token the server accepts for another user.
        mint = re.search(r"^more tokens: `(.+) USER_ID` for any user", out, re.M)
        assert mint is not None, out
        sona_cli = str(Path(sys.executable).with_name("sona"))
        minted = subprocess.run(
            f"{mint[1].replace('.venv/bin/sona', sona_cli)} --service",
            shell=True,
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert minted.returncode == 0, minted.stderr
        other = httpx.post(
            re.search(r"base URL\s+(\S+)", out)[1] + "/api/v1/recommendations",  # type: ignore[index]
            headers={"Authorization": f"Bearer {minted.stdout.strip()}"},
            json={"user_id": "someone-else", "limit": 3},
            timeout=30,
        )
        assert other.status_code == 200, other.text
        assert search["personalized"] is True and search["results"]
        assert session["user_id"] == token.group(1) and session["playback_state"] == "playing"

        # Playback traffic reaches sona through the in-process bus: viewing events and profiles.
        base = re.search(r"base URL\s+(\S+)", out).group(1)  # type: ignore[union-attr]
        demo = subprocess.run(
            [
                sys.executable,
                "-m",
                "serving.cli",
                "demo-events",
                "--url",
                base,
                "--users",
                "2",
                "--sessions",
                "2",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert "sessions=4" in demo.stdout and "failed_requests=0" in demo.stdout
        deadline = time.monotonic() + 20
        with sqlite3.connect(tmp_path / "sona.db") as db:
            while time.monotonic() < deadline:
                n = db.execute("select count(*) from viewing_events where source = 'playback'").fetchone()[0]
                if n == 4:
                    break
                time.sleep(0.3)
            assert n == 4
            profiles = db.execute(
                "select count(*) from user_profiles where user_id like 'demo-%'"
            ).fetchone()[0]
            assert profiles == 2
    finally:
        proc.terminate()  # SIGTERM: the quickstart stops the server it started
        rc = proc.wait(60)
    assert rc == 0

    # A second run reuses the trained model and adapters.
    t0 = time.perf_counter()
    again = subprocess.run(
        [*QUICKSTART, "--no-serve"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert "reusing the trained model" in again.stdout and "reusing the adapters" in again.stdout
    assert "training" not in again.stdout
    assert time.perf_counter() - t0 < 60
