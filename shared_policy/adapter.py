"""Per-unit adapters: low-rank deltas on the frozen trunk and stem, a correction on the head.

A new adapter changes nothing (its up-projections start at zero), so a unit starts from the fleet
policy's behaviour and drifts only as far as its own experience pushes it.
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from shared_policy.config import AdapterConfig
from shared_policy.durable import fsync_dir


class LowRankDelta(nn.Module):
    """x -> scale * (x A^T) B^T, with B zero at start."""

    def __init__(self, in_features: int, out_features: int, rank: int, alpha: float):
        super().__init__()
        self.down = nn.Parameter(torch.randn(rank, in_features) / rank)
        self.up = nn.Parameter(torch.zeros(out_features, rank))
        self.scale = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The delta added to the frozen layer's output."""
        return F.linear(F.linear(x, self.down), self.up) * self.scale


def _linears(seq: nn.Module) -> list[nn.Linear]:
    return [m for m in seq.modules() if isinstance(m, nn.Linear)]


def _run(seq: nn.Sequential, x: torch.Tensor, deltas: nn.ModuleList) -> torch.Tensor:
    """Run ``seq`` adding delta k to the output of its k-th Linear layer."""
    k = 0
    for layer in seq:
        if isinstance(layer, nn.Linear):
            x = layer(x) + deltas[k](x)
            k += 1
        else:
            x = layer(x)
    return x


class Adapter(nn.Module):
    """One robot unit's adaptation of one hardware type's actor."""

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
                                 for m in _linears(seq))

        self.trunk_deltas = deltas(policy.trunk)
        self.stem_deltas = deltas(policy.stems[hardware].net)
        self.head_delta = LowRankDelta(policy.cfg.latent_dim, spec.num_actions, cfg.rank, cfg.alpha)
        self.head_bias = nn.Parameter(torch.zeros(spec.num_actions))  # a unit's constant offsets (calibration, sag)
        self.log_std_delta = nn.Parameter(torch.zeros(spec.num_actions))

    def action_mean(self, policy: nn.Module, obs: torch.Tensor) -> torch.Tensor:
        """The adapted actor's mean action; the policy's own weights are only read."""
        stem = policy.stems[self.hardware]
        latent = _run(stem.net, stem.normalizer(obs), self.stem_deltas)
        latent = _run(policy.trunk, latent, self.trunk_deltas)
        return policy.heads[self.hardware](latent) + self.head_delta(latent) + self.head_bias

    def num_parameters(self) -> int:
        """Trainable parameter count of this adapter."""
        return sum(p.numel() for p in self.parameters())


class MergedActor(nn.Module):
    """One hardware type's actor with a unit's adapter folded into its weights: the inference fast path.

    W + scale * up @ down per layer gives the adapted actor's exact function with the frozen actor's
    op count (about 3x fewer kernel launches than running the deltas beside each layer).
    """

    def __init__(self, policy: nn.Module, hardware: str, adapter: Adapter | None = None):
        super().__init__()
        self.stem = copy.deepcopy(policy.stems[hardware])
        self.trunk = copy.deepcopy(policy.trunk)
        self.head = copy.deepcopy(policy.heads[hardware])
        log_std = policy.log_std(hardware, adapter).detach().clone()
        with torch.no_grad():
            if adapter is not None:
                pairs = [*zip(_linears(self.stem.net), adapter.stem_deltas, strict=True),
                         *zip(_linears(self.trunk), adapter.trunk_deltas, strict=True),
                         (self.head.mean, adapter.head_delta)]
                for layer, delta in pairs:
                    layer.weight += delta.scale * (delta.up @ delta.down)
                self.head.mean.bias += adapter.head_bias
        self.register_buffer("log_std", log_std)
        self.register_buffer("std", log_std.exp())
        self.requires_grad_(False)
        self.eval()

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Mean action (B, A)."""
        return self.head(self.trunk(self.stem(obs)))

    def log_prob(self, actions: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        """Log-density (B,) of ``actions`` under the Gaussian around ``mean``."""
        z = (actions - mean) / self.std
        return (-0.5 * z * z - self.log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


class AdapterFileError(RuntimeError):
    """An adapter file is missing, corrupted, or belongs to another hardware type or trunk layout."""


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        h.update(k.encode())
        h.update(tensors[k].contiguous().numpy().tobytes())
    return h.hexdigest()


def save_adapter(path: str | Path, adapter: Adapter, version: int, trunk_version: int) -> Path:
    """Write ``adapter`` atomically (temporary file, fsync, rename, fsync of the directory)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu().clone() for k, v in adapter.state_dict().items()}
    meta = {"version": str(int(version)), "trunk_version": str(int(trunk_version)), "hardware": adapter.hardware,
            "rank": str(adapter.cfg.rank), "alpha": repr(float(adapter.cfg.alpha)), "sha256": _digest(tensors)}
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata=meta)
    with open(tmp, "rb") as f:
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
