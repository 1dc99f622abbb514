"""Domain validation of viewing events and catalog items."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pandas as pd
import pytest

import sona

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)


def test_event_normalizes_to_utc_and_derives_id() -> None:
    ev = sona.ViewingEvent(
        user_id="u",
        content_id="c",
        timestamp=NOW.astimezone(timezone(timedelta(hours=2))),
        completion_rate=0.5,
    )
    assert ev.timestamp.tzinfo == UTC and ev.timestamp == NOW
    again = sona.ViewingEvent(user_id="u", content_id="c", timestamp=NOW, completion_rate=0.9)
    assert ev.event_id == again.event_id  # same viewing → same id, so replays dedupe


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("completion_rate", -0.1),
        ("completion_rate", 1.5),
        ("rating", 7),
        ("rating", 0),
        ("timestamp", datetime(2026, 1, 1)),  # naive
        ("user_id", ""),
        ("watch_seconds", -1),
    ],
)
def test_invalid_event_names_the_field(field: str, value: object) -> None:
    kwargs: dict[str, object] = {"user_id": "u", "content_id": "c", "timestamp": NOW, "completion_rate": 0.5}
    kwargs[field] = value
    with pytest.raises(sona.ValidationError) as err:
        sona.ViewingEvent(**kwargs)  # type: ignore[arg-type]
    assert err.value.field == field


def test_batch_error_names_index() -> None:
    good = {"user_id": "u", "content_id": "c", "timestamp": NOW.isoformat(), "completion_rate": 0.5}
    with pytest.raises(sona.ValidationError) as err:
        sona.events_from_records([good, good, {**good, "rating": 7}])
    assert err.value.index == 2 and err.value.field == "rating"
    assert "event[2].rating" in str(err.value)


def test_frame_validation_is_columnwise() -> None:
    frame = pd.DataFrame(
        {
            "user_id": [1, 2],
            "content_id": ["a", "b"],
            "timestamp": [1.7e9, 1.7e9 + 60],
            "completion_rate": [0.2, 1.0],
        }
    )
    out = sona.validate_events(frame)
    assert list(out.columns) == list(sona.EVENT_COLUMNS)
    assert out["user_id"].tolist() == ["1", "2"]
    assert str(out["timestamp"].dt.tz) == "UTC"
    assert out["event_id"].is_unique
    with pytest.raises(sona.ValidationError) as err:
        sona.validate_events(frame.assign(completion_rate=[0.5, -0.2]))
    assert err.value.field == "completion_rate" and err.value.index == 1
    with pytest.raises(sona.ValidationError) as err:
        sona.validate_events(frame.drop(columns=["content_id"]))
    assert err.value.field == "content_id"


def test_catalog_lookup_and_unknown_ids() -> None:
    cat = sona.Catalog(
        [
            sona.ContentItem(content_id="a", title="A", genres=("Horror",)),
            sona.ContentItem(content_id="b", title="B", genres=("Comedy", "Horror")),
        ]
    )
    assert cat.index_of(["b", "a"]).tolist() == [1, 0]
    with pytest.raises(KeyError):
        cat.index_of(["zz"])
    with pytest.raises(sona.UnknownContentError) as err:
        cat.index_of(["a", "zz"])
    assert err.value.content_ids == ["zz"]
    assert cat.genre_matrix().toarray().tolist() == [[0, 1], [1, 1]]
    with pytest.raises(sona.ValidationError):
        sona.Catalog(
            [sona.ContentItem(content_id="a", title="A"), sona.ContentItem(content_id="a", title="B")]
        )
    with pytest.raises(sona.ValidationError):
        sona.ContentItem(content_id="x", title="X", release_year=99999)


@pytest.mark.parametrize("value", [1e20, -1e15, -1e12, datetime(1, 1, 2, tzinfo=UTC)])
def test_out_of_range_timestamps_raise_validation_error(value: object) -> None:
    base = {"user_id": "u", "content_id": "c", "completion_rate": 0.5}
    with pytest.raises(sona.ValidationError) as err:
        sona.ViewingEvent(**base, timestamp=value)  # type: ignore[arg-type]
    assert err.value.field == "timestamp"
    with pytest.raises(sona.ValidationError) as err:
        sona.events_from_records([{**base, "timestamp": NOW}, {**base, "timestamp": value}])
    assert err.value.field == "timestamp" and err.value.index == 1
    if not isinstance(value, datetime):
        with pytest.raises(sona.ValidationError) as err:
            sona.validate_events(pd.DataFrame([{**base, "timestamp": value}]))
        assert err.value.field == "timestamp"
    with pytest.raises(sona.ValidationError) as err:
        sona.validate_events(pd.DataFrame([{**base, "timestamp": "0001-01-01T00:00:00Z"}]))
    assert err.value.field == "timestamp"


def test_blank_event_ids_are_derived_like_missing_ones() -> None:
    frame = pd.DataFrame(
        {
            "event_id": ["", "  ", "given", None],
            "user_id": "u",
            "content_id": ["a", "b", "c", "d"],
            "timestamp": [1.7e9, 1.7e9 + 60, 1.7e9 + 120, 1.7e9 + 180],
            "completion_rate": 0.5,
        }
    )
    ids = sona.validate_events(frame)["event_id"].tolist()
    derived = sona.validate_events(frame.drop(columns=["event_id"]))["event_id"].tolist()
    assert ids == [derived[0], derived[1], "given", derived[3]]
    event = sona.ViewingEvent(user_id="u", content_id="c", timestamp=NOW, completion_rate=0.5, event_id=" ")
    assert (
        event.event_id
        == sona.ViewingEvent(user_id="u", content_id="c", timestamp=NOW, completion_rate=0.5).event_id
    )
