"""Runtime configuration, read from the environment in this one place (nowhere in ``sona`` reads it).

=====================  ======================================  ==========================
variable               meaning                                 default
=====================  ======================================  ==========================
SONA_DATA_DIR          where sona keeps its files              ``./.sona-data``
DATABASE_URL           SQLAlchemy URL                          SQLite file in the data dir
SONA_ADAPTER_STORE     ``directory`` or ``database``           ``directory``
REDIS_URL              Redis for playback sessions             ``redis://127.0.0.1:6379/0``
KAFKA_BROKERS          comma-separated host:port               unset → in-process event bus
KAFKA_TOPIC_PREFIX     prefix of playback topics               ``playback``
KAFKA_PARTITIONS       partitions for topics created at start  ``3``
SYNC_SERVICE_URL       remote sync service base URL            unset → sync disabled
JWT_SECRET             HS256 secret for bearer tokens          unset → services refuse to
                                                               start unless SONA_DEV_MODE
SONA_DEV_MODE          ``1`` allows a generated dev secret     ``0``
SONA_MODEL_DIR         trained engine directory                ``$SONA_DATA_DIR/model``
SONA_MOVIELENS         ml-100k directory the demo engine is    ``shared/datasets/ml-100k``
                       fit on when there is no trained model   beside the data dir or repo
SONA_USER_CACHE_SIZE   users a serving process keeps in its    ``100000``
                       engine; the least recently served are
                       dropped and read again when requested
JOB_COMPLETION_INDEX   this pod's index in a Kubernetes        unset (``train-adapters``
                       Indexed Job: the adapter shard it runs  runs unsharded)
SONA_SHARDS            how many shards ``train-adapters``      unset
                       splits users into (with the index)
SONA_MAX_BODY_BYTES    largest request body, else 413          ``1000000``
SONA_MAX_HEADER_BYTES  largest request headers, else 431       ``16384``
SONA_RATE_LIMIT        requests per caller and window, else    ``6000`` (``0``: off)
                       429 (counted in Redis if REDIS_URL set)
SONA_RATE_WINDOW       the rate window in seconds              ``60``
JWT_MAX_LIFETIME       longest accepted ``exp - iat``, seconds ``86400``
JWT_AUDIENCE           required ``aud`` claim                  unset → not checked
JWT_ISSUER             required ``iss`` claim                  unset → not checked
=====================  ======================================  ==========================

A present but invalid value raises :class:`~sona.errors.EnvVarError` naming the
variable, at the moment the settings are read, not later at first use.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from sona.errors import EnvVarError

__all__ = ["Settings", "load_settings"]

AdapterStoreKind = Literal["directory", "database"]


@dataclass(frozen=True, slots=True)
class Settings:
    """Validated runtime settings. Build with :func:`load_settings`."""

    data_dir: Path
    database_url: str
    adapter_store: AdapterStoreKind = "directory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    kafka_brokers: tuple[str, ...] = ()
    kafka_topic_prefix: str = "playback"
    kafka_partitions: int = 3
    sync_service_url: str | None = None
    jwt_secret: str | None = None
    dev_mode: bool = False
    model_dir: Path | None = None
    movielens_dir: Path | None = None
    user_cache_size: int = 100_000
    max_body_bytes: int = 1_000_000
    max_header_bytes: int = 16_384
    rate_limit: int = 6_000
    rate_window_seconds: int = 60
    #: REDIS_URL was set: rate counts are shared by every replica through Redis.
    rate_limit_shared: bool = False
    jwt_max_lifetime_seconds: int = 86_400
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    shard_index: int | None = None
    shard_count: int | None = None

    @property
    def adapter_dir(self) -> Path:
        return self.data_dir / "adapters"

    @property
    def engine_dir(self) -> Path:
        return self.model_dir or self.data_dir / "model"


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    low = raw.strip().lower()
    if low in {"1", "true", "yes", "on"}:
        return True
    if low in {"0", "false", "no", "off"}:
        return False
    raise EnvVarError(name, f"expected a boolean (1/0, true/false), got {raw!r}")


def _url(env: Mapping[str, str], name: str, schemes: tuple[str, ...]) -> str | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    parts = urlsplit(raw)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme not in schemes:
        raise EnvVarError(name, f"expected a {'/'.join(schemes)} URL, got {raw!r}")
    if scheme not in {"sqlite"} and not parts.netloc:
        raise EnvVarError(name, f"URL has no host: {raw!r}")
    return raw


def _count(env: Mapping[str, str], name: str, *, minimum: int) -> int | None:
    raw = (env.get(name) or "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < minimum:
        raise EnvVarError(name, f"expected an integer >= {minimum}, got {raw!r}")
    return int(raw)


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int) -> int:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < minimum:
        raise EnvVarError(name, f"expected an integer >= {minimum}, got {raw!r}")
    return int(raw)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate settings from ``env`` (default: ``os.environ``)."""
    env = os.environ if env is None else env
    data_dir = Path(env.get("SONA_DATA_DIR") or ".sona-data").expanduser()
    database_url = _url(env, "DATABASE_URL", ("sqlite", "postgresql", "postgres"))
    if database_url is None:
        database_url = f"sqlite:///{(data_dir / 'sona.db').resolve()}"
    elif database_url.startswith(("postgres://", "postgresql://")):
        # psycopg 3 is the driver we ship; plain URLs would ask for psycopg2.
        database_url = "postgresql+psycopg://" + database_url.split("://", 1)[1]
    store = (env.get("SONA_ADAPTER_STORE") or "directory").strip()
    if store not in ("directory", "database"):
        raise EnvVarError("SONA_ADAPTER_STORE", f"expected 'directory' or 'database', got {store!r}")
    redis_url = _url(env, "REDIS_URL", ("redis", "rediss", "unix")) or "redis://127.0.0.1:6379/0"
    brokers_raw = (env.get("KAFKA_BROKERS") or "").strip()
    brokers = tuple(b.strip() for b in brokers_raw.split(",") if b.strip())
    for b in brokers:
        host, _, port = b.rpartition(":")
        if not host or not port.isdigit():
            raise EnvVarError("KAFKA_BROKERS", f"expected host:port[,host:port], got {b!r}")
    prefix = (env.get("KAFKA_TOPIC_PREFIX") or "playback").strip()
    if not prefix.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise EnvVarError("KAFKA_TOPIC_PREFIX", f"only letters, digits, '.', '_', '-': {prefix!r}")
    parts_raw = env.get("KAFKA_PARTITIONS") or "3"
    if not parts_raw.isdigit() or int(parts_raw) < 1:
        raise EnvVarError("KAFKA_PARTITIONS", f"expected a positive integer, got {parts_raw!r}")
    sync = _url(env, "SYNC_SERVICE_URL", ("http", "https"))
    secret = env.get("JWT_SECRET") or None
    if secret is not None and len(secret) < 16:
        raise EnvVarError("JWT_SECRET", "must be at least 16 characters")
    model_dir = env.get("SONA_MODEL_DIR")
    movielens = env.get("SONA_MOVIELENS")
    shard_index = _count(env, "JOB_COMPLETION_INDEX", minimum=0)
    shard_count = _count(env, "SONA_SHARDS", minimum=1)
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        adapter_store=store,  # type: ignore[arg-type]
        redis_url=redis_url,
        kafka_brokers=brokers,
        kafka_topic_prefix=prefix,
        kafka_partitions=int(parts_raw),
        sync_service_url=sync.rstrip("/") if sync else None,
        jwt_secret=secret,
        dev_mode=_bool(env, "SONA_DEV_MODE", False),
        model_dir=Path(model_dir).expanduser() if model_dir else None,
        movielens_dir=Path(movielens).expanduser() if movielens else None,
        user_cache_size=_int(env, "SONA_USER_CACHE_SIZE", 100_000, minimum=1),
        max_body_bytes=_int(env, "SONA_MAX_BODY_BYTES", 1_000_000, minimum=1),
        max_header_bytes=_int(env, "SONA_MAX_HEADER_BYTES", 16_384, minimum=1024),
        rate_limit=_int(env, "SONA_RATE_LIMIT", 6_000, minimum=0),
        rate_window_seconds=_int(env, "SONA_RATE_WINDOW", 60, minimum=1),
        rate_limit_shared=bool((env.get("REDIS_URL") or "").strip()),
        jwt_max_lifetime_seconds=_int(env, "JWT_MAX_LIFETIME", 86_400, minimum=1),
        jwt_audience=(env.get("JWT_AUDIENCE") or "").strip() or None,
        jwt_issuer=(env.get("JWT_ISSUER") or "").strip() or None,
        shard_index=shard_index,
        shard_count=shard_count,
    )
