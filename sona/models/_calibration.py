"""Platt scaling: the map from a fused ranking score to a probability.

The fused score is a sum of per-user z-scores, so its units are arbitrary. A
1-D logistic regression ``p = sigmoid(a * fused + b)`` fitted on held-out
(user, title) pairs turns it into "chance that the title is among the
user's next interactions". With ``a > 0`` the map is monotone, so it never
changes a ranking.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["PlattScaling", "fit_platt", "sigmoid"]


def sigmoid(x: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
    """Logistic function in float32, clipped so ``exp`` never overflows."""
    return (1.0 / (1.0 + np.exp(-np.clip(x, -30, 30)))).astype(np.float32)


@dataclass(frozen=True, slots=True)
class PlattScaling:
    """``p = sigmoid(slope * fused + intercept)``; ``slope`` is always > 0 (monotone)."""

    slope: float
    intercept: float

    def __call__(self, fused: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
        return sigmoid(self.slope * np.asarray(fused, dtype=np.float64) + self.intercept)

    def to_dict(self) -> dict[str, float]:
        return {"slope": self.slope, "intercept": self.intercept}


def fit_platt(
    x: npt.NDArray[np.floating],
    y: npt.NDArray[np.floating],
    w: npt.NDArray[np.floating] | None = None,
    *,
    iterations: int = 50,
    ridge: float = 1e-6,
) -> PlattScaling | None:
    """Weighted 1-D logistic regression of labels ``y`` (0/1) on scores ``x`` by Newton's method.

    ``w`` weights each pair (e.g. the inverse negative-sampling rate, so the
    fitted probabilities refer to all titles, not the sample). Returns None
    when the fit is degenerate (one class only, or a slope that is not
    positive, i.e. the scores carry no usable ordering).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    w = np.ones_like(x) if w is None else np.asarray(w, dtype=np.float64)
    if len(x) == 0 or not (y > 0).any() or not (y < 1).any():
        return None
    mu = float(np.average(x, weights=w))
    sd = float(np.sqrt(np.average((x - mu) ** 2, weights=w))) or 1.0
    z = np.stack([(x - mu) / sd, np.ones_like(x)], axis=1)  # standardized for a well-conditioned Hessian
    theta = np.array([0.0, np.log(np.average(y, weights=w) / max(1.0 - np.average(y, weights=w), 1e-12))])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(z @ theta, -30, 30)))
        grad = z.T @ (w * (p - y)) + ridge * theta
        hess = (z * (w * p * (1.0 - p))[:, None]).T @ z + ridge * np.eye(2)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if np.abs(step).max() < 1e-10:
            break
    slope = float(theta[0] / sd)
    if not np.isfinite(theta).all() or slope <= 0:
        return None
    return PlattScaling(slope=slope, intercept=float(theta[1] - theta[0] * mu / sd))
