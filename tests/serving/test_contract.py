"""The OpenAPI document is the contract: schemathesis against a real ``bentoml serve`` of the gateway.

One gateway process (SONA + playback + discovery) on SQLite and the test Redis,
with the small synthetic engine of ``conftest``. schemathesis runs every check it
has (``--checks all``: no 5xx, documented statuses, response bodies and headers
as documented, schema-valid requests accepted, schema-invalid ones rejected,
``Allow`` on 405, ...) through all its phases, once with a user's token and once
with a service token, with a fixed seed. Any failure fails the test with
schemathesis' own report of it; the cases run are counted and must reach
:data:`MIN_CASES`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from serving._auth import SERVICE_SCOPE, issue_token
from serving._launch import launch
from sona import Sona
from sona.storage import Storage
from tests.conftest import flushed_redis_db
from tests.serving.conftest import SECRET, FittedEngine

#: Fixed, so a failure found in CI is reproduced by the same run anywhere (``st replay`` also works).
SEED = 20261206
#: Examples per operation and phase, per token: about 1,000 cases per token (2,077 in all with SEED).
MAX_EXAMPLES = 15
MIN_CASES = 1000
#: Redis database only this test uses (flushed first): the sessions schemathesis creates stay here.
REDIS_DB = 12
#: The in-process event bus, not Kafka: the contract is the HTTP surface.
DROP_ENV = ("KAFKA_BROKERS",)


def _schemathesis(base: str, token: str, report_dir: Path) -> tuple[int, str]:
    st = Path(sys.executable).with_name("st")
    cmd = [
        str(st),
        "run",
        f"{base}/api/v1/openapi.json",
        "--checks",
        "all",
        "--seed",
        str(SEED),
        "--max-examples",
        str(MAX_EXAMPLES),
        # One worker: hypothesis describes filters with ast.parse, and concurrent ast.parse in
        # threads trips CPython 3.11's "AST constructor recursion depth mismatch" (gh-106905).
        "--workers",
        "1",
        "--header",
        f"Authorization: Bearer {token}",
        "--request-timeout",
        "30",
        "--report",
        "junit",
        "--report-dir",
        str(report_dir),
    ]
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "120"}
    # cwd: schemathesis and hypothesis keep their caches (.schemathesis, .hypothesis) there, not in the repo.
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=report_dir.parent)
    return out.returncode, out.stdout + out.stderr


@pytest.mark.slow
def test_the_gateway_keeps_its_openapi_contract(
    tmp_path: Path, fitted_engine: FittedEngine, known_user: str, redis_url: str
) -> None:
    database = f"sqlite:///{tmp_path / 'contract.db'}"
    storage = Storage(database)
    storage.upgrade()
    storage.upsert_content(Sona.load(fitted_engine.directory).catalog)
    storage.add_events(fitted_engine.events)  # so the known user can queue a training (202, then 409)
    storage.dispose()
    playback_redis = flushed_redis_db(redis_url, REDIS_DB)
    env = {
        "JWT_SECRET": SECRET,
        "DATABASE_URL": database,
        "SONA_DATA_DIR": str(tmp_path / "data"),
        "SONA_MODEL_DIR": str(fitted_engine.directory),
        "REDIS_URL": playback_redis,
    }
    with (
        (tmp_path / "server.log").open("w+b") as log,
        launch("serving.gateway:Gateway", env, log=log, drop_env=DROP_ENV, timeout=240) as (_, base),
    ):
        # Tokens are made now, not at import: their lifetime starts when the run does.
        tokens = {
            "user": issue_token(known_user, SECRET),
            "service": issue_token("contract-service", SECRET, scopes=(SERVICE_SCOPE,)),
        }
        total = 0
        for name, token in tokens.items():
            code, output = _schemathesis(base, token, tmp_path / f"report-{name}")
            assert code == 0, f"schemathesis with the {name} token (seed {SEED}):\n{output[-12000:]}"
            counted = re.search(r"(\d+) generated", output)
            assert counted is not None, output[-3000:]
            total += int(counted.group(1))
            print(f"schemathesis seed {SEED}, {name} token: {counted.group(0)}")
        # What schemathesis once found: a newline in the path got BentoML's plain-text 404, not our JSON.
        bearer = {"Authorization": f"Bearer {tokens['user']}"}
        for path, status in (
            ("/api/v1/sessions/a%0Ab", 422),
            ("/api/v1/no-such-path%0A", 404),
            ("/nope", 404),
        ):
            r = httpx.get(f"{base}{path}", headers=bearer, timeout=30)
            assert r.status_code == status, (path, r.status_code, r.text)
            assert r.headers["content-type"] == "application/json", (path, r.text)
            assert {"error", "message", "request_id"} <= set(r.json()), (path, r.text)
    assert total >= MIN_CASES, f"only {total} cases ran"
