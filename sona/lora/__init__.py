"""Per-user LoRA adapters on the base model's user tower, peft-compatible.

``config`` holds :class:`UserAdapterConfig`, ``layer`` the low-rank weights and
their peft attachment and checkpoint format, ``model`` :class:`UserAdapter`
(the adapter set: create, train, activate, save, load, score). Training many
users, the packed hot store and the storage backends live in private modules.
"""

from sona.lora._data import build_training_set
from sona.lora._engine import attach_adapters, train_adapters, update_user_adapter
from sona.lora._names import adapter_name
from sona.lora._store import AdapterStore, DatabaseAdapterStore, DirectoryAdapterStore
from sona.lora._summary import AdapterTrainingSummary
from sona.lora._training import BatchTrainingResult, TrainingSet, train_batched, train_reference
from sona.lora.config import UserAdapterConfig
from sona.lora.layer import AdapterWeights
from sona.lora.model import UserAdapter

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
