"""Per-unit adapters: low-rank deltas on the frozen trunk and stem, a correction on the head.

A new adapter changes nothing (its up-projections start at zero), so a unit starts from the fleet
policy's behaviour and drifts only as far as its own experience pushes it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save
from torch import nn

from shared_policy.config import AdapterConfig
from shared_policy.durable import fsync_dir


class LowRankDelta(nn.Module):
    """A rank-r change ``scale * up @ down`` of one frozen Linear layer's weight, with ``up`` zero at start."""

    def __init__(self, in_features: int, out_features: int, rank: int, alpha: float):
        super().__init__()
        self.down = nn.Parameter(torch.randn(rank, in_features) / rank)
        self.up = nn.Parameter(torch.zeros(out_features, rank))
        self.scale = alpha / rank

    def weight_delta(self) -> torch.Tensor:
        """The (out, in) matrix added to the frozen layer's weight."""
        return (self.up @ self.down) * self.scale


class Adapter(nn.Module):
    """One robot unit's adaptation of one hardware type's actor.

    Run it with ``policy.action_mean(hardware, obs, adapter)``: :func:`shared_policy.actor.actor_layers`
    folds its deltas into the actor's weights.
    """

    def __init__(self, policy: nn.Module, hardware: str, cfg: AdapterConfig | None = None):
        super().__init__()
        cfg = cfg or AdapterConfig()
        if cfg.rank < 1:
            raise ValueError(f"adapter.rank must be >= 1, got {cfg.rank}")
        spec = policy.spec(hardware)
        self.hardware = hardware
        self.cfg = cfg

        def deltas(seq: nn.Module) -> nn.ModuleList:
            return nn.ModuleList(LowRankDelta(m.in_features, m.out_features, cfg.rank, cfg.alpha)
                                 for m in seq.modules() if isinstance(m, nn.Linear))

        self.trunk_deltas = deltas(policy.trunk)
        self.stem_deltas = deltas(policy.stems[hardware].net)
        self.head_delta = LowRankDelta(policy.cfg.latent_dim, spec.num_actions, cfg.rank, cfg.alpha)
        self.head_bias = nn.Parameter(torch.zeros(spec.num_actions))  # a unit's constant offsets (calibration, sag)
        self.log_std_delta = nn.Parameter(torch.zeros(spec.num_actions))

    def weight_deltas(self) -> list[torch.Tensor]:
        """The change of each of the actor's Linear weights, in the order obs -> action (stem, trunk, head)."""
        return [d.weight_delta() for d in (*self.stem_deltas, *self.trunk_deltas, self.head_delta)]

    def num_parameters(self) -> int:
        """Trainable parameter count of this adapter."""
        return sum(p.numel() for p in self.parameters())


class AdapterFileError(RuntimeError):
    """An adapter file is missing, corrupted, or belongs to another hardware type or trunk layout."""


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        h.update(k.encode())
        h.update(tensors[k].contiguous().numpy().tobytes())
    return h.hexdigest()


def adapter_bytes(adapter: Adapter, version: int, trunk_version: int) -> bytes:
    """The adapter file's bytes: safetensors with version, trunk version, hardware, shape and the weights' sha256
    in its metadata. (The metadata's order is not fixed, so compare two files by their ``sha256`` entry.)"""
    tensors = {k: v.detach().contiguous().cpu().clone() for k, v in adapter.state_dict().items()}
    meta = {"version": str(int(version)), "trunk_version": str(int(trunk_version)), "hardware": adapter.hardware,
            "rank": str(adapter.cfg.rank), "alpha": repr(float(adapter.cfg.alpha)), "sha256": _digest(tensors)}
    return save(tensors, metadata=meta)


def adapter_file_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a saved adapter file, or {} if there is none or it is unreadable."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception:  # missing, or a damaged header (safetensors raises its own types)
        return {}


def save_adapter(path: str | Path, adapter: Adapter, version: int, trunk_version: int) -> Path:
    """Write ``adapter`` atomically (temporary file, fsync, rename, fsync of the directory)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(adapter_bytes(adapter, version, trunk_version))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return path


def load_adapter(path: str | Path, policy: nn.Module, hardware: str) -> tuple[Adapter, dict[str, str]]:
    """Load and verify an adapter for ``hardware`` on ``policy``; returns it and its metadata."""
    path = Path(path)
    if not path.is_file():
        raise AdapterFileError(f"no adapter file at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for a damaged header
        raise AdapterFileError(f"{path} is not a readable adapter file: {exc}") from exc
    if meta.get("sha256") != _digest(tensors):
        raise AdapterFileError(f"{path} is corrupted: its weights do not match their recorded sha256")
    if meta.get("hardware") != hardware:
        raise AdapterFileError(f"{path} adapts hardware '{meta.get('hardware')}', not '{hardware}'")
    adapter = Adapter(policy, hardware, AdapterConfig(rank=int(meta["rank"]), alpha=float(meta["alpha"])))
    try:
        adapter.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise AdapterFileError(f"{path} does not fit this policy's layers: {exc}") from exc
    return adapter, meta
