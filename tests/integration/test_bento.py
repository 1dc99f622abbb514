"""BentoML packaging: both bentofiles build, and a built Bento serves (the model is pointed to, not packaged).

``bentoml build`` writes to a private ``BENTOML_HOME``; the Bento is then served
from a directory outside the repository, without the repository on
``PYTHONPATH``, so the code that answers is the code the Bento carries.
Building the container image (``bentoml containerize``) needs a Docker daemon
and is not tested here.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import BinaryIO

import httpx
import pytest
import yaml

from serving._auth import issue_token
from serving._launch import free_port
from sona import Sona, SonaConfig
from sona.datasets import SyntheticConfig, generate_synthetic
from tests.integration.conftest import ROOT

BENTOFILES = {
    "bentofile.yaml": "serving.gateway:Gateway",
    "bentofile.sona.yaml": "serving.sona_service:SonaService",
}
SECRET = "bento-test-secret-0123456789abcdef"


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;@]", requirement, maxsplit=1)[0].lower().replace("_", "-")


@pytest.mark.parametrize("bentofile", sorted(BENTOFILES))
def test_bentofile_names_its_service_and_every_runtime_dependency(bentofile: str) -> None:
    spec = yaml.safe_load((ROOT / bentofile).read_text())
    assert spec["service"] == BENTOFILES[bentofile]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    runtime = [
        *project["dependencies"],
        *(r for e in ("serving", "bridge", "postgres", "embeddings", "ann") for r in extras[e]),
    ]
    wanted = {_name(r) for r in runtime} - {"bentoml"}  # `bentoml build` pins its own version
    packaged = {_name(r) for r in spec["python"]["packages"]}
    assert wanted <= packaged, f"{bentofile} lacks {sorted(wanted - packaged)}"
    assert "torch==2.13.0" in spec["python"]["packages"]  # the CPU pin of constraints.txt
    assert {"SONA_DATA_DIR"} <= {e["name"] for e in spec["envs"]}
    assert "SONA_MODEL_DIR" in (ROOT / "docs" / "operations.md").read_text()


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "KAFKA_BROKERS", "DATABASE_URL"}}
    env.update(BENTOML_HOME=str(home), BENTOML_DO_NOT_TRACK="True", HF_HUB_OFFLINE="1")
    return env


def _build(bentofile: str, home: Path) -> str:
    out = subprocess.run(
        [str(Path(sys.executable).with_name("bentoml")), "build", "-f", bentofile, "--output", "tag"],
        cwd=ROOT,
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    tag = re.search(r"__tag__:(\S+)", out.stdout)
    assert tag is not None, out.stdout
    return tag[1]


@pytest.mark.slow
def test_built_bentos_carry_the_code_and_the_gateway_bento_serves(tmp_path: Path) -> None:
    home = tmp_path / "bentoml"
    sona_tag = _build("bentofile.sona.yaml", home)
    tag = _build("bentofile.yaml", home)
    for t in (sona_tag, tag):
        name, version = t.split(":")
        src = home / "bentos" / name / version / "src"
        assert (src / "sona" / "storage" / "migrations" / "versions").is_dir()
        assert (src / "serving" / "gateway.py").is_file() and (src / "playback_bridge").is_dir()
        assert (src / "sona_app" / "bootstrap.py").is_file() and (src / "sona_app" / "settings.py").is_file()
        assert not (src / "tests").exists() and not (src / "notebooks").exists()

    data = tmp_path / "data"  # the model directory the Bento is pointed to (SONA_MODEL_DIR)
    catalog, events = generate_synthetic(SyntheticConfig(n_items=60, n_users=30, seed=4))
    Sona(catalog, SonaConfig(epochs=1, dim=8, hidden_dim=16, progress=False)).fit(events).save(data / "model")
    port = free_port()
    env = {
        **_env(home),
        "SONA_DATA_DIR": str(data),
        "SONA_MODEL_DIR": str(data / "model"),
        "JWT_SECRET": SECRET,
    }
    env.pop("REDIS_URL", None)
    with (tmp_path / "serve.log").open("w+b") as log:
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("bentoml")),
                "serve",
                tag,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            _wait_ready(proc, base, log)
            user = str(events["user_id"].iloc[0])
            r = httpx.post(
                f"{base}/api/v1/recommendations",
                headers={"Authorization": f"Bearer {issue_token(user, SECRET)}"},
                json={"user_id": user, "limit": 3},
                timeout=30,
            )
            assert r.status_code == 200, r.text
            recs = r.json()["recommendations"]
            assert len(recs) == 3 and all(rec["content_id"] in catalog for rec in recs)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)


def _wait_ready(proc: subprocess.Popen[bytes], base: str, log: BinaryIO) -> None:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            r = httpx.get(f"{base}/ready", timeout=2)
            if r.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    log.seek(0)
    raise AssertionError(f"the Bento did not get ready:\n{log.read().decode(errors='replace')[-4000:]}")
