"""The Kafka consumer that feeds sona from playback: ``python -m playback_bridge.consumer``.

A consumer group on ``{prefix}.position-updated`` and ``{prefix}.session-ended``.
Each polled batch is decoded column-wise (:func:`~playback_bridge.decode_batch`),
poison messages are copied to ``{prefix}.dead-letter`` with the reason, the
good events go to the handler as one :class:`~playback_bridge.PlaybackBatch`
(an :class:`~playback_bridge.EventSink` writing ``viewing_events`` and, with
``--model-dir``, profiles), and only then are the offsets committed. A crash
between the write and the commit replays the batch, which the idempotent
``event_id`` turns into a no-op.

On a rebalance the listener writes and commits every batch already polled
(the one in flight and the one decoded and waiting behind it) before the
partitions are released, so a partition is never handed over with messages
taken but not committed: the new owner starts exactly where this one stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import ConsumerRecord

from playback_bridge import _metrics
from playback_bridge._batch import PlaybackBatch, decode_batch
from playback_bridge._producer import Topics, ensure_topics
from playback_bridge._retry import transient
from sona.errors import DataError

__all__ = ["BatchHandler", "ConsumerStats", "PlaybackConsumer", "main"]

log = logging.getLogger("playback_bridge.consumer")

#: What the consumer hands each decoded batch to (an :class:`~playback_bridge.EventSink`).
BatchHandler = Callable[[PlaybackBatch], Awaitable[object]]
#: The polled records in order, their decoded rows (index = position in that list), and the poison.
_Decoded = tuple[list[ConsumerRecord], PlaybackBatch, list[tuple[ConsumerRecord, str]]]


@dataclass(slots=True)
class ConsumerStats:
    """Running totals of one consumer (also exported as Prometheus metrics)."""

    messages: int = 0
    events: int = 0
    dead_letters: int = 0
    batches: int = 0
    commits: int = 0
    handler_retries: int = 0
    #: Rebalances this member went through (each flushed and committed before letting go).
    revocations: int = 0
    #: Messages polled from a partition but not committed when it was revoked (0 unless a write kept failing).
    released_uncommitted: int = 0
    #: Rows the handler kept failing on (not a transient error) after ``max_attempts``: dead-lettered.
    handler_refused: int = 0
    #: ``time.monotonic()`` when the first non-empty poll returned, and when the last batch was committed.
    first_batch_at: float | None = None
    last_batch_at: float | None = None

    @property
    def messages_per_second(self) -> float:
        """Throughput from the first polled batch to the last commit (group join excluded)."""
        if (
            self.first_batch_at is None
            or self.last_batch_at is None
            or self.last_batch_at <= self.first_batch_at
        ):
            return 0.0
        return self.messages / (self.last_batch_at - self.first_batch_at)


class _FlushOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, consumer: PlaybackConsumer) -> None:
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        # Still a member of the old generation here, so these commits are accepted.
        consumer = self._consumer
        await consumer._drain()
        consumer.stats.revocations += 1
        consumer.stats.released_uncommitted += sum(
            consumer._polled.get(tp, 0) - consumer._committed.get(tp, 0)
            for tp in revoked
            if tp in consumer._polled
        )
        log.info("partitions revoked after flush: %s", sorted(f"{tp.topic}/{tp.partition}" for tp in revoked))

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        log.info("partitions assigned: %s", sorted(f"{tp.topic}/{tp.partition}" for tp in assigned))


class PlaybackConsumer:
    """Consumes playback events in batches and hands them to ``handler``.

    Parameters
    ----------
    brokers, topics
        Where to read from (``topics.consumed``) and dead-letter to.
    handler
        Awaited with the decoded rows of one batch; must be idempotent. If it
        raises ``sona.DataError`` the batch is retried row by row and the rows
        it still refuses are dead-lettered. A transient error (the database
        is unreachable, by its cause) is retried with backoff for as
        long as it lasts, the batch staying uncommitted. Any other error is
        retried ``max_attempts`` times, then the batch is retried row by row
        and the rows that fail again are dead-lettered, so a message that can
        never be stored does not stop its partition.
    max_batch
        Records per poll.
    max_attempts
        Tries of a batch failing with a non-transient error before it is split.
    """

    def __init__(
        self,
        brokers: Sequence[str],
        topics: Topics,
        handler: BatchHandler,
        *,
        group_id: str = "sona-playback",
        partitions: int = 3,
        max_batch: int = 20_000,
        poll_timeout_ms: int = 500,
        session_timeout_ms: int = 10_000,
        heartbeat_interval_ms: int = 3_000,
        retry_backoff_seconds: float = 1.0,
        max_attempts: int = 5,
    ) -> None:
        self.brokers = tuple(brokers)
        self.topics = topics
        self.handler = handler
        self.group_id = group_id
        self.partitions = partitions
        self.max_batch = max_batch
        self.poll_timeout_ms = poll_timeout_ms
        self.session_timeout_ms = session_timeout_ms
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.retry_backoff_seconds = retry_backoff_seconds
        self.max_attempts = max_attempts
        self.stats = ConsumerStats()
        self._lock = asyncio.Lock()
        # Polled and decoded batches not yet written, oldest first; drained under the lock.
        self._pending: deque[tuple[dict[TopicPartition, list[ConsumerRecord]], _Decoded]] = deque()
        # Next offset per partition: after the last polled record, and as last committed.
        self._polled: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._stopping = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._dlq: AIOKafkaProducer | None = None

    async def start(self) -> None:
        """Create missing topics, connect the dead-letter producer and join the group.

        If any step fails, what was already started is stopped before the error propagates.
        """
        await ensure_topics(self.brokers, (*self.topics.consumed, self.topics.dead_letter), self.partitions)
        try:
            self._dlq = AIOKafkaProducer(bootstrap_servers=list(self.brokers), acks="all")
            await self._dlq.start()
            self._consumer = AIOKafkaConsumer(
                bootstrap_servers=list(self.brokers),
                group_id=self.group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                session_timeout_ms=self.session_timeout_ms,
                heartbeat_interval_ms=self.heartbeat_interval_ms,
            )
            self._consumer.subscribe(list(self.topics.consumed), listener=_FlushOnRevoke(self))
            await self._consumer.start()
        except BaseException:
            await self.stop()
            raise

    def request_stop(self) -> None:
        """Finish the batch in flight, commit it and leave (signal-safe)."""
        self._stopping.set()

    async def run(self, *, max_idle_seconds: float | None = None) -> ConsumerStats:
        """Consume until :meth:`request_stop` (or ``max_idle_seconds`` without messages).

        Two batches overlap: the next one is polled and decoded on the event
        loop while the previous one is written (in a worker thread) and
        committed. Commits stay in batch order.
        """
        assert self._consumer is not None, "call start() first"
        idle_since = time.monotonic()
        in_flight: asyncio.Task[None] | None = None
        try:
            while not self._stopping.is_set():
                batch = await self._consumer.getmany(
                    timeout_ms=self.poll_timeout_ms, max_records=self.max_batch
                )
                if not batch:
                    if max_idle_seconds is not None and time.monotonic() - idle_since > max_idle_seconds:
                        break
                    continue
                idle_since = time.monotonic()
                if self.stats.first_batch_at is None:
                    self.stats.first_batch_at = idle_since
                self._polled.update({tp: records[-1].offset + 1 for tp, records in batch.items() if records})
                self._pending.append((batch, self._decode(batch)))
                if in_flight is not None:
                    await in_flight
                in_flight = asyncio.create_task(self._drain())
        finally:
            if in_flight is not None:
                await in_flight
        return self.stats

    async def process(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        """Decode, dead-letter, hand over and commit one polled batch."""
        self._pending.append((batch, self._decode(batch)))
        await self._drain()

    async def _drain(self) -> None:
        """Complete every pending batch in order (the run loop and the revoke listener both call this)."""
        async with self._lock:
            while self._pending:
                await self._complete(*self._pending.popleft())

    def _decode(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> _Decoded:
        records = [record for part in batch.values() for record in part]
        decoded, poison = decode_batch([record.value for record in records])
        return records, decoded, [(records[i], reason) for i, reason in poison]

    async def _complete(self, batch: dict[TopicPartition, list[ConsumerRecord]], prepared: _Decoded) -> None:
        """Hand over, dead-letter and commit one batch; the caller holds ``self._lock``."""
        assert self._consumer is not None
        started = time.perf_counter()
        records, decoded, poison = prepared
        self.stats.messages += len(records)
        self.stats.events += len(decoded)
        for tp, part in batch.items():
            kind = self.topics.event_type(tp.topic)
            _metrics.CONSUMER_MESSAGES.labels(event_type=kind.value if kind else tp.topic).inc(len(part))
        refused = await self._hand_over(decoded)
        poison = poison + [(records[i], reason) for i, reason in refused]
        await self._dead_letter(poison)
        offsets = {tp: records[-1].offset + 1 for tp, records in batch.items() if records}
        try:
            await self._consumer.commit(offsets)
            self._committed.update(offsets)
            self.stats.commits += 1
        except (CommitFailedError, IllegalStateError) as exc:
            # Another member owns the partition now; it replays, and event ids dedupe.
            log.warning("commit after rebalance failed (%s); the batch will be replayed", exc)
        self.stats.batches += 1
        self.stats.last_batch_at = time.monotonic()
        self._record_lag(offsets)
        _metrics.CONSUMER_BATCH_SECONDS.observe(time.perf_counter() - started)

    async def _hand_over(self, batch: PlaybackBatch) -> list[tuple[int, str]]:
        """Hand the batch over until the handler accepts; return ``(position, reason)`` of rows it refuses."""
        refused: list[tuple[int, str]] = []
        failures = 0  # non-transient, in a row
        row_failures: dict[int, int] = {}  # non-transient failures of single rows, across rounds
        while len(batch):
            try:
                await self.handler(batch)
                return refused
            except DataError:
                split = True
            except Exception as exc:  # an outage, or a row that can never be stored
                self.stats.handler_retries += 1
                if not transient(exc):
                    failures += 1
                split = failures >= self.max_attempts
                log.warning(
                    "writing batch failed (%s: %s); %s",
                    type(exc).__name__,
                    exc,
                    "retrying row by row" if split else "retrying",
                )
                if self._stopping.is_set():
                    raise
                if not split:
                    await asyncio.sleep(self.retry_backoff_seconds)
                    continue
            # Row by row: rows refused for good are dead-lettered; on a transient failure, or a
            # row's first failures when the split came from another row's DataError, the rows not
            # yet written go back to the batch loop (rows already written are idempotent). A row
            # is refused only after max_attempts failures, of the batch or of its own.
            retry: list[int] = []
            for label in batch.frame.index:
                if retry:
                    retry.append(int(label))
                    continue
                try:
                    await self.handler(batch.take([label]))
                except DataError:
                    refused.append((int(label), "refused by storage: invalid viewing event"))
                except Exception as exc:
                    if transient(exc):
                        retry.append(int(label))
                        continue
                    n = row_failures[int(label)] = row_failures.get(int(label), 0) + 1
                    if max(n, failures) < self.max_attempts:
                        retry.append(int(label))
                        continue
                    self.stats.handler_refused += 1
                    refused.append(
                        (
                            int(label),
                            f"refused by storage after {max(n, failures)} attempts: "
                            f"{type(exc).__name__}: {exc}",
                        )
                    )
            batch = batch.take(retry)
            failures = 0
            if retry:
                await asyncio.sleep(self.retry_backoff_seconds)
        return refused

    async def _dead_letter(self, poison: list[tuple[ConsumerRecord, str]]) -> None:
        if not poison:
            return
        assert self._dlq is not None
        futures = []
        for record, reason in poison:
            body = {
                "reason": reason,
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "timestamp_ms": record.timestamp,
                "key": record.key.decode("utf-8", "replace") if record.key else None,
                "value": record.value.decode("utf-8", "replace") if record.value is not None else None,
            }
            futures.append(
                await self._dlq.send(
                    self.topics.dead_letter,
                    value=json.dumps(body).encode(),
                    key=record.key,
                    headers=[("dead-letter-reason", reason.encode())],
                )
            )
            log.warning("dead-lettered %s/%d@%d: %s", record.topic, record.partition, record.offset, reason)
        await asyncio.gather(*futures)  # durable before the offsets are committed
        self.stats.dead_letters += len(poison)
        _metrics.DEAD_LETTERS.inc(len(poison))

    def _record_lag(self, committed: dict[TopicPartition, int]) -> None:
        assert self._consumer is not None
        assigned = self._consumer.assignment()  # highwater() asserts on a partition no longer ours
        for tp, offset in committed.items():
            high = self._consumer.highwater(tp) if tp in assigned else None
            if high is not None:
                _metrics.CONSUMER_LAG.labels(topic=tp.topic, partition=str(tp.partition)).set(
                    max(0, high - offset)
                )

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()  # leaves the group; the listener flushes first
            self._consumer = None
        if self._dlq is not None:
            await self._dlq.stop()
            self._dlq = None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m playback_bridge.consumer",
        description="Feed sona from playback events (KAFKA_BROKERS, KAFKA_TOPIC_PREFIX, DATABASE_URL).",
    )
    p.add_argument("--group-id", default="sona-playback")
    p.add_argument("--max-batch", type=int, default=20_000)
    p.add_argument(
        "--metrics-port", type=int, default=0, help="serve Prometheus metrics on this port (0: off)"
    )
    p.add_argument("--session-timeout-ms", type=int, default=10_000)
    p.add_argument("--heartbeat-interval-ms", type=int, default=3_000)
    p.add_argument("--exit-when-idle", type=float, default=None, help="stop after this many idle seconds")
    p.add_argument("--no-upgrade", action="store_true", help="do not run database migrations at start")
    p.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="a saved sona.Sona used when the database has no current model (default: SONA_MODEL_DIR, "
        "else $SONA_DATA_DIR/model): sessions update and save profiles",
    )
    return p


async def _amain(args: argparse.Namespace) -> int:
    from playback_bridge._sink import EventSink
    from sona.storage import Storage
    from sona_app.settings import load_settings

    settings = load_settings()
    if not settings.kafka_brokers:
        log.error("KAFKA_BROKERS is not set; the consumer needs a broker")
        return 2
    if args.model_dir is not None:
        if not Path(args.model_dir).is_dir():
            log.error("--model-dir %s is not a directory with a saved sona.Sona", args.model_dir)
            return 2
        settings = replace(settings, model_dir=args.model_dir)
    storage = Storage(settings.database_url)
    try:
        if not args.no_upgrade:
            storage.upgrade()
        from sona_app.bootstrap import LiveEngine, resolve_model  # torch: only when profiles are kept

        # The model the services serve, resolved the same way (current published model, else
        # SONA_MODEL_DIR / $SONA_DATA_DIR/model); without one, events are stored but no profiles.
        engine = resolve_model(settings, storage)
        if engine is None:
            log.warning(
                "no trained model (database or %s): storing events without profiles", settings.engine_dir
            )
        else:
            log.info("updating profiles with model %s", engine.model_id_)
        sink = EventSink(storage, engine, max_cached_users=settings.user_cache_size)
        live = None
        if engine is not None:

            def swapped(new: object) -> None:  # a model rollout: profiles come from the new model
                sink.engine = new  # type: ignore[assignment]
                sink._hydrated.clear()  # the new engine has no user's stored history yet

            live = LiveEngine(engine, storage, settings=settings, on_swap=swapped).start()
        consumer = PlaybackConsumer(
            settings.kafka_brokers,
            Topics(settings.kafka_topic_prefix),
            sink,
            group_id=args.group_id,
            partitions=settings.kafka_partitions,
            max_batch=args.max_batch,
            session_timeout_ms=args.session_timeout_ms,
            heartbeat_interval_ms=args.heartbeat_interval_ms,
        )
        try:
            if args.metrics_port:
                from prometheus_client import start_http_server

                start_http_server(args.metrics_port, addr="127.0.0.1")
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, consumer.request_stop)
            await consumer.start()  # stops what it started if it fails
            gc.freeze()  # the start-up heap (modules, the engine) is permanent: keep full collections off it
            log.info("consuming %s as group %r", ", ".join(consumer.topics.consumed), args.group_id)
            stats = await consumer.run(max_idle_seconds=args.exit_when_idle)
        finally:
            await consumer.stop()
            if live is not None:
                live.stop()
    finally:
        storage.dispose()
    log.info("stopped: %s", stats)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return asyncio.run(_amain(_parser().parse_args(argv)))
    except KafkaError as exc:
        log.error("Kafka error: %s", exc)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
