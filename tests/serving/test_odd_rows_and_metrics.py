"""A real ``sona serve`` over a database of odd rows: it starts, refuses new poison, its metrics hold.

One server (the one-port gateway, SQLite, Redis, a loopback sync service) is
started for the module. Its database is seeded before start-up with every kind
of odd event row a client or an old release could have left behind: titles not
in the catalog, users the model never saw, timestamps out of order and far in
the past or future, and the same viewing stored twice under different ids.
Before, one stored event for an unknown title made every start-up crash in the
replay (``UnknownContentError``) and BentoML restarted the worker forever.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from serving._auth import SERVICE_SCOPE, issue_token
from serving._launch import free_port
from sona import Sona
from sona.storage import Storage
from tests.conftest import flushed_redis_db
from tests.serving.conftest import SECRET, FittedEngine

ROOT = Path(__file__).resolve().parents[2]
REDIS_DB = 13  # its own: rate-limit counters of other tests' servers (same user ids) live in Redis too
MAX_BODY = 65_536
RATE_LIMIT = 40


@dataclass(frozen=True)
class Server:
    base: str
    shared_home: Path
    redis_url: str
    user: str
    title: str
    sync_hits: list[str]

    def headers(self, user: str | None = None, *, service: bool = False) -> dict[str, str]:
        scopes = (SERVICE_SCOPE,) if service else ()
        return {"Authorization": f"Bearer {issue_token(user or self.user, SECRET, scopes=scopes)}"}


def odd_rows(user: str, title: str, now: datetime) -> list[dict[str, object]]:
    """One stored row of every odd kind the readers must tolerate."""
    row = {"user_id": user, "content_id": title, "completion_rate": 0.9, "source": "playback"}
    return [
        {**row, "event_id": "odd-unknown-title", "content_id": "no-such-title", "timestamp": now},
        {**row, "event_id": "odd-unknown-user", "user_id": "never-seen-user", "timestamp": now},
        {
            **row,
            "event_id": "odd-unknown-both",
            "user_id": "ghost",
            "content_id": "ghost-title",
            "timestamp": now,
        },
        {**row, "event_id": "odd-ancient", "timestamp": datetime(1971, 1, 1, tzinfo=UTC)},
        {**row, "event_id": "odd-future", "timestamp": now + timedelta(days=3650)},
        {**row, "event_id": "odd-later-first", "timestamp": now - timedelta(days=1)},
        {**row, "event_id": "odd-earlier-second", "timestamp": now - timedelta(days=2)},
        {**row, "event_id": "odd-duplicate-1", "timestamp": now - timedelta(hours=1)},
        {**row, "event_id": "odd-duplicate-2", "timestamp": now - timedelta(hours=1)},
        {**row, "event_id": "odd-zero", "completion_rate": 0.0, "timestamp": now},
    ]


class _Sync(BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.hits.append(self.path)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, fitted_engine: FittedEngine, redis_url: str
) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("odd")
    engine = Sona.load(fitted_engine.directory)
    user = str(fitted_engine.events["user_id"].value_counts().index[0])
    title = str(engine.catalog.items[0].content_id)
    db = f"sqlite:///{tmp / 'odd.db'}"
    storage = Storage(db)
    storage.upgrade()
    storage.upsert_content(engine.catalog)
    storage.add_events(fitted_engine.events)
    storage.add_events(odd_rows(user, title, datetime.now(UTC)))
    storage.dispose()

    playback_redis = flushed_redis_db(redis_url, REDIS_DB)
    _Sync.hits = []
    sync = ThreadingHTTPServer(("127.0.0.1", 0), _Sync)
    threading.Thread(target=sync.serve_forever, daemon=True).start()
    shared_home = tmp / "shared-bentoml-home"  # what every BentoML server on the host shares
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k not in {"KAFKA_BROKERS", "SONA_DEV_MODE"}},
        "SONA_DATA_DIR": str(tmp / "data"),
        "SONA_MODEL_DIR": str(fitted_engine.directory),
        "DATABASE_URL": db,
        "REDIS_URL": playback_redis,
        "SYNC_SERVICE_URL": f"http://127.0.0.1:{sync.server_address[1]}",
        "JWT_SECRET": SECRET,
        "SONA_MAX_BODY_BYTES": str(MAX_BODY),
        "SONA_MAX_HEADER_BYTES": "8192",
        "SONA_RATE_LIMIT": str(RATE_LIMIT),
        "SONA_RATE_WINDOW": "60",
        "BENTOML_HOME": str(shared_home),
        "BENTOML_DO_NOT_TRACK": "True",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(ROOT),
    }
    log = tempfile.TemporaryFile(mode="w+b")  # noqa: SIM115 - open for the fixture's whole life
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("sona")), "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                pytest.fail(f"sona serve did not become ready (exit {proc.poll()}):\n{log.read()[-4000:]!r}")
            try:
                if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        yield Server(
            base=base,
            shared_home=shared_home,
            redis_url=env["REDIS_URL"],
            user=user,
            title=title,
            sync_hits=_Sync.hits,
        )
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(5)
        log.close()
        sync.shutdown()


def _metric(server: Server, name: str, labels: str = "") -> float:
    """The value of one sample on the server's own /metrics (0 when absent)."""
    text = httpx.get(f"{server.base}/metrics", timeout=10).text
    key = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(key + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.slow
def test_the_service_starts_and_serves_over_every_kind_of_odd_row(server: Server) -> None:
    for user in (server.user, "never-seen-user"):
        r = httpx.post(
            f"{server.base}/api/v1/recommendations",
            json={"user_id": user, "limit": 5},
            headers=server.headers(user),
            timeout=30,
        )
        assert r.status_code == 200, r.text
        assert "no-such-title" not in {i["content_id"] for i in r.json()["recommendations"]}


@pytest.mark.slow
def test_a_session_for_a_title_not_in_the_catalog_is_refused_at_the_edge(server: Server) -> None:
    body = {"user_id": server.user, "content_id": "no-such-title", "device_id": "tv", "duration_seconds": 60}
    r = httpx.post(f"{server.base}/api/v1/sessions", json=body, headers=server.headers(), timeout=30)
    assert r.status_code == 404, r.text
    assert r.json()["error"] == "unknown_content" and "no-such-title" in r.json()["message"]
    profile = httpx.post(
        f"{server.base}/api/v1/profile/update",
        json={
            "user_id": server.user,
            "viewing_events": [
                {"content_id": "no-such-title", "completion_rate": 1.0, "timestamp": "2026-03-01T20:15:00Z"}
            ],
        },
        headers=server.headers(),
        timeout=30,
    )
    assert 400 <= profile.status_code < 500, profile.text


@pytest.mark.slow
def test_metrics_survive_another_bentoml_server_wiping_the_shared_home(server: Server) -> None:
    bad = {"Authorization": "Bearer " + issue_token(server.user, SECRET, ttl_seconds=-120)}
    before = _metric(server, "sona_jwt_failures_total", 'reason="expired"')
    assert (
        httpx.post(f"{server.base}/api/v1/recommendations", json={"user_id": "u"}, headers=bad).status_code
        == 401
    )
    assert _metric(server, "sona_jwt_failures_total", 'reason="expired"') == before + 1
    # What any other `bentoml serve` on the host does at start-up (BentoML's ensure_prometheus_dir):
    # wipe $BENTOML_HOME/prometheus_multiproc_dir.
    import shutil

    shared = server.shared_home / "prometheus_multiproc_dir"
    shutil.rmtree(shared, ignore_errors=True)
    shared.mkdir(parents=True)
    metrics = httpx.get(f"{server.base}/metrics", timeout=10)
    assert metrics.status_code == 200
    assert _metric(server, "sona_jwt_failures_total", 'reason="expired"') == before + 1
    httpx.post(f"{server.base}/api/v1/recommendations", json={"user_id": "u"}, headers=bad)
    assert _metric(server, "sona_jwt_failures_total", 'reason="expired"') == before + 2


@pytest.mark.slow
def test_sync_latency_moves_and_no_metric_is_labelled_with_a_session_id(server: Server) -> None:
    body = {"user_id": server.user, "content_id": server.title, "device_id": "tv", "duration_seconds": 600}
    created = httpx.post(f"{server.base}/api/v1/sessions", json=body, headers=server.headers(), timeout=30)
    assert created.status_code == 201, created.text
    before = _metric(server, "playback_sync_notification_seconds_count")
    sid = created.json()["id"]
    moved = httpx.patch(
        f"{server.base}/api/v1/sessions/{sid}/position",
        json={"position_seconds": 120, "playback_state": "playing"},
        headers=server.headers(),
        timeout=30,
    )
    assert moved.status_code == 200, moved.text
    deadline = time.monotonic() + 10
    while _metric(server, "playback_sync_notification_seconds_count") < before + 1:
        assert time.monotonic() < deadline, "sync latency histogram did not move"
        time.sleep(0.2)
    assert server.sync_hits
    # No time series per session: a label holding the session id grew memory without bound.
    deleted = httpx.delete(f"{server.base}/api/v1/sessions/{sid}", headers=server.headers(), timeout=30)
    assert deleted.status_code == 204, deleted.text
    metrics = httpx.get(f"{server.base}/metrics", timeout=10).text
    assert sid not in metrics
    template = "/api/v1/sessions/{session_id}/position"
    assert f'sona_http_requests_total{{endpoint="{template}",status="200"}}' in metrics


@pytest.mark.slow
def test_oversized_bodies_are_413_before_auth_without_being_read(server: Server) -> None:
    url = f"{server.base}/api/v1/recommendations"
    big = b'{"user_id": "' + b"x" * (4 * MAX_BODY) + b'"}'
    declared = httpx.post(url, content=big, headers={"Content-Type": "application/json"}, timeout=30)
    assert declared.status_code == 413, declared.text  # not 401: refused before the token is looked at
    assert declared.json()["error"] == "payload_too_large" and declared.json()["request_id"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while it streams
        yield b'{"user_id": "'
        for _ in range(64):
            yield b"x" * 16_384
        yield b'"}'

    streamed = httpx.post(url, content=chunks(), headers={"Content-Type": "application/json"}, timeout=30)
    assert streamed.status_code == 413, streamed.text
    small = httpx.post(url, json={"user_id": server.user, "limit": 3}, headers=server.headers(), timeout=30)
    assert small.status_code == 200, small.text


@pytest.mark.slow
def test_oversized_headers_are_431(server: Server) -> None:
    r = httpx.get(f"{server.base}/api/v1/users/u/sessions", headers={"X-Pad": "p" * 12_000}, timeout=30)
    assert r.status_code == 431, r.text
    assert r.json()["error"] == "headers_too_large"


@pytest.mark.slow
def test_a_token_living_longer_than_the_maximum_is_401(server: Server) -> None:
    before = _metric(server, "sona_jwt_failures_total", 'reason="lifetime_too_long"')
    token = issue_token(server.user, SECRET, ttl_seconds=3 * 86_400)  # default maximum: one day
    r = httpx.post(
        f"{server.base}/api/v1/recommendations",
        json={"user_id": server.user},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert r.status_code == 401 and r.json()["reason"] == "lifetime_too_long", r.text
    assert _metric(server, "sona_jwt_failures_total", 'reason="lifetime_too_long"') == before + 1


@pytest.mark.slow
def test_requests_beyond_the_rate_are_429_with_retry_after_counted_in_redis(server: Server) -> None:
    import redis

    user = "rate-limited-user"
    headers = server.headers(user)
    statuses: list[int] = []
    retry_after: list[str] = []
    with httpx.Client(base_url=server.base, headers=headers, timeout=30) as client:
        for _ in range(2 * RATE_LIMIT + 1):  # spans at most two fixed windows: at least one is refused
            r = client.get(f"/api/v1/users/{user}/sessions")
            statuses.append(r.status_code)
            if r.status_code == 429:
                retry_after.append(r.headers["retry-after"])
                assert r.json()["error"] == "rate_limited"
    assert set(statuses) == {200, 429}, statuses
    assert statuses.count(200) <= 2 * RATE_LIMIT
    assert all(1 <= int(s) <= 60 for s in retry_after)
    # Counted in Redis, so every replica of the service shares the same budget.
    shared = redis.Redis.from_url(server.redis_url)
    try:
        assert shared.keys("sona:rate:*")
    finally:
        shared.close()
    # Another caller still gets through.
    other = httpx.get(
        f"{server.base}/api/v1/users/{server.user}/sessions", headers=server.headers(), timeout=30
    )
    assert other.status_code == 200
