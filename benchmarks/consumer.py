"""Playback consumer throughput: topic → ``viewing_events`` next to raw aiokafka consumption.

Usage::

    source /tmp/svc.env   # KAFKA_BROKERS and SONA_TEST_POSTGRES_URL
    .venv/bin/python benchmarks/consumer.py [--sessions 20000] [--updates 4] [--max-batch 20000]

One run produces ``sessions × (updates + 1)`` messages (position updates plus one
session-ended per session, keyed by user) to a fresh topic prefix, then reads
the same topics three times with fresh consumer groups: raw ``AIOKafkaConsumer``
(poll only), and :class:`PlaybackConsumer` + ``EventSink`` writing to SQLite and to
PostgreSQL (decode, dead-letter check, coalesce, idempotent insert, commit per
batch). Throughput counts messages from the first polled batch to the last
commit, so group-join time is excluded from all three alike. Appends a table to
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import tempfile
import time
import uuid

from _databases import postgres_db
from _report import append_section, loadavg, section
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from playback_bridge import (
    EventSink,
    PositionUpdated,
    SessionEnded,
    Topics,
    encode_event,
    ensure_topics,
)
from playback_bridge.consumer import PlaybackConsumer
from sona.storage import Storage


async def produce(brokers: list[str], topics: Topics, sessions: int, updates: int, users: int) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=brokers, linger_ms=20, max_batch_size=256 * 1024)
    await producer.start()
    futures = []
    try:
        for i in range(sessions):
            user = f"u{i % users}"
            common = {"session_id": f"s{i}", "user_id": user, "content_id": f"c{i % 1700}", "device_id": "tv"}
            events: list[PositionUpdated | SessionEnded] = [
                PositionUpdated(**common, position_seconds=60.0 * (k + 1), playback_state="playing",
                                duration_seconds=3600.0)
                for k in range(updates)
            ]  # fmt: skip
            final = 60.0 * updates + (i % 3000)
            events.append(
                SessionEnded(**common, final_position_seconds=final, completion_rate=min(1.0, final / 3600.0),
                             duration_seconds=3600.0)
            )  # fmt: skip
            for e in events:
                futures.append(
                    await producer.send(topics.for_type(e.event_type), encode_event(e), key=user.encode())
                )
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return len(futures)


async def raw_rate(brokers: list[str], topics: Topics, total: int, max_batch: int) -> float:
    consumer = AIOKafkaConsumer(
        *topics.consumed,
        bootstrap_servers=brokers,
        group_id=f"raw-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    await consumer.start()
    seen, first = 0, None
    try:
        while seen < total:
            batch = await consumer.getmany(timeout_ms=500, max_records=max_batch)
            if batch and first is None:
                first = time.monotonic()
            seen += sum(len(v) for v in batch.values())
        return seen / (time.monotonic() - (first or 0))
    finally:
        await consumer.stop()


async def pipeline_rate(
    brokers: list[str], topics: Topics, url: str, total: int, max_batch: int
) -> tuple[float, int]:
    storage = Storage(url)
    storage.upgrade()
    consumer = PlaybackConsumer(
        brokers, topics, EventSink(storage), group_id=f"bench-{uuid.uuid4().hex[:8]}", max_batch=max_batch,
        session_timeout_ms=6000, heartbeat_interval_ms=1000,
    )  # fmt: skip
    await consumer.start()
    gc.freeze()  # as ``python -m playback_bridge.consumer`` does after start-up
    try:
        task = asyncio.create_task(consumer.run())
        while consumer.stats.messages < total:
            await asyncio.sleep(0.05)
        consumer.request_stop()
        await task
    finally:
        await consumer.stop()
    rows = len(storage.events_for_users(None))
    storage.dispose()
    return consumer.stats.messages_per_second, rows


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sessions", type=int, default=20_000)
    p.add_argument("--updates", type=int, default=4, help="position updates per session")
    p.add_argument("--users", type=int, default=2_000)
    p.add_argument("--max-batch", type=int, default=20_000)
    p.add_argument("--no-append", action="store_true", help="print the table only (exploratory runs)")
    args = p.parse_args()
    load_start = loadavg()
    brokers = os.environ["KAFKA_BROKERS"].split(",")
    pg_server = os.environ.get("SONA_TEST_POSTGRES_URL")
    topics = Topics(f"bench{uuid.uuid4().hex[:8]}")
    await ensure_topics(brokers, topics.all, partitions=3)
    t0 = time.perf_counter()
    total = await produce(brokers, topics, args.sessions, args.updates, args.users)
    produce_rate = total / (time.perf_counter() - t0)
    print(f"produced {total:,} messages at {produce_rate:,.0f}/s")

    raw = await raw_rate(brokers, topics, total, args.max_batch)
    print(f"raw aiokafka: {raw:,.0f} msg/s")
    results: list[tuple[str, float, int]] = []
    with tempfile.TemporaryDirectory() as d:
        rate, rows = await pipeline_rate(brokers, topics, f"sqlite:///{d}/bench.db", total, args.max_batch)
        print(f"pipeline SQLite: {rate:,.0f} msg/s, {rows:,} rows")
        results.append(("SQLite (file, WAL)", rate, rows))
    if pg_server:
        with postgres_db(pg_server) as url:
            rate, rows = await pipeline_rate(brokers, topics, url, total, args.max_batch)
        print(f"pipeline PostgreSQL: {rate:,.0f} msg/s, {rows:,} rows")
        results.append(("PostgreSQL", rate, rows))

    title = f"Playback consumer: topic → viewing_events ({total:,} messages, {args.sessions:,} sessions)"
    notes = [
        "broker: Tansu (memory), 3 partitions",
        f"messages: {args.updates} position updates + 1 session-ended per session, {args.users:,} users, "
        f"max batch {args.max_batch:,}; one run, group join excluded",
    ]
    lines = [
        "| path | messages/s | × raw | viewing_events rows |",
        "|---|---:|---:|---:|",
        f"| raw aiokafka consumption (poll only) | {raw:,.0f} | 1.00× | – |",
    ]
    lines += [
        f"| consumer → {name} | {rate:,.0f} | {rate / raw:.2f}× | {rows:,} |" for name, rate, rows in results
    ]
    write = section if args.no_append else append_section
    print(write(title, lines, notes=notes, load_at_start=load_start))


if __name__ == "__main__":
    asyncio.run(main())
