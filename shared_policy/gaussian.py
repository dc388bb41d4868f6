"""The diagonal Gaussian of the actor: its log-density, entropy and KL, written once.

Every function takes torch tensors or numpy arrays alike (only ``*``, ``-``, ``/``, ``.sum`` and
``.shape``), so PPO, the adapter learner and the robot's numpy actor share the same arithmetic. Written
out because it runs every env step and every minibatch, where a ``torch.distributions`` object costs
more than its arithmetic.
"""

from __future__ import annotations

import math
from typing import TypeVar

import numpy as np
import torch

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)

Array = TypeVar("Array", torch.Tensor, np.ndarray)


def standard_log_prob(z: Array, log_std: Array) -> Array:
    """Log-density (...) of a diagonal Gaussian at the point whose standardised offset is ``z`` (..., A).

    A sampler that drew ``a = mean + std * z`` passes its ``z``: no division, and the exact offset.
    """
    return (z * z).sum(-1) * -0.5 - (log_std.sum() + HALF_LOG_2PI * z.shape[-1])


def log_prob(actions: Array, mean: Array, std: Array, log_std: Array) -> Array:
    """Log-density (...) of ``actions`` (..., A) under the Gaussian with ``mean`` and per-action ``std``."""
    return standard_log_prob((actions - mean) / std, log_std)


def entropy(log_std: Array) -> Array:
    """Entropy of the Gaussian, summed over actions (the std is state-independent: the same everywhere)."""
    return (log_std + (0.5 + HALF_LOG_2PI)).sum()


def gaussian_kl(mu_old: torch.Tensor, sigma_old: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """KL(old || new) of diagonal Gaussians, summed over actions: (B,)."""
    return torch.sum(torch.log(sigma / sigma_old) + (sigma_old.pow(2) + (mu_old - mu).pow(2)) / (2 * sigma.pow(2))
                     - 0.5, dim=-1)
