"""Decisions rank 0 makes for every rank of a data-parallel fleet learner (gloo under torchrun).

Some inputs are read from files the hub keeps writing (which adapter each robot runs), and some steps run on
rank 0 alone (gate, rebase, publish). Ranks that each read the files would each see their own moment of them,
and a rank 0 that fails alone would leave the others waiting in their next collective until the process group
times out. ``from_rank0`` makes rank 0's answer every rank's answer, and rank 0's failure every rank's failure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
import torch.distributed as dist

_OK, _FAILED = 0, 1
T = TypeVar("T")


class OtherRankFailed(RuntimeError):
    """Another rank failed a step every rank takes together (that rank itself says why)."""


class RankZeroFailed(OtherRankFailed):
    """Rank 0 failed the step every rank was waiting on (rank 0 itself says why)."""


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def from_rank0(make: Callable[[], bytes], what: str) -> bytes:
    """On rank 0, ``make()``; on every rank, the bytes it returned (``make`` runs on rank 0 only). When ``make``
    raises, rank 0 re-raises it and every other rank raises RankZeroFailed naming ``what``, having been told
    through the same broadcast instead of waiting on it. Outside torchrun, just ``make()``."""
    if not _distributed():
        return make()
    main = dist.get_rank() == 0
    data, head = b"", torch.zeros(2, dtype=torch.int64)
    error: BaseException | None = None
    if main:
        try:
            data = make()
            head[1] = len(data)
        except BaseException as exc:  # noqa: BLE001 - re-raised below, once the other ranks know
            error, head[0] = exc, _FAILED
    dist.broadcast(head, src=0)
    if error is not None:
        raise error
    if int(head[0]) == _FAILED:
        raise RankZeroFailed(f"rank 0 failed {what}; its output says why")
    size = int(head[1])
    if size == 0:
        return b""
    buf = torch.frombuffer(bytearray(data), dtype=torch.uint8) if main else torch.empty(size, dtype=torch.uint8)
    dist.broadcast(buf, src=0)
    return data if main else buf.numpy().tobytes()


def on_every_rank(step: Callable[[], T], what: str) -> T:
    """``step()`` on every rank, then one all-reduce of who failed: a rank whose ``step`` raised re-raises it, and
    every other rank raises OtherRankFailed naming ``what``, instead of going on to a collective that rank never
    reaches. Outside torchrun, just ``step()``."""
    if not _distributed():
        return step()
    error: BaseException | None = None
    try:
        result = step()
    except BaseException as exc:  # noqa: BLE001 - re-raised below, once the other ranks know
        error = exc
    flag = torch.tensor([float(error is not None)])
    dist.all_reduce(flag)
    if error is not None:
        raise error
    if flag.item() > 0:
        raise OtherRankFailed(f"another rank failed {what}; its output says why")
    return result
