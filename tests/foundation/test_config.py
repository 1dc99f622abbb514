"""Settings come from the environment in one place and fail fast naming the variable."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import sona
from sona_app.settings import load_settings


def test_defaults_are_embedded(tmp_path: Path) -> None:
    s = load_settings({"SONA_DATA_DIR": str(tmp_path)})
    assert s.database_url == f"sqlite:///{(tmp_path / 'sona.db').resolve()}"
    assert s.kafka_brokers == () and s.kafka_topic_prefix == "playback"
    assert s.sync_service_url is None and s.jwt_secret is None and not s.dev_mode


def test_postgres_url_gets_the_psycopg_driver() -> None:
    s = load_settings({"DATABASE_URL": "postgresql://u:p@db:5432/sona"})
    assert s.database_url == "postgresql+psycopg://u:p@db:5432/sona"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATABASE_URL", "mysql://x/y"),
        ("REDIS_URL", "http://localhost"),
        ("KAFKA_BROKERS", "localhost"),
        ("KAFKA_PARTITIONS", "0"),
        ("SYNC_SERVICE_URL", "ftp://sync"),
        ("JWT_SECRET", "short"),
        ("SONA_DEV_MODE", "maybe"),
        ("SONA_ADAPTER_STORE", "s3"),
        ("KAFKA_TOPIC_PREFIX", "bad prefix!"),
        ("SONA_USER_CACHE_SIZE", "0"),
    ],
)
def test_invalid_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(sona.EnvVarError) as err:
        load_settings({name: value})
    assert err.value.name == name and name in str(err.value)


def test_only_the_application_side_reads_the_environment() -> None:
    """``sona`` (the library) has no settings and reads no variable; ``sona_app.settings`` does."""
    assert not hasattr(sona, "load_settings") and not hasattr(sona, "Settings")
    # Setting HF_HUB_OFFLINE before loading a local sentence model is a write, not configuration.
    reads = re.compile(r"os\.getenv|os\.environ(?!\.setdefault\(\"HF_HUB_OFFLINE\")")
    root = Path(sona.__file__).parent
    found = [
        f"{path.relative_to(root)}:{n}"
        for path in sorted(root.rglob("*.py"))
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if reads.search(line)
    ]
    assert not found, found
    assert load_settings({"SONA_DATA_DIR": "/srv/x"}).data_dir == Path("/srv/x")


def test_brokers_are_split() -> None:
    s = load_settings({"KAFKA_BROKERS": "a:9092, b:9093", "SYNC_SERVICE_URL": "http://sync:8080/"})
    assert s.kafka_brokers == ("a:9092", "b:9093")
    assert s.sync_service_url == "http://sync:8080"


@pytest.mark.parametrize(
    ("name", "value"), [("lr", "x"), ("w_tower", None), ("decay_base", True), ("w_genre", [1])]
)
def test_float_fields_must_be_numbers(name: str, value: object) -> None:
    with pytest.raises(sona.ConfigError, match=name):
        sona.SonaConfig(**{name: value})  # type: ignore[arg-type]


def test_float_fields_accept_numpy_numbers_as_floats() -> None:
    cfg = sona.SonaConfig(lr=np.float32(0.5), w_tower=2)
    assert type(cfg.lr) is float and cfg.lr == 0.5
    assert type(cfg.w_tower) is float and cfg == sona.SonaConfig(lr=0.5, w_tower=2.0)
