"""Gradient averaging for data-parallel fleet learning, where ranks need not all hold a batch of every type.

Each rank samples its own shard of the replay (robots hashed to ranks, ``fleet.replay.feed.robot_shard``), so a
hardware type can have data on one rank and none on another. Every rank still joins the same all-reduce: a
parameter's gradient becomes the mean over the ranks that computed one, and stays ``None`` (Adam skips it) where
no rank did, exactly as in a single process that held all the batches. The same numbers on every rank make the
same optimiser step, so weights stay identical without ever being sent again.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import nn


def average_present_gradients(module: nn.Module) -> None:
    """All-reduce ``module``'s gradients to their mean over the ranks that have them (no-op outside torchrun)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    params = list(module.parameters())
    present = torch.tensor([p.grad is not None for p in params], dtype=torch.float32)
    grads = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float() for p in params]
    flat = torch.cat([*grads, present])  # one collective: the gradients and who had them
    dist.all_reduce(flat)
    present = flat[-len(params):]
    offset = 0
    for p, n in zip(params, present.tolist(), strict=True):
        size = p.numel()
        if n > 0:
            p.grad = (flat[offset:offset + size] / n).view_as(p).to(p.dtype)
        else:
            p.grad = None
        offset += size


def raise_if_any_rank_nonfinite(values: dict[str, float], where: str) -> None:
    """FloatingPointError on every rank when any rank's ``values`` hold NaN or inf (one all-reduce): a rank that
    stopped alone would leave the others waiting in their next collective until the process group times out."""
    bad = sorted(k for k, v in values.items() if not math.isfinite(v))
    flag = torch.tensor([float(bool(bad))])
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(flag)
    if flag.item() > 0:
        raise FloatingPointError(f"non-finite {', '.join(bad) if bad else 'values on another rank'} at {where}")
