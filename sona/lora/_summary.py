"""What a training run reports back: who got an adapter, who did not and why, and the lift."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

__all__ = ["AdapterTrainingSummary"]


@dataclass(slots=True)
class AdapterTrainingSummary:
    """Outcome of training a set of users' adapters.

    ``trained`` got a new adapter version; ``rejected`` were trained but did not
    beat the base on their held-out tail (they keep their previous adapter);
    ``skipped`` maps a user to the guard that refused them; ``failed`` maps a
    user to an error. ``metrics`` has one row per trained or rejected user:
    ``user_id, n_events, holdout_base, holdout_adapter, kept, version``, where
    the holdout scores are the mean ``1/log2(rank+2)`` of the user's held-out
    titles. ``lift`` is the relative change of the mean held-out score.
    """

    trained: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    metrics: pd.DataFrame = field(default_factory=pd.DataFrame)
    seconds: float = 0.0

    @property
    def lift(self) -> float:
        if self.metrics.empty:
            return 0.0
        base = float(self.metrics["holdout_base"].mean())
        return float(self.metrics["holdout_adapter"].mean()) / base - 1.0 if base > 0 else 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            "trained": list(self.trained),
            "rejected": list(self.rejected),
            "skipped": dict(self.skipped),
            "failed": dict(self.failed),
            "lift": self.lift,
            "seconds": self.seconds,
            "metrics": self.metrics.to_dict(orient="records"),
        }
