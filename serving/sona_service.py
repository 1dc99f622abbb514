"""The SONA HTTP service on BentoML 1.4.

Run it with ``bentoml serve serving.sona_service:SonaService``. The FastAPI app
of :mod:`serving._api` is mounted at ``/``; BentoML adds ``/metrics``,
``/livez`` and ``/readyz`` (the latter follows ``/ready`` via ``__is_ready__``).

Workers: ``sona serve --workers N`` (BentoML's ``services.sona.workers``).
Training jobs live in the database, so every worker's training thread claims
from the same queue.
"""

from __future__ import annotations

import os

# Single requests run tiny tensor ops, where a second intra-op thread only adds
# synchronisation jitter (p50 5.6 -> 4.6 ms measured). It must be set before torch loads.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import gc  # noqa: E402

import bentoml  # noqa: E402

from serving._api import attach_state, create_app
from serving._fatal import stop_on_config_error
from serving._limits import guard
from serving._memory import start_trimming
from serving._metrics import BENTOML_METRICS_OFF, install_metrics_route
from serving._reuseport import adopt_listener
from serving._shell import NewlinePaths
from serving._state import ServiceState, build_state
from sona_app.settings import load_settings

__all__ = ["SonaService", "app"]

app = create_app()
_edge = guard(app)
install_metrics_route(app)


adopt_listener()  # this worker's own SO_REUSEPORT socket, before uvicorn serves it


@bentoml.service(name="sona", traffic={"timeout": 60}, metrics=BENTOML_METRICS_OFF)
@bentoml.asgi_app(app, path="/")
class SonaService:
    """Loads settings, database, engine and training worker once per process."""

    def __init__(self) -> None:
        with stop_on_config_error():
            settings = load_settings()
            self.state: ServiceState = build_state(settings)
        _edge.apply(settings, self.state.jwt_secret, app)
        attach_state(app, self.state)
        # The start-up heap (modules, the engine) is permanent: keep full GC passes off it,
        # or each one costs the request that triggers it tens of milliseconds.
        gc.freeze()
        start_trimming()

    def __is_ready__(self) -> bool:
        return self.state.ready_model() and self.state.storage.ping()

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        self.state.stop()
        self.state.storage.dispose()


SonaService.add_asgi_middleware(NewlinePaths, mounted=app)
