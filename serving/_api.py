"""The SONA HTTP API as a FastAPI app: parse, call one ``sona`` function, serialize.

:func:`create_app` builds the app around a :class:`~serving._state.ServiceState`
(or none yet: the BentoML service attaches it in ``__init__``). Errors are not
handled here: ``sona`` and auth exceptions travel to the one table in
:mod:`serving._errors`.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Annotated

import numpy as np
from fastapi import Depends, FastAPI, Path, Request
from fastapi.responses import JSONResponse

import sona
from serving._auth import authorize
from serving._errors import Authenticated, install_error_handlers, request_id
from serving._metrics import ADAPTER_CACHE
from serving._openapi import document, errors
from serving._schemas import (
    JobResponse,
    ProfileUpdateRequest,
    ProfileUpdateResponse,
    ReadyResponse,
    RecommendationItem,
    RecommendationsRequest,
    RecommendationsResponse,
    ScoredContent,
    ScoreRequest,
    ScoreResponse,
    StatusResponse,
    TrainAccepted,
    TrainRequest,
    ViewingContext,
)
from serving._state import ServiceState
from sona import (
    Identifier,
    InsufficientDataError,
    NotFittedError,
    UnknownContentError,
    UnknownUserError,
    events_from_records,
)
from sona.events import client_event_id

__all__ = ["attach_state", "create_app"]

API = "/api/v1"

#: Single-user ranking, one request at a time. It is ~1.5 ms of many short numpy/torch
#: calls that each drop and retake the GIL; 16 pool threads doing that at once thrash
#: it (in-process, 16 threads: 332 req/s free vs 545 req/s serialized by this lock).
_RANKING = threading.Lock()


def _state(request: Request) -> ServiceState:
    state: ServiceState | None = getattr(request.app.state, "sona", None)
    if state is None:
        raise NotFittedError("the service is still starting")
    return state


State = Annotated[ServiceState, Depends(_state)]


def _engine_context(context: ViewingContext | None) -> dict[str, str] | None:
    """The context keys the engine ranks with; ``viewing_with`` is accepted but not used yet."""
    if context is None:
        return None
    given = context.model_dump(exclude_none=True, exclude={"viewing_with"})
    return given or None


def _recommend(state: ServiceState, body: RecommendationsRequest) -> RecommendationsResponse:
    state.fresh(body.user_id)
    adapters = state.engine.adapters_
    if adapters is not None:
        ADAPTER_CACHE.labels(result="hit" if body.user_id in adapters else "miss").inc()
    context = _engine_context(body.context)
    with _RANKING:
        recs = state.engine.recommend(
            body.user_id,
            k=body.limit,
            exclude_watched=body.exclude_watched,
            diversity=body.diversity_threshold or 0.0,
            context=context,
        )
    items = [
        RecommendationItem(
            content_id=r.content_id,
            confidence_score=min(max(float(r.score), 0.0), 1.0),  # np.clip costs 10x per scalar
            recommendation_type=str(r.recommendation_type),
            based_on=[str(b) for b in r.based_on],
            explanation=r.explanation,
        )
        for r in recs
    ]
    return RecommendationsResponse(
        recommendations=items, generated_at=datetime.now(UTC), ttl_seconds=state.ttl_seconds
    )


def _score(state: ServiceState, body: ScoreRequest) -> ScoreResponse:
    targets = body.targets
    state.fresh(body.user_id)
    parts = state.engine.score_components(body.user_id, targets)
    scores = np.asarray(parts.pop("score"), dtype=np.float64)
    names = list(parts)
    rows = [
        ScoredContent(
            content_id=cid,
            score=float(scores[i]),
            components={n: float(parts[n][i]) for n in names},
        )
        for i, cid in enumerate(targets)
    ]
    single = rows[0] if body.content_id is not None else None
    return ScoreResponse(
        user_id=body.user_id,
        scores=rows,
        content_id=single.content_id if single else None,
        score=single.score if single else None,
        components=single.components if single else None,
    )


def _update_profile(state: ServiceState, body: ProfileUpdateRequest) -> ProfileUpdateResponse:
    """Validate the whole batch, then store events + rebuilt profile in one transaction.

    The profile is built on a copy of the engine; the engine itself observes the
    events only after the commit, so a failed write leaves it matching storage.
    """
    records: list[dict[str, object]] = [
        {**e.model_dump(exclude_none=True), "user_id": body.user_id, "source": "api"}
        for e in body.viewing_events
    ]
    for r in records:  # a client's event_id is its idempotency key for this user only
        if "event_id" in r:
            r["event_id"] = client_event_id(body.user_id, str(r["event_id"]))
    events = events_from_records(records)
    catalog = state.engine.catalog
    unknown = np.flatnonzero(catalog.lookup([e.content_id for e in events]) < 0)
    if unknown.size:  # 404 like /personalization/score: the request is well formed, the title is not there
        raise UnknownContentError([events[int(i)].content_id for i in unknown])
    state.fresh(body.user_id)  # the profile stored below is built on everything the database holds
    with state.write_lock:
        with state.storage.transaction() as tx:
            result = tx.add_events(events)
            fresh = set(result.inserted_event_ids)
            frame = sona.events_to_frame([e for e in events if e.event_id in fresh])
            after = state.engine.observed(frame) if len(frame) else state.engine
            profile = after.profile(body.user_id)
            tx.save_profiles([profile])
        # Committed: only now may the engine serve these events (a failed commit leaves it as it was).
        if len(frame):
            state.engine.observe(frame)
    return ProfileUpdateResponse(
        status="updated",
        user_id=body.user_id,
        events_processed=result.inserted,
        duplicates_ignored=result.duplicates,
        preference_vector_dim=int(np.asarray(profile.preference_vector).shape[0]),
    )


def _job(state: ServiceState, job_id: str) -> tuple[str, JobResponse]:
    job = state.storage.get_job(job_id)
    return job.user_id, JobResponse(
        job_id=job.job_id,
        user_id=job.user_id,
        status=job.status,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        events_used=job.events_used,
        duration_seconds=job.duration_seconds,
        adapter_version=job.adapter_version,
        error=job.error,
    )


def _readiness(request: Request) -> dict[str, str]:
    state: ServiceState | None = getattr(request.app.state, "sona", None)
    if state is None:
        return {"database": "unknown", "model": "not loaded"}
    db = "ok" if state.storage.ping() else "unreachable"
    model = "ok" if state.ready_model() else "not loaded"
    return {"database": db, "model": model}


def create_app(state: ServiceState | None = None) -> FastAPI:
    """The API; ``state`` may be attached later with :func:`attach_state`."""
    app = FastAPI(
        title="sona",
        version=sona.__version__,
        openapi_url=f"{API}/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    document(app, docs_url=f"{API}/docs")
    app.state.sona = None
    app.state.jwt_secret = None
    if state is not None:
        attach_state(app, state)

    @app.get("/health", response_model=StatusResponse, tags=["ops"])
    async def health() -> StatusResponse:
        """Liveness: the process answers. No auth, no dependencies."""
        return StatusResponse(status="ok")

    @app.get("/ready", response_model=ReadyResponse, tags=["ops"])
    def ready(request: Request) -> ReadyResponse | JSONResponse:
        """Readiness: the database answers and the engine is loaded; else 503."""
        checks = _readiness(request)
        if all(v == "ok" for v in checks.values()):
            return ReadyResponse(status="ready", checks=checks)
        rid = request_id(request)
        body = {"error": "not_ready", "message": "service is not ready", "request_id": rid, "checks": checks}
        return JSONResponse(body, status_code=503)

    @app.post(f"{API}/recommendations", response_model=RecommendationsResponse, responses=errors(403, 404))
    def recommendations(
        body: RecommendationsRequest, principal: Authenticated, state: State
    ) -> RecommendationsResponse:
        authorize(principal, body.user_id)
        return _recommend(state, body)

    @app.post(
        f"{API}/personalization/score",
        response_model=ScoreResponse,
        response_model_exclude_none=True,
        responses=errors(403, 404),
    )
    def personalization_score(body: ScoreRequest, principal: Authenticated, state: State) -> ScoreResponse:
        authorize(principal, body.user_id)
        return _score(state, body)

    @app.post(f"{API}/profile/update", response_model=ProfileUpdateResponse, responses=errors(403, 404))
    def profile_update(
        body: ProfileUpdateRequest, principal: Authenticated, state: State
    ) -> ProfileUpdateResponse:
        authorize(principal, body.user_id)
        return _update_profile(state, body)

    @app.post(
        f"{API}/lora/train", response_model=TrainAccepted, status_code=202, responses=errors(403, 404, 409)
    )
    def lora_train(body: TrainRequest, principal: Authenticated, state: State) -> TrainAccepted:
        authorize(principal, body.user_id)
        try:
            job_id = state.submit_training(body.user_id, force=body.force)
        except InsufficientDataError as exc:
            if exc.current_count == 0:  # no event at all: a user sona does not know (404, not 422)
                raise UnknownUserError(body.user_id) from exc
            raise
        return TrainAccepted(job_id=job_id, user_id=body.user_id, status="queued")

    @app.get(f"{API}/lora/jobs/{{job_id}}", response_model=JobResponse, responses=errors(403, 404))
    def lora_job(
        job_id: Annotated[Identifier, Path()], principal: Authenticated, state: State
    ) -> JobResponse:
        owner, job = _job(state, job_id)
        authorize(principal, owner)
        return job

    @app.post(f"{API}/noop", response_model=RecommendationsResponse, include_in_schema=False)
    def noop(body: RecommendationsRequest, principal: Authenticated, state: State) -> RecommendationsResponse:
        """Same auth, parsing and serialization as /recommendations, no engine call: the latency floor."""
        authorize(principal, body.user_id)
        return RecommendationsResponse(recommendations=[], generated_at=datetime.now(UTC), ttl_seconds=0)

    return app


def attach_state(app: FastAPI, state: ServiceState) -> None:
    """Give a created app its engine, storage and secret."""
    app.state.sona = state
    app.state.jwt_secret = state.jwt_secret
