"""Publishing playback events: one interface, a Kafka and an in-process implementation.

Two ways in. ``await deliver(event)`` returns only once the event is durable:
the broker acknowledged it (``acks="all"``), or the in-process handler (the
:class:`~playback_bridge.EventSink`) committed it to the database; the playback
API answers position updates and session ends this way, so a 2xx means the
event reaches ``viewing_events`` even if the process is killed the next instant.
It raises :class:`DeliveryError` when that cannot be confirmed in time (the
caller answers 503 and the client retries; events are idempotent per session).
``publish`` is a plain (non-async) call that only appends to the same bounded
buffer, for events nobody waits on. One background task drains the buffer in
batches, so concurrent requests share broker round trips. When the
buffer is full (a long broker outage, a stuck handler) new events are dropped
and counted; events that fail to send are put back and retried with backoff.
A delivery that keeps failing with an error that is not an outage is retried
event by event after ``max_attempts`` tries, and the events that fail again are
discarded and counted as ``refused``, so one event that can never be stored
cannot hold up the others. Events still undelivered when :meth:`stop` gives up
are counted as ``dropped`` and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from playback_bridge import _metrics
from playback_bridge._messages import (
    EventType,
    PositionUpdated,
    SessionCreated,
    SessionEnded,
    encode_event,
)
from playback_bridge._retry import transient

__all__ = [
    "DeliveryError",
    "EventHandler",
    "EventProducer",
    "InProcessEventBus",
    "KafkaEventProducer",
    "ProducerStats",
    "Topics",
    "ensure_topics",
]

log = logging.getLogger(__name__)

AnyEvent = SessionCreated | PositionUpdated | SessionEnded
#: What the in-process bus (and the Kafka consumer, after decoding) hands batches to.
EventHandler = Callable[[Sequence[AnyEvent]], Awaitable[object]]

_TOPIC_ALREADY_EXISTS = 36


class DeliveryError(Exception):
    """An event could not be confirmed durable (buffer full, timeout, refused or stopped)."""


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names derived from ``KAFKA_TOPIC_PREFIX``."""

    prefix: str = "playback"

    def for_type(self, event_type: EventType) -> str:
        return f"{self.prefix}.{event_type.value}"

    @property
    def dead_letter(self) -> str:
        return f"{self.prefix}.dead-letter"

    @property
    def consumed(self) -> tuple[str, str]:
        """The topics the consumer feeds into sona."""
        return (self.for_type(EventType.POSITION_UPDATED), self.for_type(EventType.SESSION_ENDED))

    @property
    def all(self) -> tuple[str, ...]:
        return (*(self.for_type(t) for t in EventType), self.dead_letter)

    def event_type(self, topic: str) -> EventType | None:
        for t in EventType:
            if topic == self.for_type(t):
                return t
        return None


async def ensure_topics(brokers: Sequence[str], names: Sequence[str], partitions: int) -> list[str]:
    """Create the topics that are missing; returns the names created.

    Tansu (our test broker) answers ``CreateTopics`` like Kafka, including error
    36 for an existing topic, which is treated as success.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=list(brokers))
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1) for name in names]
        )
    finally:
        await admin.close()
    created = []
    for name, code, message in response.topic_errors:
        if code == 0:
            created.append(name)
        elif code != _TOPIC_ALREADY_EXISTS:
            raise KafkaError(f"cannot create topic {name!r}: error {code} {message}")
    return created


@runtime_checkable
class EventProducer(Protocol):
    """Where the playback service sends its events."""

    async def start(self) -> None: ...

    def publish(self, event: AnyEvent) -> None:
        """Queue one event and return at once; never raises, never blocks."""
        ...

    async def deliver(self, event: AnyEvent, timeout: float | None = None) -> None:
        """Queue one event and wait until it is durable; :class:`DeliveryError` if not confirmed."""
        ...

    async def flush(self, timeout: float = 10.0) -> None:
        """Wait until everything queued so far has been delivered (or the timeout)."""
        ...

    async def stop(self, timeout: float = 5.0) -> None:
        """Deliver what is buffered (up to ``timeout`` seconds), then release connections."""
        ...


@dataclass(slots=True)
class ProducerStats:
    """Running totals of one producer (also exported as Prometheus metrics)."""

    published: int = 0
    delivered: int = 0
    #: Not delivered: the buffer was full, or :meth:`~EventProducer.stop` gave up on them.
    dropped: int = 0
    retried: int = 0
    #: Discarded after failing ``max_attempts`` times and once more on their own (not an outage).
    refused: int = 0


class _Buffered:
    """A bounded buffer drained by one background task that delivers batches."""

    transport = "base"

    def __init__(
        self,
        *,
        max_buffer: int,
        max_batch: int,
        retry_backoff_seconds: float,
        max_attempts: int = 5,
        delivery_timeout: float = 5.0,
    ) -> None:
        self.max_buffer = max_buffer
        self.delivery_timeout = delivery_timeout
        self.max_batch = max_batch
        self.retry_backoff_seconds = retry_backoff_seconds
        self.max_attempts = max_attempts
        self.stats = ProducerStats()
        self._buffer: deque[AnyEvent] = deque()
        # Taken from the buffer and not yet delivered or put back.
        self._in_flight: list[AnyEvent] = []
        # Deliveries in a row that raised an error other than an outage.
        self._failures = 0
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        # Callers of deliver() waiting on an event, by the event object's id (the buffer holds it).
        self._waiters: dict[int, asyncio.Future[None]] = {}

    def publish(self, event: AnyEvent) -> None:
        self._enqueue(event)

    def _enqueue(self, event: AnyEvent) -> bool:
        if len(self._buffer) >= self.max_buffer:
            self.stats.dropped += 1
            _metrics.PRODUCER_EVENTS.labels(transport=self.transport, outcome="dropped").inc()
            return False
        self._buffer.append(event)
        self.stats.published += 1
        self._idle.clear()
        self._wakeup.set()
        return True

    async def deliver(self, event: AnyEvent, timeout: float | None = None) -> None:
        """Queue ``event`` and wait until it is durable (see the module docstring).

        ``timeout`` defaults to the producer's ``delivery_timeout``. On a timeout
        the event stays queued and may still be delivered: at least once, which
        the consumer's per-session idempotence absorbs.
        """
        timeout = self.delivery_timeout if timeout is None else timeout
        if self._task is None:
            raise DeliveryError("the producer is not running")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieve)
        if not self._enqueue(event):
            raise DeliveryError(f"event buffer full ({self.max_buffer} events waiting)")
        self._waiters[id(event)] = future
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            raise DeliveryError(f"not confirmed within {timeout:g} s") from None

    def _settle(self, events: Sequence[AnyEvent], error: str | None = None) -> None:
        """Resolve the waiters of ``events``: delivered, or failed with ``error``."""
        for event in events:
            future = self._waiters.pop(id(event), None)
            if future is None or future.done():
                continue
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(DeliveryError(error))

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def _start_loop(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _deliver(self, batch: list[AnyEvent]) -> list[AnyEvent]:
        """Deliver a batch; return the events that failed and should be retried."""
        raise NotImplementedError

    async def _run(self) -> None:
        while True:
            if not self._buffer:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            n = min(self.max_batch, len(self._buffer))
            batch = [self._buffer.popleft() for _ in range(n)]
            self._in_flight = batch
            refused = self.stats.refused
            try:
                failed = await self._deliver(batch)
                self._failures = 0
            except Exception as exc:  # a bug or outage in delivery must not kill the loop
                log.exception("event delivery failed; will retry")
                failed = batch
                if not transient(exc):
                    self._failures += 1
                    if self._failures >= self.max_attempts:
                        failed = await self._deliver_each(batch)
            self._in_flight = []
            retry = {id(e) for e in failed}
            self._settle([e for e in batch if id(e) not in retry])  # refused ones are settled already
            delivered = len(batch) - len(failed) - (self.stats.refused - refused)
            self.stats.delivered += delivered
            _metrics.PRODUCER_EVENTS.labels(transport=self.transport, outcome="sent").inc(delivered)
            if failed:
                self.stats.retried += len(failed)
                _metrics.PRODUCER_EVENTS.labels(transport=self.transport, outcome="retried").inc(len(failed))
                self._buffer.extendleft(reversed(failed))
                while len(self._buffer) > self.max_buffer:  # newer events pay for the outage
                    self._settle([self._buffer.pop()], "dropped: the event buffer overflowed")
                    self.stats.dropped += 1
                    _metrics.PRODUCER_EVENTS.labels(transport=self.transport, outcome="dropped").inc()
                await asyncio.sleep(self.retry_backoff_seconds)

    async def _deliver_each(self, batch: list[AnyEvent]) -> list[AnyEvent]:
        """Deliver one event at a time; discard those that fail for good, return those hit by an outage."""
        self._failures = 0
        failed: list[AnyEvent] = []
        for i, event in enumerate(batch):
            try:
                failed.extend(await self._deliver([event]))
            except Exception as exc:
                if transient(exc):
                    return failed + batch[i:]
                self.stats.refused += 1
                self._settle([event], f"refused: {type(exc).__name__}: {exc}")
                _metrics.PRODUCER_EVENTS.labels(transport=self.transport, outcome="refused").inc()
                log.error(
                    "discarding %s event of session %r after %d failed deliveries: %s: %s",
                    event.event_type.value,
                    event.session_id,
                    self.max_attempts + 1,
                    type(exc).__name__,
                    exc,
                )
        return failed

    async def flush(self, timeout: float = 10.0) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)

    async def _stop_loop(self, timeout: float) -> None:
        await self.flush(timeout)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        lost = len(self._in_flight) + len(self._buffer)
        if lost:
            # The batch being sent when cancelled may be partly delivered: no confirmation, so counted.
            self.stats.dropped += lost
            _metrics.PRODUCER_EVENTS.labels(transport=self.transport, outcome="dropped").inc(lost)
            log.warning("stopped with %d events undelivered after %.1f s; they are dropped", lost, timeout)
        self._settle([*self._in_flight, *self._buffer], "the producer stopped before delivering it")
        self._in_flight = []
        self._buffer.clear()
        self._idle.set()


def _retrieve(future: asyncio.Future[None]) -> None:
    """Mark a waiter's exception as seen: after a timeout nobody awaits it any more."""
    if not future.cancelled():
        future.exception()


class InProcessEventBus(_Buffered):
    """Delivers the event objects themselves to a handler in the same process.

    :meth:`deliver` returns once the handler has returned for the batch holding
    the event; with the :class:`~playback_bridge.EventSink` that is after the
    database commit.

    Used when ``KAFKA_BROKERS`` is unset, so the quickstart still feeds sona
    from playback: the handler is the consumer's :class:`~playback_bridge.EventSink`.
    """

    transport = "inprocess"

    def __init__(
        self,
        handler: EventHandler,
        *,
        max_buffer: int = 10_000,
        max_batch: int = 1_000,
        retry_backoff_seconds: float = 1.0,
        max_attempts: int = 5,
        delivery_timeout: float = 5.0,
    ) -> None:
        super().__init__(
            max_buffer=max_buffer,
            max_batch=max_batch,
            retry_backoff_seconds=retry_backoff_seconds,
            max_attempts=max_attempts,
            delivery_timeout=delivery_timeout,
        )
        self.handler = handler

    async def start(self) -> None:
        self._start_loop()

    async def _deliver(self, batch: list[AnyEvent]) -> list[AnyEvent]:
        await self.handler(batch)
        return []

    async def stop(self, timeout: float = 5.0) -> None:
        await self._stop_loop(timeout)


class KafkaEventProducer(_Buffered):
    """Publishes to ``{prefix}.{event-type}`` with key = ``user_id`` (snappy, ``acks="all"``).

    ``linger_ms`` is 0 by default: callers of :meth:`deliver` wait for the
    acknowledgement, and events that arrive while a batch is in flight form the
    next batch anyway.

    The broker may be down at start-up or go away later: the background task
    keeps (re)connecting and the buffer holds up to ``max_buffer`` events.
    """

    transport = "kafka"

    def __init__(
        self,
        brokers: Sequence[str],
        topics: Topics,
        *,
        partitions: int = 3,
        create_topics: bool = True,
        max_buffer: int = 10_000,
        max_batch: int = 1_000,
        linger_ms: int = 0,
        request_timeout_ms: int = 5_000,
        retry_backoff_seconds: float = 0.5,
        delivery_timeout: float = 5.0,
    ) -> None:
        super().__init__(
            max_buffer=max_buffer,
            max_batch=max_batch,
            retry_backoff_seconds=retry_backoff_seconds,
            delivery_timeout=delivery_timeout,
        )
        self.brokers = tuple(brokers)
        self.topics = topics
        self.partitions = partitions
        self.create_topics = create_topics
        self.linger_ms = linger_ms
        self.request_timeout_ms = request_timeout_ms
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        """Try to connect now; if the broker is down, connect later from the send loop."""
        with contextlib.suppress(KafkaError, OSError):
            await self._connect()
        self._start_loop()

    async def _connect(self) -> AIOKafkaProducer:
        if self._producer is None:
            if self.create_topics:
                await ensure_topics(self.brokers, self.topics.all, self.partitions)
            producer = AIOKafkaProducer(
                bootstrap_servers=list(self.brokers),
                compression_type="snappy",
                acks="all",
                linger_ms=self.linger_ms,
                request_timeout_ms=self.request_timeout_ms,
            )
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer
        return self._producer

    async def _deliver(self, batch: list[AnyEvent]) -> list[AnyEvent]:
        try:
            producer = await self._connect()
        except (KafkaError, OSError) as exc:
            log.warning("Kafka unavailable (%s); %d events buffered", exc, len(self._buffer) + len(batch))
            return batch
        futures: list[asyncio.Future[object]] = []
        sent: list[AnyEvent] = []
        try:
            for event in batch:
                futures.append(
                    await producer.send(
                        self.topics.for_type(event.event_type),
                        value=encode_event(event),
                        key=event.user_id.encode(),
                    )
                )
                sent.append(event)
        except KafkaError as exc:
            log.warning("Kafka send failed (%s); will retry", exc)
        results = await asyncio.gather(*futures, return_exceptions=True)
        failed = [e for e, r in zip(sent, results, strict=True) if isinstance(r, BaseException)]
        return failed + batch[len(sent) :]

    async def stop(self, timeout: float = 5.0) -> None:
        await self._stop_loop(timeout)
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
