"""Prometheus counters of the sona HTTP services.

They use ``bentoml.metrics``, BentoML's lazy drop-in for ``prometheus_client``:
under ``bentoml serve`` it sets up multiprocess mode so the counters appear on
the server's own ``/metrics`` next to BentoML's defaults; in-process (tests,
plain uvicorn) it falls back to the default registry.
"""

from __future__ import annotations

from bentoml.metrics import Counter

__all__ = ["ADAPTER_CACHE", "ADAPTER_STALE", "JWT_FAILURES", "REQUESTS", "TRAINING_JOBS"]

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
