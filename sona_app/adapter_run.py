"""A resumable batch run of per-user adapter training (``sona train-adapters``, the quickstart).

Users are trained in chunks (one vectorized :func:`sona.lora.train_adapters`
call each). After every chunk each user's outcome is appended to a JSON-lines
checkpoint and fsynced, so a run that is interrupted (SIGINT, SIGTERM, a
killed pod) and started again with the same run id skips the users it already
finished instead of training them twice. A run that reaches its end renames
the checkpoint to ``<run>.done.jsonl``: the next invocation with that id is a
new run (what a cron schedule wants), and the finished file is the record of
the last complete run.

Sharding: :class:`Shard` ``I/N`` owns the users whose stable hash
(:func:`shard_of`, BLAKE2b of the id, the same in every process and Python
version, unlike ``hash()``) is ``I`` modulo ``N``. The shards partition any
user list, so N processes (a Kubernetes Indexed Job, one pod per
``JOB_COMPLETION_INDEX``) never train one user twice and together cover every
user; each shard has its own checkpoint (its run id names the shard).

Stopping is cooperative: ``should_stop`` is polled between chunks, so a chunk
in flight always finishes and is recorded (adapters are saved by the store
before the checkpoint line is written; a crash between the two at worst
retrains that chunk, never half-writes an adapter).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt
from tqdm.auto import tqdm

from sona.errors import ConfigError, StorageError

if TYPE_CHECKING:
    from sona.engine import Sona
    from sona.lora import AdapterStore, AdapterTrainingSummary, UserAdapterConfig

__all__ = [
    "AdapterRunReport",
    "RunCheckpoint",
    "Shard",
    "UserOutcome",
    "outcome_counts",
    "parse_since",
    "read_user_file",
    "run_adapter_training",
    "run_key",
    "shard_of",
]

Outcome = Literal["trained", "rejected", "skipped", "failed"]


@dataclass(frozen=True, slots=True)
class UserOutcome:
    """What happened to one user in a run; ``lift`` is the held-out relative gain (NaN if untrained)."""

    user_id: str
    outcome: Outcome
    lift: float = math.nan
    reason: str | None = None

    def to_json(self) -> str:
        lift = None if math.isnan(self.lift) else round(self.lift, 6)
        return json.dumps(
            {"user_id": self.user_id, "outcome": self.outcome, "lift": lift, "reason": self.reason}
        )

    @classmethod
    def from_json(cls, line: str) -> UserOutcome:
        d = json.loads(line)
        lift = d.get("lift")
        return cls(
            str(d["user_id"]), d["outcome"], math.nan if lift is None else float(lift), d.get("reason")
        )


def shard_of(user_id: str, count: int) -> int:
    """The shard (0..count-1) of ``user_id``: BLAKE2b of its UTF-8 bytes, modulo ``count``."""
    digest = hashlib.blake2b(str(user_id).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based); ``Shard()`` is the whole user list."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ConfigError(
                f"shard index must be in 0..count-1 with count >= 1, got {self.index}/{self.count}"
            )

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"I/N"`` (e.g. ``"0/4"``)."""
        index, sep, count = text.strip().partition("/")
        if not sep or not index.strip().isdigit() or not count.strip().isdigit():
            raise ConfigError(f"--shard: expected I/N with integers 0 <= I < N, got {text!r}")
        return cls(int(index), int(count))

    @classmethod
    def resolve(
        cls, shard: str | None, shards: int | None, env_index: int | None, env_count: int | None
    ) -> Shard:
        """From ``--shard I/N``, else the Indexed Job's index with ``--shards N`` or ``SONA_SHARDS``."""
        if shard is not None:
            return cls.parse(shard)
        count = shards if shards is not None else env_count
        if env_index is None:
            if count is not None and count > 1:
                raise ConfigError(
                    f"{count} shards but no shard index: pass --shard I/N or set JOB_COMPLETION_INDEX"
                )
            return cls()
        if count is None:
            raise ConfigError(
                "JOB_COMPLETION_INDEX is set but not the shard count: pass --shards N or set SONA_SHARDS"
            )
        if env_index >= count:
            raise ConfigError(f"JOB_COMPLETION_INDEX={env_index} is not below the shard count {count}")
        return cls(env_index, count)

    @property
    def label(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, user_ids: Sequence[str]) -> list[str]:
        """The users of ``user_ids`` in this shard, in their order."""
        if self.count == 1:
            return list(user_ids)
        return [u for u in user_ids if shard_of(u, self.count) == self.index]  # one hash per id


def run_key(**selection: object) -> str:
    """A stable run id from the arguments that select users (not from the resolved list,
    which changes as new events arrive between an interrupted run and its restart)."""
    text = json.dumps(selection, sort_keys=True, default=str)
    return "train-adapters-" + hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class RunCheckpoint:
    """The per-user outcomes of one run, in ``directory/<run_id>.jsonl`` (finished: ``.done.jsonl``)."""

    directory: Path
    run_id: str

    @property
    def path(self) -> Path:
        return self.directory / f"{self.run_id}.jsonl"

    @property
    def done_path(self) -> Path:
        return self.directory / f"{self.run_id}.done.jsonl"

    @property
    def finished(self) -> bool:
        """True when the last run with this id reached its end."""
        return self.done_path.exists() and not self.path.exists()

    def load(self) -> dict[str, UserOutcome]:
        """Outcomes recorded by an unfinished run with this id (empty when there is none).

        A torn last line (the process died mid-write) is ignored: that user is retrained.
        """
        if not self.path.exists():
            return {}
        out: dict[str, UserOutcome] = {}
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise StorageError(f"cannot read checkpoint {self.path}: {exc}") from exc
        for line in lines:
            try:
                rec = UserOutcome.from_json(line)
            except (ValueError, KeyError, TypeError):
                continue
            out[rec.user_id] = rec
        return out

    def record(self, outcomes: Sequence[UserOutcome]) -> None:
        """Append and fsync, so a recorded user survives any later crash."""
        if not outcomes:
            return
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as f:
                f.write("".join(o.to_json() + "\n" for o in outcomes))
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise StorageError(f"cannot write checkpoint {self.path}: {exc}") from exc

    def reset(self) -> None:
        """Forget an unfinished run: the next run starts from the first user."""
        self.path.unlink(missing_ok=True)

    def finish(self) -> None:
        """Mark the run complete (atomic rename over the previous finished run)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():  # a run with nothing to do still ends
            self.path.touch()
        os.replace(self.path, self.done_path)


@dataclass(slots=True)
class AdapterRunReport:
    """Counts of one invocation, plus the run's held-out lifts (this invocation and resumed users)."""

    selected: int = 0
    resumed: int = 0
    trained: int = 0
    rejected: int = 0
    skipped: int = 0
    failed: int = 0
    interrupted: bool = False
    seconds: float = 0.0
    lifts: list[float] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)

    @property
    def median_lift(self) -> float:
        """Median per-user relative lift of held-out score over the base model (NaN without any)."""
        arr: npt.NDArray[np.float64] = np.asarray(self.lifts, dtype=np.float64)
        arr = arr[np.isfinite(arr)]
        return float(np.median(arr)) if arr.size else math.nan

    def summary_line(self) -> str:
        """One greppable line for cron logs."""
        lift = "n/a" if math.isnan(self.median_lift) else f"{self.median_lift:+.1%}"
        state = "interrupted" if self.interrupted else "done"
        return (
            f"train-adapters {state}: trained={self.trained} rejected={self.rejected} "
            f"skipped={self.skipped + self.resumed} (already done={self.resumed}) failed={self.failed} "
            f"of {self.selected} users; median held-out lift={lift} (n={len(self.lifts)}); "
            f"seconds={self.seconds:.1f}"
        )


def _outcomes(summary: AdapterTrainingSummary, chunk: Sequence[str]) -> list[UserOutcome]:
    """One outcome per user of ``chunk``; users the summary does not mention count as failed."""
    lifts: dict[str, float] = {}
    m = summary.metrics
    if not m.empty:
        base = m["holdout_base"].to_numpy(dtype=np.float64)
        tuned = m["holdout_adapter"].to_numpy(dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            lift = np.where(base > 0, tuned / base - 1.0, np.nan)
        lifts = dict(zip(m["user_id"].astype(str), lift.tolist(), strict=True))
    trained, rejected = set(summary.trained), set(summary.rejected)
    out = []
    for u in chunk:  # per user of one chunk: dictionary look-ups only
        if u in summary.failed:
            out.append(UserOutcome(u, "failed", reason=str(summary.failed[u])))
        elif u in trained:
            out.append(UserOutcome(u, "trained", lifts.get(u, math.nan)))
        elif u in rejected:
            out.append(UserOutcome(u, "rejected", lifts.get(u, math.nan), "did not beat the base model"))
        elif u in summary.skipped:
            out.append(UserOutcome(u, "skipped", reason=summary.skipped[u]))
        else:
            out.append(UserOutcome(u, "failed", reason="not reported by the trainer"))
    return out


def run_adapter_training(
    engine: Sona,
    user_ids: Sequence[str],
    *,
    checkpoint: RunCheckpoint,
    config: UserAdapterConfig | None = None,
    store: AdapterStore | None = None,
    force: bool = False,
    chunk_size: int = 64,
    progress: bool = True,
    should_stop: Callable[[], bool] = lambda: False,
    on_chunk: Callable[[Sequence[UserOutcome]], None] | None = None,
) -> AdapterRunReport:
    """Train adapters for ``user_ids`` chunk by chunk, resuming ``checkpoint`` if it is unfinished.

    Parameters
    ----------
    engine
        A fitted :class:`sona.Sona`; winners are attached to it (``engine.adapters_``).
    checkpoint
        Where outcomes are recorded; users already in it are skipped.
    chunk_size
        Users per vectorized training call; also how much work a stop or crash can lose.
    should_stop
        Polled between chunks; True ends the run early with ``interrupted=True``.

    Returns
    -------
    AdapterRunReport
        The checkpoint is finished (renamed) only when every user was processed.
    """
    from sona.lora import train_adapters  # torch/peft stay out of `sona --help`

    if chunk_size < 1:
        raise ConfigError(f"chunk_size must be >= 1, got {chunk_size!r}")
    start = time.perf_counter()
    users = list(dict.fromkeys(str(u) for u in user_ids))
    done = checkpoint.load()
    report = AdapterRunReport(selected=len(users))
    report.resumed = sum(1 for u in users if u in done)
    report.lifts = [o.lift for o in done.values() if o.outcome in ("trained", "rejected")]
    todo = [u for u in users if u not in done]
    bar = tqdm(total=len(todo), unit="user", desc="adapters", disable=not progress, leave=False)
    try:
        for lo in range(0, len(todo), chunk_size):
            if should_stop():
                report.interrupted = True
                break
            chunk = todo[lo : lo + chunk_size]
            summary = train_adapters(engine, chunk, config=config, store=store, force=force)
            outcomes = _outcomes(summary, chunk)
            checkpoint.record(outcomes)
            for o in outcomes:
                if o.outcome == "failed":
                    report.failures[o.user_id] = o.reason or ""
                if o.outcome in ("trained", "rejected"):
                    report.lifts.append(o.lift)
            counts = {
                k: sum(1 for o in outcomes if o.outcome == k) for k in ("trained", "rejected", "skipped")
            }
            report.trained += counts["trained"]
            report.rejected += counts["rejected"]
            report.skipped += counts["skipped"]
            report.failed += len(outcomes) - sum(counts.values())
            # postfix first, then the count: update() draws both, so the bar's last frame
            # shows the same totals as the summary line
            bar.set_postfix(trained=report.trained, failed=report.failed, refresh=False)
            bar.update(len(chunk))
            if on_chunk is not None:
                on_chunk(outcomes)
    finally:
        bar.refresh()  # update() may skip drawing within mininterval; the final counts must show
        bar.close()
    if not report.interrupted:
        checkpoint.finish()
    report.seconds = time.perf_counter() - start
    return report


def parse_since(text: str) -> datetime:
    """ISO 8601 date or datetime; naive values are UTC."""
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigError(f"--since: expected an ISO 8601 timestamp, got {text!r}") from exc
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def read_user_file(path: Path | str, text: str | None = None) -> list[str]:
    """User ids, one a line; blank lines and ``#`` comments are ignored, order and first occurrence kept."""
    if text is None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"--users: cannot read {path}: {exc}") from exc
    ids = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return list(dict.fromkeys(i for i in ids if i))


def outcome_counts(outcomes: Mapping[str, UserOutcome]) -> dict[str, int]:
    """How many users ended in each outcome (for notebooks and reports)."""
    counts = dict.fromkeys(("trained", "rejected", "skipped", "failed"), 0)
    for o in outcomes.values():
        counts[o.outcome] += 1
    return counts
