"""SONA, playback and discovery on one port: one FastAPI app inside one BentoML service.

Each service keeps its own ``create_app`` factory; :func:`compose` copies their
routes and error handlers into one app and runs their lifespans, so the three
APIs answer on one port with the same paths as when they run alone. The apps
share one engine: playback events go through the event bus to an
:class:`~playback_bridge.EventSink` that calls the engine's ``observe`` (under
the service's write lock), so a finished viewing moves the user's profile and
recommendations with no Kafka; discovery personalizes search with the same
engine. With ``KAFKA_BROKERS`` set, playback publishes to Kafka instead and
``sona consume`` writes the events.

Run it with ``bentoml serve serving.gateway:Gateway`` (what ``sona serve`` and
``make quickstart`` do). API docs: ``/api/v1/docs``.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import bentoml
import redis.asyncio as aioredis
from fastapi import FastAPI
from fastapi.routing import APIRoute

import sona
from playback_bridge import (
    EventProducer,
    EventSink,
    InProcessEventBus,
    KafkaEventProducer,
    SyncNotifier,
    Topics,
)
from serving import _api as sona_api
from serving import discovery, playback
from serving._errors import install_error_handlers
from serving._fatal import stop_on_config_error
from serving._limits import guard
from serving._memory import start_trimming
from serving._metrics import BENTOML_METRICS_OFF, install_metrics_route
from serving._openapi import document
from serving._reuseport import adopt_listener
from serving._shell import NewlinePaths, make_shell
from serving._state import ServiceState, build_state
from serving._titles import KnownTitles
from sona.search import CachedEmbedder, EnginePersonalizer, MiniLMEmbedder, SearchIndex
from sona_app.settings import Settings, load_settings

__all__ = ["Gateway", "GatewayParts", "build_gateway", "compose"]

logger = logging.getLogger("serving.gateway")

API_DOCS = "/api/v1/docs"


class _ServedPersonalizer(EnginePersonalizer):
    """Search personalized by the engine the state serves now: the new one after a model rollout."""

    def __init__(self, state: ServiceState) -> None:
        self.state = state

    @property
    def engine(self) -> sona.Sona:  # type: ignore[override]
        return self.state.engine


def compose(*apps: FastAPI, title: str = "sona", version: str = sona.__version__) -> FastAPI:
    """One app with every path operation, error handler and lifespan of ``apps``.

    Each sub-app's own docs routes are dropped; the composed app documents all
    of them at ``/api/v1/docs``. Dependencies read ``request.app.state``, so the
    caller sets the union of the sub-apps' state on the result (as
    :func:`build_gateway` does).
    """

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            for sub in apps:
                await stack.enter_async_context(sub.router.lifespan_context(sub))
            yield

    app = FastAPI(
        title=title,
        version=version,
        lifespan=lifespan,
        openapi_url="/api/v1/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    document(app, docs_url=API_DOCS)
    seen: set[tuple[str, frozenset[str]]] = set()
    for sub in apps:
        for route in sub.router.routes:
            if not isinstance(route, APIRoute):
                continue
            key = (route.path, frozenset(route.methods or ()))
            if key in seen:
                raise sona.ConfigError(f"two services define {sorted(key[1])} {route.path}")
            seen.add(key)
            app.router.routes.append(route)
        for exc, handler in sub.exception_handlers.items():
            app.exception_handlers.setdefault(exc, handler)
    return app


@dataclass(slots=True)
class GatewayParts:
    """The composed app and what it is built from (tests and the quickstart inspect these)."""

    app: FastAPI
    state: ServiceState
    sink: EventSink | None
    index: SearchIndex


def _producer(settings: Settings, sink: EventSink | None) -> EventProducer:
    if settings.kafka_brokers:
        return KafkaEventProducer(
            settings.kafka_brokers, Topics(settings.kafka_topic_prefix), partitions=settings.kafka_partitions
        )
    assert sink is not None
    return InProcessEventBus(sink)


def build_gateway(settings: Settings, *, redis_namespace: str = "playback") -> GatewayParts:
    """Start-up of all three services over one engine and one database.

    Raises ``sona.ConfigError`` without a JWT secret outside dev mode (as each
    service does on its own).
    """
    state = build_state(settings)
    secret = state.jwt_secret
    # The sink observes through the live engine: the engine served now, under the write lock, and
    # its users count toward the process's user bound (SONA_USER_CACHE_SIZE).
    sink = (
        None
        if settings.kafka_brokers
        else EventSink(state.storage, state.live, max_cached_users=settings.user_cache_size)
    )
    redis = aioredis.from_url(
        settings.redis_url, socket_connect_timeout=0.5, socket_timeout=1.0, health_check_interval=30
    )
    playback_app = playback.create_app(
        redis=redis,
        producer=_producer(settings, sink),
        notifier=SyncNotifier(settings.sync_service_url),
        jwt_secret=secret,
        namespace=redis_namespace,
        known_titles=KnownTitles(state.storage.load_catalog),
    )
    # title vectors persist in the data dir: a restart encodes only titles it has not seen
    embedder = CachedEmbedder(MiniLMEmbedder(), settings.data_dir / "title-vectors")
    index = discovery.build_index(embedder, state.engine.catalog, state.engine)
    index.personalizer = _ServedPersonalizer(state)  # not the start-up engine: it follows rollouts
    search_app = discovery.create_app(index, jwt_secret=secret, catalog_loader=state.storage.load_catalog)
    app = compose(sona_api.create_app(state), playback_app, search_app)

    @contextlib.asynccontextmanager
    async def background(_: FastAPI) -> AsyncIterator[None]:
        # Training the sink queues is a row in training_jobs: the state's worker claims it.
        try:
            yield
        finally:
            await redis.aclose()

    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(a: FastAPI) -> AsyncIterator[None]:
        async with inner(a), background(a):
            yield

    app.router.lifespan_context = lifespan
    sona_api.attach_state(app, state)
    discovery.configure(app, index=index, jwt_secret=secret, catalog_loader=state.storage.load_catalog)
    app.state.live_engine = state.live  # a searching user's stored events, as /recommendations reads them
    return GatewayParts(app=app, state=state, sink=sink, index=index)


_shell = make_shell()
_edge = guard(_shell)
install_metrics_route(_shell)


adopt_listener()  # this worker's own SO_REUSEPORT socket, before uvicorn serves it


@bentoml.service(
    name="sona-gateway", traffic={"timeout": 60}, metrics=BENTOML_METRICS_OFF
)  # workers: sona serve --workers
@bentoml.asgi_app(_shell, path="/")
class Gateway:
    """SONA + playback + discovery in one process and one port; settings from the environment."""

    def __init__(self) -> None:
        with stop_on_config_error():
            settings = load_settings()
            self.parts = build_gateway(settings)
        _edge.apply(settings, self.parts.state.jwt_secret, self.parts.app)
        gc.freeze()  # the start-up heap is permanent; keep full GC passes off the request path
        start_trimming()
        _shell.state.inner = self.parts.app
        _shell.mount("/", self.parts.app)

    def __is_ready__(self) -> bool:
        return self.parts.state.ready_model() and self.parts.state.storage.ping()

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        self.parts.state.stop()
        self.parts.state.storage.dispose()


Gateway.add_asgi_middleware(NewlinePaths, mounted=_shell)
