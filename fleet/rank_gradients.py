"""Gradient averaging for data-parallel fleet learning, where ranks need not all hold a batch of every type.

Each rank samples its own shard of the replay (robots hashed to ranks, ``fleet.replay.feed.robot_shard``), so a
hardware type can have data on one rank and none on another. Every rank still joins the same all-reduce: a
parameter's gradient becomes the mean over the ranks that computed one, and stays ``None`` (Adam skips it) where
no rank did, exactly as in a single process that held all the batches. The same numbers on every rank make the
same optimiser step, so weights stay identical without ever being sent again.
"""

from __future__ import annotations

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
