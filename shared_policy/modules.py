"""Building blocks: MLPs, per-hardware stems (obs -> latent) and heads (latent -> action distribution)."""

from __future__ import annotations

import torch
from torch import nn

from shared_policy.normalizer import RunningNormalizer

ACTIVATIONS = {"elu": nn.ELU, "relu": nn.ReLU, "tanh": nn.Tanh, "silu": nn.SiLU}


def mlp(sizes: list[int], activation: str, last_activation: bool) -> nn.Sequential:
    """Linear layers between consecutive ``sizes`` with ``activation`` between them."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"policy.activation must be one of {sorted(ACTIVATIONS)}, got '{activation}'")
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or last_activation:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class Stem(nn.Module):
    """A hardware type's observation layout -> the trunk's latent space, with its own normaliser."""

    def __init__(self, num_obs: int, latent: int, hidden: list[int], activation: str):
        super().__init__()
        self.normalizer = RunningNormalizer(num_obs)
        self.net = mlp([num_obs, *hidden, latent], activation, last_activation=True)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Normalised obs -> latent."""
        return self.net(self.normalizer(obs))


class Head(nn.Module):
    """Latent -> this hardware type's action mean; a state-independent log std per action.

    Holds the parameters only: :func:`shared_policy.actor.run_actor` is the actor's one forward pass.
    """

    def __init__(self, latent: int, num_actions: int, init_std: float):
        super().__init__()
        self.mean = nn.Linear(latent, num_actions)
        nn.init.orthogonal_(self.mean.weight, gain=0.01)
        nn.init.zeros_(self.mean.bias)
        self.log_std = nn.Parameter(torch.full((num_actions,), float(torch.log(torch.tensor(init_std)))))


class ValueHead(nn.Module):
    """Latent -> scalar value."""

    def __init__(self, latent: int):
        super().__init__()
        self.value = nn.Linear(latent, 1)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        """Value (B,)."""
        return self.value(latent).squeeze(-1)
