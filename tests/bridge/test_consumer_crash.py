"""SIGKILL the consumer process mid-stream, restart it: no event lost, none duplicated."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from playback_bridge import (
    EventType,
    PositionUpdated,
    SessionEnded,
    Topics,
    encode_event,
    ensure_topics,
    viewing_event_id,
)
from sona.storage import Storage

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

SESSIONS = 800
ROOT = Path(__file__).resolve().parents[2]


def _consumer(env: dict[str, str], *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable, "-m", "playback_bridge.consumer", "--max-batch", "20",
            "--session-timeout-ms", "1000", "--heartbeat-interval-ms", "300", *extra,
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip


async def test_sigkill_mid_batch_then_restart_loses_and_duplicates_nothing(
    tmp_path: Path, kafka_brokers: str, topic_prefix: str
) -> None:
    brokers = kafka_brokers.split(",")
    topics = Topics(topic_prefix)
    url = f"sqlite:///{tmp_path / 'sona.db'}"
    storage = Storage(url)
    storage.upgrade()

    await ensure_topics(brokers, topics.all, partitions=3)
    producer = AIOKafkaProducer(bootstrap_servers=brokers, linger_ms=5)
    await producer.start()
    futures = []
    for i in range(SESSIONS):
        user, sid = f"u{i % 97}", f"s{i}"
        common = {"session_id": sid, "user_id": user, "content_id": f"c{i}", "device_id": "d"}
        update = PositionUpdated(
            **common, position_seconds=i % 100, playback_state="playing", duration_seconds=100
        )
        ended = SessionEnded(
            **common, final_position_seconds=i % 100, completion_rate=(i % 100) / 100, duration_seconds=100
        )
        for event in (update, ended):
            futures.append(
                await producer.send(topics.for_type(event.event_type), encode_event(event), key=user.encode())
            )
    await asyncio.gather(*futures)
    await producer.stop()
    assert topics.for_type(EventType.SESSION_ENDED) in topics.consumed

    env = {
        **os.environ,
        "DATABASE_URL": url,
        "KAFKA_BROKERS": kafka_brokers,
        "KAFKA_TOPIC_PREFIX": topic_prefix,
    }
    group = ("--group-id", f"g-{topic_prefix}")
    first = _consumer(env, *group)
    deadline = time.monotonic() + 60
    written = 0
    while written == 0:
        assert time.monotonic() < deadline, "the consumer wrote nothing"
        assert first.poll() is None, first.communicate()[0].decode()
        await asyncio.sleep(0.01)
        written = len(storage.events_for_users(None))
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    assert 0 < written < SESSIONS, "killed too late to be mid-stream"

    second = _consumer(env, *group, "--exit-when-idle", "1")
    out, _ = second.communicate(timeout=90)
    assert second.returncode == 0, out.decode()

    frame = storage.events_for_users(None)
    assert len(frame) == SESSIONS
    assert frame["event_id"].is_unique
    assert set(frame["event_id"]) == {viewing_event_id(f"s{i}") for i in range(SESSIONS)}
    by_content = dict(zip(frame["content_id"], frame["completion_rate"], strict=True))
    assert all(by_content[f"c{i}"] == pytest.approx((i % 100) / 100) for i in range(SESSIONS))
    storage.dispose()
