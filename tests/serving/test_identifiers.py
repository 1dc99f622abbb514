"""One identifier rule everywhere: the SONA API, the playback API and the event consumer.

Every id (user, content, event, session, device, job) is 1-255 printable
characters, not all whitespace, and a refusal names the field and says the rule
in words, never as a regular expression. Absurd numbers (``1e308`` seconds) are
refused too.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable

import httpx
import pytest
from starlette.testclient import TestClient

from playback_bridge import decode_batch, decode_event
from playback_bridge._messages import PoisonMessageError
from serving._state import ServiceState
from sona import IDENTIFIER_RULE, identifier_problem
from sona.identifiers import IDENTIFIER_PATTERN, NOT_PRINTABLE_CHARACTER
from tests.serving.test_playback_auth import BODY, playback  # noqa: F401 - the fixture

Auth = Callable[..., dict[str, str]]

#: NUL, newline, a right-to-left override, a zero-width space, a tag character, a lone surrogate.
BAD_IDS = ["u1\x00", "u1\n", "u\u202e1", "u\u200b1", "u\U000e00411", "u\ud8001", " ", "x" * 256, ""]
RULE_WORDS = "printable characters"


def _assert_worded(body: dict[str, object], field: str) -> None:
    assert field in str(body["field"]), body
    message = str(body["message"])
    assert message.startswith(str(body["field"])), message  # "user_id: ..." names the field
    assert RULE_WORDS in message or "empty" in message or "characters long" in message, message
    assert "^[" not in message and "\\x" not in message, f"a regex leaked into the message: {message}"


def test_the_character_class_is_unicodes_controls_formats_and_separators() -> None:
    # The rule is written out (stable across Python builds); it must cover every Cc, Cf, Zl and Zp
    # character this Python knows, and nothing printable.
    banned = {"Cc", "Cf", "Zl", "Zp", "Cs"}
    for cp in range(0x110000):
        ch = chr(cp)
        is_banned = unicodedata.category(ch) in banned
        assert (NOT_PRINTABLE_CHARACTER.match(ch) is not None) == is_banned, f"U+{cp:04X}"


@pytest.mark.parametrize("value", ["u1", "né-42", "ユーザー", "a b", "🎬", "x" * 255, " padded "])
def test_printable_ids_pass_and_the_schema_pattern_agrees(value: str) -> None:
    assert identifier_problem(value) is None
    assert re.fullmatch(IDENTIFIER_PATTERN, value)


@pytest.mark.parametrize("value", [v for v in BAD_IDS if "\ud800" not in v and len(v) <= 255 and v])
def test_the_schema_pattern_refuses_what_the_server_refuses(value: str) -> None:
    assert identifier_problem(value) is not None
    assert re.fullmatch(IDENTIFIER_PATTERN, value) is None


@pytest.mark.parametrize("bad", BAD_IDS)
def test_recommendations_refuse_a_bad_user_id_in_words(client: TestClient, auth: Auth, bad: str) -> None:
    r = client.post(
        "/api/v1/recommendations",
        content=json.dumps({"user_id": bad, "limit": 5}),  # json.dumps spells a lone surrogate
        headers={**auth("svc", service=True), "Content-Type": "application/json"},
    )
    assert r.status_code == 422, r.text
    _assert_worded(r.json(), "user_id")


@pytest.mark.parametrize("bad", ["u1\x00", "u1\n", "u\u202e1"])
def test_profile_update_refuses_bad_user_and_event_ids_and_stores_nothing(
    client: TestClient, state: ServiceState, auth: Auth, bad: str
) -> None:
    content = str(state.engine.catalog.ids[0])
    event = {"content_id": content, "timestamp": "2026-03-01T20:00:00Z", "completion_rate": 0.9}
    service = auth("svc", service=True)
    as_user = client.post(
        "/api/v1/profile/update", json={"user_id": bad, "viewing_events": [event]}, headers=service
    )
    assert as_user.status_code == 422, as_user.text
    _assert_worded(as_user.json(), "user_id")
    as_event = client.post(
        "/api/v1/profile/update",
        json={"user_id": "clean", "viewing_events": [event, {**event, "event_id": bad}]},
        headers=service,
    )
    assert as_event.status_code == 422, as_event.text
    _assert_worded(as_event.json(), "viewing_events[1].event_id")
    assert as_event.json()["index"] == 1
    assert state.storage.events_for_users([bad, "clean"]).empty


def test_a_job_id_in_the_path_follows_the_rule(client: TestClient, auth: Auth) -> None:
    r = client.get("/api/v1/lora/jobs/j%E2%80%AE1", headers=auth("svc", service=True))  # U+202E
    assert r.status_code == 422, r.text
    _assert_worded(r.json(), "job_id")


@pytest.mark.parametrize(
    ("field", "bad"), [("user_id", "u\u202e1"), ("content_id", "c\x00"), ("device_id", "tv\n")]
)
async def test_playback_refuses_bad_ids_in_words(
    playback: httpx.AsyncClient,  # noqa: F811 - the fixture
    auth: Auth,
    field: str,
    bad: str,
) -> None:
    r = await playback.post("/api/v1/sessions", json={**BODY, field: bad}, headers=auth("u1", service=True))
    assert r.status_code == 422, r.text
    _assert_worded(r.json(), field)


async def test_playback_refuses_absurd_durations_and_positions(
    playback: httpx.AsyncClient,  # noqa: F811 - the fixture
    auth: Auth,
) -> None:
    huge = await playback.post(
        "/api/v1/sessions", json={**BODY, "duration_seconds": 1e308}, headers=auth("u1")
    )
    assert huge.status_code == 422, huge.text
    assert huge.json()["field"] == "duration_seconds"
    made = await playback.post("/api/v1/sessions", json=BODY, headers=auth("u1"))
    assert made.status_code == 201, made.text
    sid = made.json()["id"]
    far = await playback.patch(
        f"/api/v1/sessions/{sid}/position", json={"position_seconds": 1e308}, headers=auth("u1")
    )
    assert far.status_code == 422, far.text
    by_query = await playback.get(
        "/api/v1/playback/continue-watching", params={"user_id": "u\u202e1"}, headers=auth("u1", service=True)
    )
    assert by_query.status_code == 422, by_query.text
    _assert_worded(by_query.json(), "user_id")


def _message(**changes: object) -> bytes:
    event = {
        "event_type": "session-ended",
        "schema_version": 1,
        "session_id": "s1",
        "user_id": "u1",
        "content_id": "c1",
        "device_id": "tv",
        "timestamp": "2026-03-01T20:00:00+00:00",
        "final_position_seconds": 100.0,
        "completion_rate": 0.5,
        "duration_seconds": 200.0,
    }
    return json.dumps({**event, **changes}).encode()


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"user_id": "u\u202e1"}, "RIGHT-TO-LEFT OVERRIDE"),
        ({"content_id": "c\u200b1"}, "ZERO WIDTH SPACE"),
        ({"session_id": "s\n"}, "U+000A"),
        ({"duration_seconds": 1e308}, "duration_seconds"),
    ],
)
def test_the_consumer_dead_letters_the_same_ids_with_the_reason(
    changes: dict[str, object], words: str
) -> None:
    good, bad = _message(), _message(**changes)
    batch, poison = decode_batch([good, bad])
    assert list(batch.frame.index) == [0]  # the good message is kept
    assert [i for i, _ in poison] == [1]
    reason = poison[0][1]
    assert words in reason, reason
    with pytest.raises(PoisonMessageError) as caught:
        decode_event(bad)
    assert caught.value.reason == reason
    if "id" in next(iter(changes)):
        assert IDENTIFIER_RULE in reason
