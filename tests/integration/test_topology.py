"""The production topology with real processes: two ``sona serve`` replicas, ``sona consume``, the cron job.

Everything runs against the real PostgreSQL, Redis and the Kafka-compatible
broker, and the replicas share nothing but those (each has its own data
directory). Checked through the HTTP API only:

- an event accepted by replica A (``/profile/update``, or playback through
  Kafka and the consumer) shows in replica B's recommendations;
- an adapter stored by ``sona train-adapters`` is served by both replicas;
- ``sona fit`` rolls out a new base model: the replicas switch without failing
  a request, the old model's adapters are not attached to the new one, and
  adapters trained on the new model are.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from serving._auth import issue_token
from serving._launch import launch
from sona import Storage
from tests.integration.conftest import ROOT, base_env

pytestmark = pytest.mark.slow

SECRET = "topology-test-secret-0123456789"
API = "/api/v1"


def _sona(env: dict[str, str], *args: str, timeout: float = 240) -> str:
    """Run one ``sona`` command to completion; returns its output."""
    done = subprocess.run(
        [sys.executable, "-m", "serving.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _until(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until ``check()`` holds; fails after ``timeout``."""
    t0 = time.monotonic()
    while True:
        if check():
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"{what}: not within {timeout} s")
        time.sleep(0.05)


class Replica:
    def __init__(self, base: str) -> None:
        self.base = base
        self.http = httpx.Client(base_url=base, timeout=30)

    def _headers(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {issue_token(user, SECRET)}"}

    def titles(self, user: str, limit: int = 10) -> list[str]:
        r = self.http.post(
            f"{API}/recommendations", json={"user_id": user, "limit": limit}, headers=self._headers(user)
        )
        assert r.status_code == 200, r.text
        return [x["content_id"] for x in r.json()["recommendations"]]

    def adapter_delta(self, user: str, titles: list[str]) -> float:
        r = self.http.post(
            f"{API}/personalization/score",
            json={"user_id": user, "content_ids": titles},
            headers=self._headers(user),
        )
        assert r.status_code == 200, r.text
        return max(abs(s["components"]["adapter_delta"]) for s in r.json()["scores"])

    def scores(self, user: str, titles: list[str]) -> list[float]:
        r = self.http.post(
            f"{API}/personalization/score",
            json={"user_id": user, "content_ids": titles},
            headers=self._headers(user),
        )
        assert r.status_code == 200, r.text
        return [s["score"] for s in r.json()["scores"]]


@contextmanager
def _replica(service: str, env: dict[str, str], log: Path) -> Iterator[Replica]:
    with open(log, "w+b") as fh, launch(service, env, log=fh, timeout=240) as (_, base):
        yield Replica(base)


def test_replicas_consumer_and_cron_job_share_one_state(
    tmp_path: Path, postgres_url: str, private_redis_url: str, kafka_brokers: str
) -> None:
    common = {
        "DATABASE_URL": postgres_url,
        "SONA_ADAPTER_STORE": "database",
        "JWT_SECRET": SECRET,
        "REDIS_URL": private_redis_url,
        "KAFKA_BROKERS": kafka_brokers,
        "KAFKA_TOPIC_PREFIX": f"topo{uuid.uuid4().hex[:8]}",
        "KAFKA_PARTITIONS": "1",
        "OMP_NUM_THREADS": "1",
        "SONA_RATE_LIMIT": "0",  # the request loop during the rollout is one caller
    }

    def env(name: str) -> dict[str, str]:  # BentoML's home (its metrics directory) is private too
        return {**base_env(tmp_path / name), **common, "BENTOML_HOME": str(tmp_path / name / "bentoml")}

    # The training machine: fit publishes model 1 to the database.
    _sona(
        env("trainer"), "fit", "--data", "synthetic:80x150", "--epochs", "2", "--seed", "0", "--no-progress"
    )
    storage = Storage(postgres_url)
    model_1 = storage.current_model_id()
    assert model_1 is not None

    with ExitStack() as stack:
        a = stack.enter_context(_replica("serving.gateway:Gateway", env("replica-a"), tmp_path / "a.log"))
        b = stack.enter_context(
            _replica("serving.sona_service:SonaService", env("replica-b"), tmp_path / "b.log")
        )
        consumer = subprocess.Popen(
            [sys.executable, "-m", "serving.cli", "consume"],
            cwd=ROOT,
            env=env("consumer"),
            stdout=open(tmp_path / "consumer.log", "wb"),  # noqa: SIM115 - closed with the process
            stderr=subprocess.STDOUT,
        )
        stack.callback(consumer.wait, 30)
        stack.callback(consumer.terminate)

        # 1. A profile update on A is served by B.
        user = "u3"
        top = b.titles(user)[0]
        r = a.http.post(
            f"{API}/profile/update",
            json={
                "user_id": user,
                "viewing_events": [{"content_id": top, "completion_rate": 1.0, "timestamp": _now()}],
            },
            headers=a._headers(user),
        )
        assert r.status_code == 200, r.text
        seconds = _until(lambda: top not in b.titles(user), 5, "B serving A's profile update")
        assert seconds < 2.0

        # 2. Playback on A, through Kafka and the consumer, is served by B.
        viewer = "u5"
        watched = b.titles(viewer)[0]
        session = a.http.post(
            f"{API}/sessions",
            json={"user_id": viewer, "content_id": watched, "device_id": "tv-1", "duration_seconds": 600},
            headers=a._headers(viewer),
        )
        assert session.status_code == 201, session.text
        sid = session.json()["id"]
        moved = a.http.patch(
            f"{API}/sessions/{sid}/position", json={"position_seconds": 540}, headers=a._headers(viewer)
        )
        assert moved.status_code == 200, moved.text
        _until(lambda: watched not in b.titles(viewer), 60, "B serving playback on A")

        # 3. The cron job's adapters are picked up by both replicas.
        users = tmp_path / "users.txt"
        users.write_text("\n".join(f"u{i}" for i in range(30)))
        _sona(env("trainer"), "train-adapters", "--users", str(users), "--force", "--no-progress")
        trained = [f"u{i}" for i in range(30) if storage.list_adapters(f"u{i}")]
        assert trained, "the cron job kept no adapter"
        lucky = trained[0]
        assert {r.model_id for r in storage.list_adapters(lucky)} == {model_1}
        probe = b.titles(lucky, limit=20)
        for replica in (a, b):
            _until(lambda r=replica: r.adapter_delta(lucky, probe) > 0, 5, "adapter served")

        # 4. A new base model: replicas switch without failing requests; no adapter crosses models.
        failures: list[str] = []
        served = [0]
        stop = threading.Event()

        def hammer() -> None:
            while not stop.is_set():
                try:
                    b.titles(user)
                    served[0] += 1
                except (AssertionError, httpx.HTTPError) as exc:
                    failures.append(str(exc))

        before = b.scores(lucky, probe)
        load = threading.Thread(target=hammer)
        load.start()
        try:
            _sona(
                env("trainer"),
                "fit",
                "--data",
                "synthetic:80x150",
                "--epochs",
                "2",
                "--seed",
                "1",
                "--no-progress",
            )
            model_2 = storage.current_model_id()
            assert model_2 not in (None, model_1)
            for replica in (a, b):
                _until(lambda r=replica: r.scores(lucky, probe) != before, 30, "replica switching models")
                assert replica.adapter_delta(lucky, probe) == 0  # model 1's adapter is not attached
        finally:
            stop.set()
            load.join()
        assert failures == [] and served[0] > 0
        assert top not in b.titles(user)  # the user's state is re-read into the new model
        stale = re.search(
            r"^sona_adapter_stale_model_total(?:\{[^}]*\})? (\S+)$", b.http.get("/metrics").text, re.M
        )
        assert stale is not None and float(stale.group(1)) >= 1  # model 1's adapter was refused and counted

        _sona(env("trainer"), "train-adapters", "--users", str(users), "--force", "--no-progress")
        retrained = [u for u in trained if any(r.model_id == model_2 for r in storage.list_adapters(u))]
        assert retrained, "no adapter was kept on the new model"
        _until(lambda: b.adapter_delta(retrained[0], probe) > 0, 5, "adapter of the new model served")
    storage.dispose()
