"""The playback HTTP service: sessions in Redis, then events and sync notifications.

``create_app`` builds the FastAPI app from its collaborators, so tests run it
in-process against real Redis; :class:`PlaybackService` is the thin BentoML
wrapper that builds them from the environment (``bentoml serve
serving.playback:PlaybackService``).

Each write goes to Redis first. A position update or a session end is then
answered only once its event is durable (``EventProducer.deliver``: the broker
acknowledged it, or the in-process sink committed it), so a 2xx means the event
reaches ``viewing_events`` even if this process is killed the next instant;
when that cannot be confirmed the answer is 503 and the client retries.
``SyncNotifier.notify`` starts a bounded fire-and-forget task that can neither
delay nor fail the request; a session's creation is published without waiting.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator, Container
from typing import Annotated

import bentoml
import redis.asyncio as aioredis
from fastapi import Depends, FastAPI, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, Strict
from redis.exceptions import RedisError
from starlette.responses import JSONResponse

from playback_bridge import (
    MAX_SECONDS,
    ContinueWatchingItem,
    DeliveryError,
    EventProducer,
    InProcessEventBus,
    KafkaEventProducer,
    PlaybackSession,
    PlaybackState,
    PositionUpdated,
    Quality,
    SessionCreated,
    SessionEnded,
    SessionStore,
    SyncNotifier,
    SyncProgress,
    Topics,
    completion_rate,
)
from serving._auth import Principal, authorize, resolve_jwt_secret
from serving._errors import REQUEST_ID_HEADER, bearer_principal, install_error_handlers, request_id
from serving._fatal import stop_on_config_error
from serving._limits import guard
from serving._metrics import BENTOML_METRICS_OFF, install_metrics_route
from serving._openapi import document, errors
from serving._reuseport import adopt_listener
from serving._shell import NewlinePaths, make_shell
from serving._titles import KnownTitles
from sona import Identifier, NotFoundError, UnknownContentError
from sona_app.settings import Settings, load_settings

__all__ = ["PlaybackService", "build_app", "create_app"]

#: Ids follow sona's one identifier rule, as the event bridge does (PostgreSQL text cannot hold NUL).
_SessionId = Annotated[Identifier, Path()]
#: Seconds of a title: finite, at most a week (``1e308`` is a client bug, not a film).
_Seconds = Annotated[float, Strict(), Field(allow_inf_nan=False, le=MAX_SECONDS)]


async def _caller(request: Request) -> Principal:
    # An async wrapper: FastAPI runs a plain ``def`` dependency in a worker thread, which
    # cost ~1 ms per request on the PATCH hot path.
    return bearer_principal(request)


Authenticated = Annotated[Principal, Depends(_caller)]


class CreateSessionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: Identifier
    content_id: Identifier
    device_id: Identifier
    duration_seconds: Annotated[_Seconds, Field(gt=0)]
    quality: Quality = Quality.AUTO


class PositionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    position_seconds: Annotated[_Seconds, Field(ge=0)]
    playback_state: PlaybackState | None = None


class UserSessions(BaseModel):
    user_id: str
    sessions: list[PlaybackSession]


class ContinueWatching(BaseModel):
    user_id: str
    items: list[ContinueWatchingItem]


class SessionNotFoundError(NotFoundError):
    """No live playback session has this id."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"unknown playback session {session_id!r}")
        self.session_id = session_id


async def _redis_unavailable(request: Request, exc: Exception) -> JSONResponse:
    rid = request_id(request)
    body = {
        "error": "session_store_unavailable",
        "message": "the playback session store (Redis) is unreachable; retry shortly",
        "request_id": rid,
    }
    return JSONResponse(body, status_code=503, headers={REQUEST_ID_HEADER: rid, "Retry-After": "1"})


async def _not_delivered(request: Request, exc: Exception) -> JSONResponse:
    rid = request_id(request)
    body = {
        "error": "event_not_confirmed",
        "message": f"the playback event could not be confirmed durable ({exc}); retry shortly",
        "request_id": rid,
    }
    return JSONResponse(body, status_code=503, headers={REQUEST_ID_HEADER: rid, "Retry-After": "1"})


def _ended(session: PlaybackSession) -> SessionEnded:
    return SessionEnded(
        session_id=session.id,
        user_id=session.user_id,
        content_id=session.content_id,
        device_id=session.device_id,
        final_position_seconds=session.position_seconds,
        completion_rate=completion_rate(session.position_seconds, session.duration_seconds),
        duration_seconds=session.duration_seconds,
    )


def create_app(
    *,
    redis: aioredis.Redis,
    producer: EventProducer,
    notifier: SyncNotifier,
    jwt_secret: str,
    namespace: str = "playback",
    known_titles: Container[str] | None = None,
) -> FastAPI:
    """The playback API over the given Redis client, event producer and sync notifier.

    With ``known_titles``, a session for a title not in it is refused (404
    ``unknown_content``) before anything is stored or published.

    The app's lifespan starts the producer, freezes the start-up heap for the
    garbage collector (``gc.freeze``) and, on shutdown, flushes and stops the
    producer and closes the notifier; the Redis client stays the caller's.
    """

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await producer.start()
        # Everything alive after start-up (modules, models, clients) lives as long as the process;
        # moving it out of the collector's view turns an occasional ~140 ms full collection
        # (≈300k objects) into a few ms, which was most of the PATCH tail latency.
        gc.freeze()
        try:
            yield
        finally:
            await producer.stop()
            await notifier.aclose()

    app = FastAPI(title="sona playback", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.jwt_secret = jwt_secret
    install_error_handlers(app)
    document(app, docs_url="/docs")
    app.add_exception_handler(RedisError, _redis_unavailable)
    app.add_exception_handler(DeliveryError, _not_delivered)
    store = SessionStore(redis, namespace=namespace)

    async def owned(session_id: str, principal: Authenticated) -> PlaybackSession:
        session = await store.get(session_id)
        if session is None:
            raise SessionNotFoundError(session_id)
        authorize(principal, session.user_id)
        return session

    @app.post("/api/v1/sessions", status_code=201, responses=errors(403, 404))
    async def create_session(body: CreateSessionRequest, principal: Authenticated) -> PlaybackSession:
        authorize(principal, body.user_id)
        if known_titles is not None and body.content_id not in known_titles:
            raise UnknownContentError([body.content_id])
        session = await store.create(**body.model_dump())
        producer.publish(
            SessionCreated(
                session_id=session.id,
                user_id=session.user_id,
                content_id=session.content_id,
                device_id=session.device_id,
                duration_seconds=session.duration_seconds,
                quality=session.quality,
                timestamp=session.started_at,
            )
        )
        return session

    @app.get("/api/v1/sessions/{session_id}", responses=errors(403, 404))
    async def get_session(session_id: _SessionId, principal: Authenticated) -> PlaybackSession:
        return await owned(session_id, principal)

    # The hot path returns pre-serialized JSON: FastAPI would validate the model again on the way out.
    @app.patch(
        "/api/v1/sessions/{session_id}/position", response_model=PlaybackSession, responses=errors(403, 404)
    )
    async def update_position(
        session_id: _SessionId, body: PositionRequest, principal: Authenticated
    ) -> Response:
        current = await owned(session_id, principal)
        session = await store.update_position(current, body.position_seconds, body.playback_state)
        if session is None:
            raise SessionNotFoundError(session_id)
        event = PositionUpdated(
            session_id=session.id,
            user_id=session.user_id,
            content_id=session.content_id,
            device_id=session.device_id,
            position_seconds=session.position_seconds,
            playback_state=session.playback_state,
            duration_seconds=session.duration_seconds,
            timestamp=session.updated_at,
        )
        notifier.notify(
            SyncProgress(
                user_id=session.user_id,
                content_id=session.content_id,
                device_id=session.device_id,
                position_seconds=session.position_seconds,
                duration_seconds=session.duration_seconds,
                state=session.playback_state,
                timestamp=session.updated_at,
            )
        )
        await producer.deliver(event)  # durable before the answer
        return Response(session.model_dump_json(), media_type="application/json")

    @app.delete("/api/v1/sessions/{session_id}", status_code=204, responses=errors(403))
    async def delete_session(session_id: _SessionId, principal: Authenticated) -> Response:
        current = await store.get(session_id)
        if current is not None:
            authorize(principal, current.user_id)
            # Durable before the session disappears: if this fails the session is still there to retry.
            await producer.deliver(_ended(current))
            final = await store.delete(session_id)
            if final is not None and final.position_seconds != current.position_seconds:
                await producer.deliver(_ended(final))  # a position update landed in between
        return Response(status_code=204)

    @app.get("/api/v1/users/{user_id}/sessions", responses=errors(403))
    async def user_sessions(user_id: Annotated[Identifier, Path()], principal: Authenticated) -> UserSessions:
        authorize(principal, user_id)
        return UserSessions(user_id=user_id, sessions=await store.for_user(user_id))

    @app.get("/api/v1/playback/continue-watching", responses=errors(403))
    async def continue_watching(
        user_id: Annotated[Identifier, Query()],
        principal: Authenticated,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
    ) -> ContinueWatching:
        authorize(principal, user_id)
        return ContinueWatching(user_id=user_id, items=await store.continue_watching(user_id, limit))

    return app


def build_app(settings: Settings) -> FastAPI:
    """The app wired from settings: Kafka when ``KAFKA_BROKERS`` is set, else the in-process bus."""
    redis = aioredis.from_url(
        settings.redis_url,
        socket_connect_timeout=0.5,
        socket_timeout=1.0,
        health_check_interval=30,
    )
    producer: EventProducer
    if settings.kafka_brokers:
        producer = KafkaEventProducer(
            settings.kafka_brokers, Topics(settings.kafka_topic_prefix), partitions=settings.kafka_partitions
        )
    else:
        from playback_bridge import EventSink
        from sona.storage import Storage

        storage = Storage(settings.database_url)
        storage.upgrade()
        producer = InProcessEventBus(EventSink(storage))
    from sona.storage import Storage

    catalog = Storage(settings.database_url)  # the shared catalog; read lazily, at most once a minute
    return create_app(
        redis=redis,
        producer=producer,
        notifier=SyncNotifier(settings.sync_service_url),
        jwt_secret=resolve_jwt_secret(settings),
        known_titles=KnownTitles(catalog.load_catalog),
    )


_shell = make_shell()
_edge = guard(_shell)
install_metrics_route(_shell)


adopt_listener()  # this worker's own SO_REUSEPORT socket, before uvicorn serves it


@bentoml.service(name="playback", traffic={"timeout": 10}, metrics=BENTOML_METRICS_OFF)
@bentoml.asgi_app(_shell, path="/")
class PlaybackService:
    """Playback sessions over HTTP; configuration comes from the environment (``sona_app.settings``)."""

    def __init__(self) -> None:
        with stop_on_config_error():
            settings = load_settings()
            self.app = build_app(settings)
        _edge.apply(settings, self.app.state.jwt_secret, self.app)
        _shell.state.inner = self.app
        _shell.mount("/", self.app)


PlaybackService.add_asgi_middleware(NewlinePaths, mounted=_shell)
