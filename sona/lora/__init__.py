"""Per-user LoRA adapters on the base model's user tower, peft-compatible.

``config`` holds :class:`UserAdapterConfig`, ``layer`` the low-rank weights and
their peft attachment and checkpoint format, ``model`` :class:`UserAdapter`
(the adapter set: create, train, activate, save, load, score). Training many
users, the packed hot store and the storage backends live in private modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sona._lazy import lazy_exports

if TYPE_CHECKING:
    from sona.lora._data import build_training_set
    from sona.lora._engine import attach_adapters, train_adapters, update_user_adapter
    from sona.lora._names import adapter_name
    from sona.lora._store import AdapterStore, DatabaseAdapterStore, DirectoryAdapterStore
    from sona.lora._summary import AdapterTrainingSummary
    from sona.lora._training import BatchTrainingResult, TrainingSet, train_batched, train_reference
    from sona.lora.config import UserAdapterConfig
    from sona.lora.layer import AdapterWeights
    from sona.lora.model import UserAdapter

_LAZY: dict[str, str] = {
    "build_training_set": "sona.lora._data",
    "attach_adapters": "sona.lora._engine",
    "train_adapters": "sona.lora._engine",
    "update_user_adapter": "sona.lora._engine",
    "adapter_name": "sona.lora._names",
    "AdapterStore": "sona.lora._store",
    "DatabaseAdapterStore": "sona.lora._store",
    "DirectoryAdapterStore": "sona.lora._store",
    "AdapterTrainingSummary": "sona.lora._summary",
    "BatchTrainingResult": "sona.lora._training",
    "TrainingSet": "sona.lora._training",
    "train_batched": "sona.lora._training",
    "train_reference": "sona.lora._training",
    "UserAdapterConfig": "sona.lora.config",
    "AdapterWeights": "sona.lora.layer",
    "UserAdapter": "sona.lora.model",
}
__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)

__all__ = [
    "AdapterStore",
    "AdapterTrainingSummary",
    "AdapterWeights",
    "BatchTrainingResult",
    "DatabaseAdapterStore",
    "DirectoryAdapterStore",
    "TrainingSet",
    "UserAdapter",
    "UserAdapterConfig",
    "adapter_name",
    "attach_adapters",
    "build_training_set",
    "train_batched",
    "train_adapters",
    "train_reference",
    "update_user_adapter",
]
