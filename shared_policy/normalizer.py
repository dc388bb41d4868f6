"""Running observation normaliser (Welford), kept per hardware type inside its stem."""

from __future__ import annotations

import torch
from torch import nn


class RunningNormalizer(nn.Module):
    """Normalises inputs by a running mean and variance; frozen outside ``update``."""

    def __init__(self, size: int, eps: float = 1e-2, clip: float = 10.0):
        super().__init__()
        self.eps, self.clip = eps, clip
        self.register_buffer("mean", torch.zeros(size))
        self.register_buffer("var", torch.ones(size))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(x - mean) / sqrt(var + eps), clipped."""
        return torch.clamp((x - self.mean) / torch.sqrt(self.var + self.eps), -self.clip, self.clip)

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Fold a batch (B, size) into the running statistics (parallel Welford)."""
        x = x.reshape(-1, x.shape[-1]).to(self.mean.dtype)
        n = x.shape[0]
        if n == 0:
            return
        batch_mean = x.mean(0)
        batch_var = x.var(0, unbiased=False)
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean += delta * (n / total).to(self.mean.dtype)
        m2 = self.var * self.count.to(self.var.dtype) + batch_var * n + delta.pow(2) * (self.count * n / total).to(
            self.var.dtype)
        self.var.copy_(m2 / total.to(self.var.dtype))
        self.count.copy_(total)
