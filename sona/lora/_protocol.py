"""The engine as ``sona.lora`` sees it: exactly the hooks adapters use, as a protocol.

Why a protocol: ``sona.lora`` sits below ``sona.engine`` (an import-linter layers
contract in ``pyproject.toml``), so it never imports the engine and never sets
its attributes. ``sona.Sona`` satisfies this structurally; adapters attach
through :meth:`AdaptableEngine.attach`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import pandas as pd
import scipy.sparse as sp
import torch

from sona.catalog import Catalog
from sona.models import TowerScorer, TrainingView
from sona.models._config import SonaConfig

__all__ = ["AdaptableEngine"]


class AdaptableEngine(Protocol):
    """A fitted engine whose user tower takes per-user adapters (``sona.Sona``)."""

    @property
    def catalog(self) -> Catalog: ...

    @property
    def config(self) -> SonaConfig:
        """``min_completion`` (engagement weights) and ``w_tower`` (the tower's share of the fused score)."""
        ...

    @property
    def scorer_(self) -> TowerScorer:
        """The base tower scorer; its tower's ``fc1``/``fc2`` are the adapter targets."""
        ...

    @property
    def model_id_(self) -> str:
        """The base model adapters are trained on and attach to."""
        ...

    @property
    def users_(self) -> npt.NDArray[np.object_]:
        """Every user with events (the default users to train)."""
        ...

    @property
    def adapters_(self) -> Any:
        """The adapter set attached now, or None."""
        ...

    def attach(self, adapters: Any) -> None:
        """Serve with this adapter set (None detaches)."""
        ...

    def training_view(
        self, events: pd.DataFrame, user_ids: Sequence[str], *, fixed: bool = True
    ) -> TrainingView:
        """Tower inputs and the other sources' fused scores for profiles built from ``events`` only."""
        ...

    def tower_inputs(
        self, user_ids: Sequence[str], context: Mapping[str, str] | None = None
    ) -> torch.Tensor: ...

    def user_history(self, user_id: str) -> pd.DataFrame: ...

    def user_events(self, user_ids: Sequence[str]) -> pd.DataFrame:
        """These users' events, sorted by user then time."""
        ...

    def interactions(self, user_ids: Sequence[str]) -> sp.csr_matrix: ...

    def item_index(self, content_ids: Sequence[str]) -> npt.NDArray[np.int64]: ...
