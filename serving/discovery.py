"""Discovery: hybrid catalog search over HTTP, personalized for callers with a valid JWT.

``POST /api/v1/search`` parses the body, resolves the caller (no token means
anonymous; a bad token is a 401, never a silent downgrade), calls
:meth:`sona.search.SearchIndex.search` once and serializes the page. The FastAPI
app is built by :func:`create_app` so tests run it in-process; :class:`Discovery`
is the BentoML service that mounts it.

The app is mounted directly (no shell app around it), so ``/docs`` and
``/openapi.json`` are the Discovery API's own, not an empty shell's. Readiness is
BentoML's ``/readyz`` (through ``__is_ready__``): a ``/ready`` route here would
collide with the SONA service's when the gateway composes both apps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import bentoml
from fastapi import Depends, FastAPI, Request
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict

from serving._auth import SERVICE_SCOPE, AuthError, ForbiddenError, Principal, decode_token, parse_bearer
from serving._errors import bearer_principal, install_error_handlers
from serving._fatal import stop_on_config_error
from serving._limits import guard
from serving._metrics import BENTOML_METRICS_OFF, JWT_FAILURES, install_metrics_route
from serving._openapi import document, errors
from serving._reuseport import adopt_listener
from serving._schemas import StrictFloat, StrictInt, json_integer
from serving._shell import NewlinePaths
from sona import Catalog, ConfigError, NotFittedError, Sona
from sona.search import (
    CONTENT_RATINGS,
    DEFAULT_VARIANTS,
    MAX_PAGE_SIZE,
    Embedder,
    EnginePersonalizer,
    SearchFilters,
    SearchHit,
    SearchIndex,
    SearchPage,
    readable_people,
)

__all__ = ["Discovery", "SearchRequest", "SearchResponse", "build_index", "configure", "create_app"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Bounds before the validator, so they reach the JSON schema (inside a tuple they would not).
_Year = Annotated[int, Strict(), Field(ge=-9999, le=9999), BeforeValidator(json_integer)]
_Rating = StrictFloat
_RANGE = "[from, to], inclusive; a reversed range matches nothing"


class SearchFiltersIn(_Body):
    genres: list[str] | None = Field(default=None, max_length=64)
    blocked_genres: list[str] | None = Field(default=None, max_length=64)
    year_range: tuple[_Year, _Year] | None = Field(default=None, description=_RANGE)
    rating_range: tuple[_Rating, _Rating] | None = Field(default=None, description=_RANGE)
    content_rating_limit: str | None = Field(
        default=None,
        description="Most permissive rating allowed; unrated titles fail it.",
        json_schema_extra={"enum": list(CONTENT_RATINGS)},
    )
    platforms: list[str] | None = Field(default=None, max_length=64)

    def to_domain(self) -> SearchFilters:
        return SearchFilters(
            genres=tuple(self.genres or ()),
            blocked_genres=tuple(self.blocked_genres or ()),
            year_range=self.year_range,
            rating_range=self.rating_range,
            content_rating_limit=self.content_rating_limit,
            platforms=tuple(self.platforms or ()),
        )


#: Some character that is not whitespace as Python's ``str.strip`` (what the index applies) sees it,
#: written out: JSON Schema's ``\s`` differs from Python's at \x1c-\x1f, \x85 and \ufeff.
_NOT_BLANK = r"[^\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"


class SearchRequest(_Body):
    # The schema's ``pattern`` and enums state what ``SearchIndex.search`` checks (a non-blank
    # query, a known rating, a known A/B arm of the default SearchConfig) without pydantic
    # repeating those checks with a raw-regex message.
    query: str = Field(min_length=1, max_length=512, json_schema_extra={"pattern": _NOT_BLANK})
    filters: SearchFiltersIn | None = None
    page: StrictInt = Field(default=1, ge=1, le=1_000_000)
    page_size: StrictInt = Field(default=20, ge=1, le=MAX_PAGE_SIZE)
    experiment_variant: str | None = Field(
        default=None,
        description="A/B arm of the personalization weight.",
        json_schema_extra={"enum": [name for name, _ in DEFAULT_VARIANTS]},
    )


class ContentOut(BaseModel):
    id: str
    title: str
    overview: str
    release_year: int | None
    genres: list[str]
    people: list[str] = Field(
        description="Cast and crew by name; knowledge-graph ids (ml-100k's Freebase m.xxxx) are left out."
    )
    duration_seconds: float | None
    popularity: float


class SearchResultOut(BaseModel):
    content: ContentOut
    relevance_score: float
    match_reasons: list[str]
    vector_similarity: float | None
    keyword_score: float | None
    personalization_score: float | None

    @classmethod
    def from_hit(cls, hit: SearchHit) -> SearchResultOut:
        c = hit.content
        return cls(
            content=ContentOut(
                id=c.content_id,
                title=c.title,
                overview=c.overview,
                release_year=c.release_year,
                genres=list(c.genres),
                people=list(readable_people(c.people)),
                duration_seconds=c.duration_seconds,
                popularity=c.popularity,
            ),
            relevance_score=hit.relevance_score,
            match_reasons=list(hit.match_reasons),
            vector_similarity=hit.vector_similarity,
            keyword_score=hit.keyword_score,
            personalization_score=hit.personalization_score,
        )


class FacetsOut(BaseModel):
    genres: dict[str, int]
    years: dict[str, int]


class SearchResponse(BaseModel):
    results: list[SearchResultOut]
    total_count: int
    page: int
    page_size: int
    facets: FacetsOut
    search_time_ms: float
    personalized: bool
    personalization_weight: float

    @classmethod
    def from_page(cls, page: SearchPage) -> SearchResponse:
        return cls(
            results=[SearchResultOut.from_hit(h) for h in page.hits],
            total_count=page.total_count,
            page=page.page,
            page_size=page.page_size,
            facets=FacetsOut(
                genres=page.facets.genres, years={str(y): c for y, c in page.facets.years.items()}
            ),
            search_time_ms=round(page.search_time_ms, 3),
            personalized=page.personalized,
            personalization_weight=page.personalization_weight,
        )


class RefreshResponse(BaseModel):
    n_items: int


def optional_principal(request: Request) -> Principal | None:
    """The caller, or ``None`` when no ``Authorization`` header is sent.

    A header that is present but empty, malformed, expired, forged or unsigned
    raises :class:`AuthError` (401): only the absence of a token means anonymous.
    """
    header = request.headers.get("authorization")
    if header is None:
        return None
    secret = getattr(request.app.state, "jwt_secret", None)
    if not secret:
        raise ConfigError("app.state.jwt_secret is not configured")
    try:
        return decode_token(parse_bearer(header), secret, getattr(request.app.state, "jwt_policy", None))
    except AuthError as exc:
        JWT_FAILURES.labels(reason=exc.reason).inc()
        raise


MaybeAuthenticated = Annotated[Principal | None, Depends(optional_principal)]
Authenticated = Annotated[Principal, Depends(bearer_principal)]


def _index(request: Request) -> SearchIndex:
    index = getattr(request.app.state, "search_index", None)
    if index is None:
        raise NotFittedError("the search index is not loaded yet")
    return index


def configure(
    app: FastAPI,
    *,
    index: SearchIndex,
    jwt_secret: str,
    catalog_loader: Callable[[], Catalog] | None = None,
) -> FastAPI:
    """Attach a fitted index, the HS256 secret and (optionally) the catalog source used by refresh."""
    app.state.search_index = index
    app.state.jwt_secret = jwt_secret
    app.state.catalog_loader = catalog_loader
    return app


def create_app(
    index: SearchIndex | None = None,
    *,
    jwt_secret: str | None = None,
    catalog_loader: Callable[[], Catalog] | None = None,
) -> FastAPI:
    """The Discovery FastAPI app; unconfigured (503 until :func:`configure`) when ``index`` is None."""
    app = FastAPI(title="sona discovery", version="1", docs_url=None, redoc_url=None)
    install_error_handlers(app)
    document(app, docs_url="/docs")
    app.state.search_index = None
    app.state.jwt_secret = None
    app.state.catalog_loader = None
    if index is not None:
        if not jwt_secret:
            raise ConfigError("create_app needs jwt_secret together with index")
        configure(app, index=index, jwt_secret=jwt_secret, catalog_loader=catalog_loader)

    @app.post("/api/v1/search", response_model=SearchResponse)
    def search(body: SearchRequest, request: Request, principal: MaybeAuthenticated) -> SearchResponse:
        live = getattr(request.app.state, "live_engine", None)
        if live is not None and principal is not None:
            live.ensure_user(principal.user_id)  # events other processes stored since the model was fitted
        page = _index(request).search(
            body.query,
            filters=body.filters.to_domain() if body.filters is not None else None,
            page=body.page,
            page_size=body.page_size,
            user_id=principal.user_id if principal is not None else None,
            experiment_variant=body.experiment_variant,
        )
        return SearchResponse.from_page(page)

    @app.post("/api/v1/search/refresh", response_model=RefreshResponse, responses=errors(403))
    def refresh(request: Request, principal: Authenticated) -> RefreshResponse:
        """Re-read the catalog and swap in a new index (service tokens only)."""
        if SERVICE_SCOPE not in principal.scopes:
            raise ForbiddenError(f"refreshing the index needs the {SERVICE_SCOPE!r} scope")
        loader = request.app.state.catalog_loader
        if loader is None:
            raise NotFittedError("no catalog source is configured for refresh")
        index = _index(request).refresh(loader())
        return RefreshResponse(n_items=len(index.catalog))

    return app


app = create_app()


def build_index(embedder: Embedder, catalog: Catalog, engine: Sona | None) -> SearchIndex:
    """The search index over ``catalog``, personalized by ``engine`` when there is one.

    The engine is wrapped in :class:`~sona.search.EnginePersonalizer`: a refresh
    can add titles the engine was not fitted on, and those must not fail the search.
    """
    personalizer = EnginePersonalizer(engine) if engine is not None else None
    return SearchIndex(embedder, personalizer=personalizer).fit(catalog)


_edge = guard(app)
install_metrics_route(app)


adopt_listener()  # this worker's own SO_REUSEPORT socket, before uvicorn serves it


@bentoml.service(name="sona-discovery", traffic={"timeout": 10}, metrics=BENTOML_METRICS_OFF)
@bentoml.asgi_app(app, path="/")
class Discovery:
    """BentoML service: builds the index from the stored catalog once, then serves search.

    The model personalizes, resolved as the SONA service resolves it (the current
    published model, else ``SONA_MODEL_DIR``'s: :func:`sona_app.bootstrap.resolve_model`)
    and followed through rollouts and users' new events (:class:`~sona_app.bootstrap.LiveEngine`);
    without one, authenticated callers get the anonymous order (tokens are still verified).
    """

    def __init__(self) -> None:
        from serving._auth import resolve_jwt_secret
        from sona.search import CachedEmbedder, MiniLMEmbedder
        from sona.storage import Storage
        from sona_app.bootstrap import LiveEngine, resolve_model
        from sona_app.settings import load_settings

        with stop_on_config_error():
            settings = load_settings()
            resolve_jwt_secret(settings)  # before the slow index build: a missing secret stops at once
        # One pool for the service's life: every refresh reads the catalog through it.
        self.storage = Storage(settings.database_url)
        engine = resolve_model(settings, self.storage)
        embedder = CachedEmbedder(MiniLMEmbedder(), settings.data_dir / "title-vectors")  # kept on restart
        self.index = build_index(embedder, self.storage.load_catalog(), engine)
        self.live: LiveEngine | None = None
        personalizer = self.index.personalizer
        if engine is not None and isinstance(personalizer, EnginePersonalizer):

            def swapped(new: Sona) -> None:
                personalizer.engine = new  # searches in flight finish on the old model

            self.live = LiveEngine(engine, self.storage, settings=settings, on_swap=swapped).start()
        app.state.live_engine = self.live
        secret = resolve_jwt_secret(settings)
        configure(app, index=self.index, jwt_secret=secret, catalog_loader=self.storage.load_catalog)
        _edge.apply(settings, secret, app)

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        if self.live is not None:
            self.live.stop()
        self.storage.dispose()

    def __is_ready__(self) -> bool:
        return getattr(app.state, "search_index", None) is not None


Discovery.add_asgi_middleware(NewlinePaths, mounted=app)
