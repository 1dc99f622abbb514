"""The low-rank weights of one user's adapter and how they attach through peft.

An adapter is a pair ``A`` (r, in) and ``B`` (out, r) for each targeted
``nn.Linear`` of the user tower (``fc1``, ``fc2``); the layer output becomes
``W x + b + (alpha / r) * B A x``. ``B`` starts at zero, so an untrained adapter
reproduces the base model exactly.

peft is the reference implementation and the checkpoint format: a
:class:`~sona.models._tower.TowerScorer` wrapped with :func:`attach` gets real
``peft.tuners.lora.Linear`` layers, and :func:`serialize` writes exactly what
``PeftModel.save_pretrained`` would (``adapter_config.json`` +
``adapter_model.safetensors``, adapter name stripped from the keys), so
``PeftModel.load_adapter`` reads our files. The fast paths in
``sona.lora._stacked`` compute the same function without per-adapter modules.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from sona.errors import AdapterCorruptError, ConfigError
from sona.lora.config import UserAdapterConfig
from sona.models._tower import TowerScorer

if TYPE_CHECKING:  # peft (and transformers under it) is imported only when a peft path is used
    from peft import LoraConfig, PeftModel

__all__ = [
    "AdapterWeights",
    "attach",
    "deserialize",
    "peft_config",
    "peft_weights",
    "serialize",
    "set_peft_weights",
]

#: Where the tower's layers sit inside a ``TowerScorer``: peft keys are relative to it.
_TOWER_PATH = "tower"
_KEY = "base_model.model." + _TOWER_PATH + ".{module}.lora_{part}.weight"


@dataclass(slots=True)
class AdapterWeights:
    """One user's adapter: ``lora_A[m]`` (r, in) and ``lora_B[m]`` (out, r) per target module."""

    user_id: str
    rank: int
    alpha: float
    lora_A: dict[str, torch.Tensor]
    lora_B: dict[str, torch.Tensor]
    version: int | None = None
    meta: dict[str, object] = field(default_factory=dict)
    #: The base model (``Sona.model_id_``) it was trained on; recorded in the checkpoint's metadata.
    model_id: str | None = None

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    @property
    def modules(self) -> tuple[str, ...]:
        return tuple(self.lora_A)

    def nbytes(self) -> int:
        """Bytes of the weight tensors as held in memory."""
        return sum(t.numel() * t.element_size() for t in (*self.lora_A.values(), *self.lora_B.values()))


def peft_config(config: UserAdapterConfig) -> LoraConfig:
    """The peft ``LoraConfig`` for ``config``: B zero-init, no bias, the tower's Linear layers."""
    from peft import LoraConfig

    return LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=[f"{_TOWER_PATH}.{m}" for m in config.target_modules],
        bias="none",
        init_lora_weights=True,
    )


def attach(scorer: TowerScorer, config: UserAdapterConfig, adapter_names: Sequence[str]) -> PeftModel:
    """Wrap a *copy* of ``scorer`` with one peft LoRA adapter per name.

    peft injects layers in place, so the copy keeps the caller's base model
    untouched. Only adapter weights require gradients afterwards.
    """
    from peft import get_peft_model

    if not adapter_names:
        raise ConfigError("attach needs at least one adapter name")
    base = copy.deepcopy(scorer)
    lcfg = peft_config(config)
    try:
        model = get_peft_model(base, lcfg, adapter_name=adapter_names[0])
        for name in adapter_names[1:]:
            model.add_adapter(name, lcfg)
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"cannot attach LoRA to the user tower: {exc}") from exc
    model.eval()
    return model


def _peft_layer(model: PeftModel, module: str) -> torch.nn.Module:
    return model.get_submodule(f"base_model.model.{_TOWER_PATH}.{module}")


def set_peft_weights(model: PeftModel, name: str, weights: AdapterWeights) -> None:
    """Copy ``weights`` into adapter ``name`` of a peft-wrapped scorer."""
    with torch.no_grad():
        for m in weights.modules:
            layer = _peft_layer(model, m)
            layer.lora_A[name].weight.copy_(weights.lora_A[m])  # type: ignore[index]
            layer.lora_B[name].weight.copy_(weights.lora_B[m])  # type: ignore[index]


def peft_weights(model: PeftModel, name: str, user_id: str, config: UserAdapterConfig) -> AdapterWeights:
    """Read adapter ``name`` out of a peft-wrapped scorer."""
    a: dict[str, torch.Tensor] = {}
    b: dict[str, torch.Tensor] = {}
    for m in config.target_modules:
        layer = _peft_layer(model, m)
        a[m] = layer.lora_A[name].weight.detach().clone()  # type: ignore[index]
        b[m] = layer.lora_B[name].weight.detach().clone()  # type: ignore[index]
    return AdapterWeights(user_id=user_id, rank=config.rank, alpha=config.alpha, lora_A=a, lora_B=b)


@functools.lru_cache(maxsize=8)
def _peft_config_dict(config: UserAdapterConfig) -> dict[str, object]:
    """``peft_config(config)`` as JSON-ready values (built once per config: a job saves thousands)."""
    lcfg = peft_config(config).to_dict()
    return {k: sorted(v) if isinstance(v, set) else v for k, v in lcfg.items()}


def serialize(weights: AdapterWeights, config: UserAdapterConfig) -> tuple[str, bytes]:
    """peft's checkpoint pair: ``adapter_config.json`` text and safetensors bytes."""
    dtype = torch.float16 if config.storage_dtype == "float16" else torch.float32
    lcfg = dict(_peft_config_dict(config))
    lcfg["r"] = weights.rank
    lcfg["lora_alpha"] = weights.alpha
    tensors: dict[str, torch.Tensor] = {}
    for m in weights.modules:
        tensors[_KEY.format(module=m, part="A")] = weights.lora_A[m].detach().to(dtype).contiguous()
        tensors[_KEY.format(module=m, part="B")] = weights.lora_B[m].detach().to(dtype).contiguous()
    meta = {"format": "pt", "user_id": weights.user_id}
    if weights.model_id:
        meta["sona_model_id"] = weights.model_id
    return json.dumps(lcfg, indent=2, sort_keys=True, default=str), st_save(tensors, metadata=meta)


def deserialize(user_id: str, version: int | None, config_json: str | bytes, data: bytes) -> AdapterWeights:
    """Parse a stored checkpoint back into float32 weights.

    Raises
    ------
    AdapterCorruptError
        When the config or the safetensors payload cannot be read or is inconsistent.
    """
    try:
        cfg = json.loads(config_json)
        rank, alpha = int(cfg["r"]), float(cfg["lora_alpha"])
        tensors = st_load(data)
    except (ValueError, KeyError, TypeError, SafetensorError) as exc:
        raise AdapterCorruptError(user_id, version, f"unreadable checkpoint: {exc}") from exc
    prefix, suffix = "base_model.model." + _TOWER_PATH + ".", ".weight"
    a: dict[str, torch.Tensor] = {}
    b: dict[str, torch.Tensor] = {}
    for key, tensor in tensors.items():
        if not (key.startswith(prefix) and key.endswith(suffix)):
            raise AdapterCorruptError(user_id, version, f"unexpected tensor {key!r}")
        module, _, part = key[len(prefix) : -len(suffix)].rpartition(".")
        target = {"lora_A": a, "lora_B": b}.get(part)
        if target is None:
            raise AdapterCorruptError(user_id, version, f"unexpected tensor {key!r}")
        target[module] = tensor.to(torch.float32)
    if not a or set(a) != set(b):
        raise AdapterCorruptError(user_id, version, "lora_A/lora_B tensors do not pair up")
    for m in a:
        if a[m].shape[0] != rank or b[m].shape[1] != rank or not torch.isfinite(a[m]).all():
            raise AdapterCorruptError(user_id, version, f"bad shape or values for module {m!r}")
        if not torch.isfinite(b[m]).all():
            raise AdapterCorruptError(user_id, version, f"non-finite values for module {m!r}")
    return AdapterWeights(
        user_id=user_id,
        rank=rank,
        alpha=alpha,
        lora_A=a,
        lora_B=b,
        version=version,
        model_id=_checkpoint_metadata(data).get("sona_model_id"),
    )


def _checkpoint_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors payload (8-byte little-endian header length, JSON header)."""
    try:
        n = int.from_bytes(data[:8], "little")
        meta = json.loads(data[8 : 8 + n]).get("__metadata__") or {}
    except (ValueError, AttributeError):
        return {}
    return {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}
