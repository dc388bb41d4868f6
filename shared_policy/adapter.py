"""Per-unit adapters: low-rank deltas on the frozen trunk and stem, a correction on the head.

A new adapter changes nothing (its up-projections start at zero), so a unit starts from the fleet
policy's behaviour and drifts only as far as its own experience pushes it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from shared_policy.config import AdapterConfig


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
        self.log_std_delta = nn.Parameter(torch.zeros(spec.num_actions))

    def action_mean(self, policy: nn.Module, obs: torch.Tensor) -> torch.Tensor:
        """The adapted actor's mean action; the policy's own weights are only read."""
        stem = policy.stems[self.hardware]
        latent = _run(stem.net, stem.normalizer(obs), self.stem_deltas)
        latent = _run(policy.trunk, latent, self.trunk_deltas)
        return policy.heads[self.hardware](latent) + self.head_delta(latent)

    def num_parameters(self) -> int:
        """Trainable parameter count of this adapter."""
        return sum(p.numel() for p in self.parameters())
