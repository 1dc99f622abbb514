"""Prometheus counters of the sona HTTP services, and the ``/metrics`` route that serves them.

They use ``bentoml.metrics``, BentoML's lazy drop-in for ``prometheus_client``:
under ``bentoml serve`` it sets up multiprocess mode (files in
``PROMETHEUS_MULTIPROC_DIR``); in-process (tests, plain uvicorn) it falls back
to the default registry.

The services turn BentoML's own request metrics off (``metrics=BENTOML_METRICS_OFF``)
and serve ``/metrics`` themselves (:func:`install_metrics_route`): BentoML
labels its request histogram with the raw path, so every playback session id
(``/api/v1/sessions/<id>/position``) created time series that were never
released, tens of KB of worker memory per session, forever. Our request counter
is labelled with the route template instead.
"""

from __future__ import annotations

import os

from bentoml.metrics import Counter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

__all__ = [
    "ADAPTER_CACHE",
    "ADAPTER_STALE",
    "BENTOML_METRICS_OFF",
    "JWT_FAILURES",
    "REQUESTS",
    "TRAINING_JOBS",
    "USERS_DROPPED",
    "install_metrics_route",
    "metrics_text",
]

#: BentoML service option: its per-path request metrics off (see the module docstring).
BENTOML_METRICS_OFF = {"enabled": False}

REQUESTS = Counter(
    "sona_http_requests_total",
    "HTTP requests by route template and status code.",
    labelnames=["endpoint", "status"],
)
JWT_FAILURES = Counter(
    "sona_jwt_failures_total",
    "Rejected bearer tokens by reason (missing, expired, bad_signature, ...).",
    labelnames=["reason"],
)
TRAINING_JOBS = Counter(
    "sona_lora_training_jobs_total",
    "Finished LoRA training jobs by outcome (succeeded, failed, skipped).",
    labelnames=["outcome"],
)
ADAPTER_CACHE = Counter(
    "sona_adapter_cache_total",
    "Adapter lookups while serving, by result (hit, miss).",
    labelnames=["result"],
)
ADAPTER_STALE = Counter(
    "sona_adapter_stale_model_total",
    "Stored adapters not attached because they were trained on another base model.",
)
USERS_DROPPED = Counter(
    "sona_users_dropped_total",
    "Users dropped from a worker's engine to stay within SONA_USER_CACHE_SIZE (read again when requested).",
)


def metrics_text() -> tuple[bytes, str]:
    """Every process's metrics in the Prometheus text format, and its content type.

    Under ``bentoml serve`` the values live in ``PROMETHEUS_MULTIPROC_DIR`` (one
    file per process), so they are collected from there; otherwise from this
    process's default registry.
    """
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        REGISTRY,
        CollectorRegistry,
        generate_latest,
        multiprocess,
    )

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def install_metrics_route(app: Starlette) -> None:
    """Serve :func:`metrics_text` at ``GET /metrics`` of ``app`` (not in the OpenAPI document)."""

    def metrics(_: Request) -> Response:
        body, content_type = metrics_text()
        return Response(body, media_type=content_type)

    app.add_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
