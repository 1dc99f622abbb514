"""Synthetic playback traffic against a running server (``sona demo-events``).

Each demo user asks for recommendations, then watches some of them through
the playback API: create a session, a few position updates, end it. Ending a
session publishes ``session-ended``; on the gateway's in-process bus that
becomes a viewing event, a profile update and possibly a training job, which
is what the demo lets an operator watch (``GET /metrics``, recommendations
moving) without a real player.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx
import numpy as np

from serving._auth import SERVICE_SCOPE, issue_token

__all__ = ["DemoStats", "play_demo_traffic"]


@dataclass(slots=True)
class DemoStats:
    """Counts of one demo run; ``errors`` holds the first few failed requests."""

    users: int = 0
    sessions: int = 0
    position_updates: int = 0
    failed_requests: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    def summary_line(self) -> str:
        return (
            f"demo-events: users={self.users} sessions={self.sessions} "
            f"position_updates={self.position_updates} failed_requests={self.failed_requests} "
            f"seconds={self.seconds:.1f}"
        )


def _ok(stats: DemoStats, response: httpx.Response) -> bool:
    if response.is_success:
        return True
    stats.failed_requests += 1
    if len(stats.errors) < 5:
        req = response.request
        stats.errors.append(f"{req.method} {req.url.path}: {response.status_code} {response.text[:200]}")
    return False


def play_demo_traffic(
    base_url: str,
    jwt_secret: str,
    user_ids: Sequence[str],
    *,
    sessions_per_user: int = 3,
    updates_per_session: int = 3,
    seed: int = 0,
    timeout: float = 10.0,
) -> DemoStats:
    """Play ``sessions_per_user`` viewings for each user; returns what was sent.

    Completion rates are drawn uniformly in [0.2, 1.0] (seeded), so some
    viewings qualify as engagement and some do not. Requests use one
    service-scoped token minted with ``jwt_secret``.
    """
    rng = np.random.default_rng(seed)
    token = issue_token("sona-demo", jwt_secret, ttl_seconds=3600, scopes=(SERVICE_SCOPE,))
    stats = DemoStats()
    t0 = time.perf_counter()
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout) as client:
        for user in user_ids:
            stats.users += 1
            recs = client.post("/api/v1/recommendations", json={"user_id": user, "limit": sessions_per_user})
            if not _ok(stats, recs):
                continue
            items = [r["content_id"] for r in recs.json()["recommendations"]]
            durations = rng.uniform(1200.0, 7200.0, size=len(items))
            completions = rng.uniform(0.2, 1.0, size=len(items))
            for content_id, duration, completion in zip(items, durations, completions, strict=True):
                body = {
                    "user_id": user,
                    "content_id": content_id,
                    "device_id": "demo",
                    "duration_seconds": duration,
                }
                created = client.post("/api/v1/sessions", json=body)
                if not _ok(stats, created):
                    continue
                sid = created.json()["id"]
                stats.sessions += 1
                final = float(duration * completion)
                for step in np.linspace(final / updates_per_session, final, updates_per_session):
                    state = "ended" if completion >= 0.999 and step >= final else "playing"
                    moved = client.patch(
                        f"/api/v1/sessions/{sid}/position",
                        json={"position_seconds": float(step), "playback_state": state},
                    )
                    stats.position_updates += int(_ok(stats, moved))
                _ok(stats, client.delete(f"/api/v1/sessions/{sid}"))
    stats.seconds = time.perf_counter() - t0
    return stats
