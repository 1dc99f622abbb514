"""Fire-and-forget progress notifications to the remote sync service.

The sync service is outside our control and may be slow or silent, so a
notification must never delay or fail a playback request: each one is a task
with a 50 ms timeout, at most ``max_in_flight`` run at once, and when that many
are pending new ones are dropped and counted rather than queued without bound.
Failures are counted and logged at most once per ``log_interval`` seconds.

Only the latest position matters to the sync service, so notifications are
coalesced per (user, content, device): while one is in flight for a title on a
device, a newer one waits in a single slot that each newer update overwrites
(the overwritten one is counted as ``coalesced``), and it is sent as soon as
the one in flight finishes. Rapid updates cost one request per round trip of
the sync service, not one per update, and the last position always goes out.

A small circuit breaker stops a dead or black-holed service from costing a new
connection and a 50 ms timer per update: after ``breaker_failures`` failures in
a row, notifications are dropped for ``breaker_cooldown_seconds``, then one
probe is let through and a success closes the circuit again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import httpx

from playback_bridge import _metrics
from playback_bridge._messages import SyncProgress

__all__ = ["SYNC_PROGRESS_PATH", "SyncNotifier", "SyncStats"]

SYNC_PROGRESS_PATH = "/api/v1/sync/progress"
_JSON = {"content-type": "application/json"}

log = logging.getLogger(__name__)


@dataclass(slots=True)
class SyncStats:
    """Running totals since start (also exported as Prometheus counters)."""

    sent: int = 0
    failed: int = 0
    dropped: int = 0
    #: Superseded by a newer position for the same (user, content, device) before being sent.
    coalesced: int = 0


class SyncNotifier:
    """POSTs :class:`SyncProgress` bodies to ``{base_url}/api/v1/sync/progress``.

    Parameters
    ----------
    base_url
        ``SYNC_SERVICE_URL``; ``None`` disables notifications entirely.
    timeout_seconds
        Whole-request budget (connect, write, read) per notification.
    max_in_flight
        Notifications allowed to be pending at once; the rest are dropped.
    log_interval_seconds
        Minimum gap between two failure log lines.
    breaker_failures, breaker_cooldown_seconds
        Failures in a row that open the circuit, and how long it stays open.
    """

    def __init__(
        self,
        base_url: str | None,
        *,
        timeout_seconds: float = 0.05,
        max_in_flight: int = 64,
        log_interval_seconds: float = 60.0,
        breaker_failures: int = 5,
        breaker_cooldown_seconds: float = 1.0,
    ) -> None:
        self.base_url = base_url.rstrip("/") if base_url else None
        self.timeout_seconds = timeout_seconds
        self.max_in_flight = max_in_flight
        self.log_interval_seconds = log_interval_seconds
        self.breaker_failures = breaker_failures
        self.breaker_cooldown_seconds = breaker_cooldown_seconds
        self._consecutive_failures = 0
        self._open_until = float("-inf")
        self.stats = SyncStats()
        # Built now, not on the first update: creating the client (SSL context) takes tens of ms.
        self._client: httpx.AsyncClient | None = (
            httpx.AsyncClient(
                base_url=self.base_url,
                timeout=httpx.Timeout(timeout_seconds),
                limits=httpx.Limits(max_connections=max_in_flight),
            )
            if self.base_url
            else None
        )
        self._tasks: set[asyncio.Task[None]] = set()
        # (user, content, device) with a notification in flight → the newest one waiting behind it.
        self._active: set[tuple[str, str, str]] = set()
        self._waiting: dict[tuple[str, str, str], bytes] = {}
        self._last_log = float("-inf")

    @property
    def enabled(self) -> bool:
        return self.base_url is not None

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def notify(self, progress: SyncProgress) -> None:
        """Schedule one notification and return at once; never raises."""
        if self._client is None or self._client.is_closed:
            return
        key = (progress.user_id, progress.content_id, progress.device_id)
        if key in self._active:  # one is in flight for this title: wait behind it, newest wins
            if key in self._waiting:
                self._count("coalesced")
            self._waiting[key] = progress.model_dump_json().encode()
            return
        if len(self._tasks) >= self.max_in_flight or self._circuit_open():
            self._count("dropped")
            return
        self._active.add(key)
        task = asyncio.get_running_loop().create_task(self._deliver(key, progress.model_dump_json().encode()))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _count(self, outcome: str) -> None:
        setattr(self.stats, outcome, getattr(self.stats, outcome) + 1)
        _metrics.SYNC_NOTIFICATIONS.labels(outcome=outcome).inc()

    async def _deliver(self, key: tuple[str, str, str], body: bytes) -> None:
        """Send ``body``, then whatever newer position arrived for ``key`` meanwhile."""
        try:
            while True:
                await self._send(body)
                waiting = self._waiting.pop(key, None)
                if waiting is None:
                    return
                if self._circuit_open():
                    self._count("dropped")
                    return
                body = waiting
        finally:
            self._active.discard(key)
            if self._waiting.pop(key, None) is not None:  # cancelled at shutdown with one waiting
                self._count("dropped")

    def _circuit_open(self) -> bool:
        if self._consecutive_failures < self.breaker_failures:
            return False
        now = time.monotonic()
        if now < self._open_until:
            return True
        self._open_until = now + self.breaker_cooldown_seconds  # let this one through as the probe
        return False

    async def _send(self, body: bytes) -> None:
        assert self._client is not None
        started = time.perf_counter()
        try:
            # The timeout covers the whole call, including waiting for a pooled connection.
            async with asyncio.timeout(self.timeout_seconds):
                response = await self._client.post(SYNC_PROGRESS_PATH, content=body, headers=_JSON)
            response.raise_for_status()
        except (httpx.HTTPError, TimeoutError) as exc:
            self.stats.failed += 1
            self._consecutive_failures += 1
            if self._consecutive_failures == self.breaker_failures:
                self._open_until = time.monotonic() + self.breaker_cooldown_seconds
            _metrics.SYNC_NOTIFICATIONS.labels(outcome="failed").inc()
            now = time.monotonic()
            if now - self._last_log >= self.log_interval_seconds:
                self._last_log = now
                log.warning(
                    "sync notification failed (%s: %s); %d failed so far, further failures muted for %.0f s",
                    type(exc).__name__,
                    exc,
                    self.stats.failed,
                    self.log_interval_seconds,
                )
        else:
            self._consecutive_failures = 0
            self.stats.sent += 1
            _metrics.SYNC_NOTIFICATIONS.labels(outcome="sent").inc()
        finally:
            _metrics.SYNC_LATENCY.observe(time.perf_counter() - started)

    async def drain(self) -> None:
        """Wait for pending notifications (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        await self.drain()
        if self._client is not None:
            await self._client.aclose()
