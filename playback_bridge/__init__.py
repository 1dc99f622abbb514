"""The playback bridge: Redis playback sessions, sync notifications, playback events, and the
consumer that turns them into sona viewing events.

``serving.playback`` is the HTTP service; ``python -m playback_bridge.consumer``
runs the Kafka consumer as its own process.
"""

from playback_bridge._batch import PlaybackBatch, decode_batch
from playback_bridge._messages import (
    MAX_SECONDS,
    SCHEMA_VERSION,
    TIMESTAMP_RANGE,
    EventType,
    PlaybackEvent,
    PlaybackState,
    PoisonMessageError,
    PositionUpdated,
    Quality,
    SessionCreated,
    SessionEnded,
    SyncProgress,
    completion_rate,
    decode_event,
    encode_event,
    viewing_event_id,
)
from playback_bridge._producer import (
    DeliveryError,
    EventHandler,
    EventProducer,
    InProcessEventBus,
    KafkaEventProducer,
    ProducerStats,
    Topics,
    ensure_topics,
)
from playback_bridge._sessions import (
    ContinueWatchingItem,
    PlaybackSession,
    SessionStore,
    resume_position,
)
from playback_bridge._sink import BatchResult, EventSink, ProfileEngine, TrainingQueue, viewing_events
from playback_bridge._sync import SyncNotifier, SyncStats

__all__ = [
    "MAX_SECONDS",
    "SCHEMA_VERSION",
    "TIMESTAMP_RANGE",
    "BatchResult",
    "ContinueWatchingItem",
    "DeliveryError",
    "EventHandler",
    "EventProducer",
    "EventSink",
    "EventType",
    "InProcessEventBus",
    "KafkaEventProducer",
    "PlaybackBatch",
    "PlaybackEvent",
    "PlaybackSession",
    "PlaybackState",
    "PoisonMessageError",
    "PositionUpdated",
    "ProducerStats",
    "ProfileEngine",
    "Quality",
    "SessionCreated",
    "SessionEnded",
    "SessionStore",
    "SyncNotifier",
    "SyncProgress",
    "SyncStats",
    "Topics",
    "TrainingQueue",
    "completion_rate",
    "decode_batch",
    "decode_event",
    "encode_event",
    "ensure_topics",
    "resume_position",
    "viewing_event_id",
    "viewing_events",
]
