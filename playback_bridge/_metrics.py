"""Prometheus metrics of the playback bridge (default registry).

The consumer process serves them with ``--metrics-port``; the playback service
shows them on its ``/metrics``. Components also keep plain integer counters
(``stats``) so callers and tests can read their own totals.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "CONSUMER_BATCH_SECONDS",
    "CONSUMER_LAG",
    "CONSUMER_MESSAGES",
    "DEAD_LETTERS",
    "EVENTS_WRITTEN",
    "PRODUCER_EVENTS",
    "SYNC_LATENCY",
    "SYNC_NOTIFICATIONS",
    "TRAINING_QUEUED",
]

SYNC_NOTIFICATIONS = Counter(
    "playback_sync_notifications_total",
    "Sync progress notifications by outcome (sent, failed, dropped, coalesced).",
    labelnames=["outcome"],
)
SYNC_LATENCY = Histogram(
    "playback_sync_notification_seconds",
    "Time spent on one sync notification, including timeouts.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1),
)
PRODUCER_EVENTS = Counter(
    "playback_events_published_total",
    "Playback events by outcome (sent, dropped, retried, refused) and transport (kafka, inprocess).",
    labelnames=["transport", "outcome"],
)
CONSUMER_MESSAGES = Counter(
    "playback_consumer_messages_total",
    "Messages read by the consumer, by topic kind.",
    labelnames=["event_type"],
)
EVENTS_WRITTEN = Counter(
    "playback_consumer_viewing_events_total",
    "Viewing events handed to storage, by result (inserted, duplicate).",
    labelnames=["result"],
)
DEAD_LETTERS = Counter(
    "playback_consumer_dead_letters_total",
    "Poison messages sent to the dead-letter topic.",
)
CONSUMER_LAG = Gauge(
    "playback_consumer_lag_messages",
    "Highwater minus committed position, per partition.",
    labelnames=["topic", "partition"],
)
CONSUMER_BATCH_SECONDS = Histogram(
    "playback_consumer_batch_seconds",
    "Wall time to decode, write and commit one batch.",
)
TRAINING_QUEUED = Counter(
    "playback_training_users_queued_total",
    "Users queued for batched LoRA training after crossing the thresholds.",
)
SINK_USERS_DROPPED = Counter(
    "sona_sink_users_dropped_total",
    "Users the event sink's engine forgot to stay within SONA_USER_CACHE_SIZE (their history is read again).",
)
