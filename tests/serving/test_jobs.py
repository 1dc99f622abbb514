"""Training jobs shared by two service states (two replicas) on one PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from serving._api import create_app
from serving._state import ServiceState
from sona import Sona
from tests.serving.conftest import FittedEngine, make_state
from tests.serving.test_api import TRAIN, wait_for_job

Auth = Callable[..., dict[str, str]]


@pytest.fixture
def replicas(postgres_url: str, fitted_engine: FittedEngine, tmp_path: Path) -> Iterator[list[ServiceState]]:
    engines = [Sona.load(fitted_engine.directory) for _ in range(2)]
    states = [make_state(postgres_url, e, fitted_engine.events, tmp_path / "adapters") for e in engines]
    yield states
    for st in states:
        st.stop()
        st.storage.dispose()


def test_one_job_per_user_holds_across_replicas(
    replicas: list[ServiceState], fitted_engine: FittedEngine, auth: Auth
) -> None:
    a, b = (TestClient(create_app(st), raise_server_exceptions=False) for st in replicas)
    users = [str(u) for u in fitted_engine.events["user_id"].value_counts().index[:4]]
    for st in replicas:  # workers paused: the first job stays queued while B is asked
        st.stop()
    first = a.post(TRAIN, json={"user_id": users[0], "force": True}, headers=auth(users[0]))
    assert first.status_code == 202, first.text
    job_id = first.json()["job_id"]
    again = b.post(TRAIN, json={"user_id": users[0], "force": True}, headers=auth(users[0]))
    assert again.status_code == 409, again.text
    assert again.json()["job_id"] == job_id
    for st in replicas:
        st.start()

    # Both replicas' workers claim from the same table: every job runs once, whoever takes it.
    ids = [job_id] + [
        c.post(TRAIN, json={"user_id": u, "force": True}, headers=auth(u)).json()["job_id"]
        for c, u in zip((b, a, b), users[1:], strict=True)
    ]
    done = [wait_for_job(a, i, auth(u)) for i, u in zip(ids, users, strict=True)]
    assert {d["status"] for d in done} <= {"succeeded", "skipped"}
    jobs = [replicas[0].storage.get_job(i) for i in ids]
    assert all(j.attempts == 1 for j in jobs)
    assert {j.lease_owner for j in jobs} <= {st.training.owner for st in replicas if st.training}
