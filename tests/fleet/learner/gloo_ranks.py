"""Two real gloo ranks in spawned processes, for tests of what ranks agree on."""

from __future__ import annotations

import multiprocessing as mp
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch.distributed as dist


def _rank(rank: int, init: str, body: Callable[[int], Any], out) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        try:
            out.put((rank, body(rank)))
        except Exception:  # noqa: BLE001 - reported to the test (before the barrier, which the other may miss)
            out.put((rank, traceback.format_exc()))
        dist.barrier()  # both still reach the same collective afterwards: nobody is left waiting
    finally:
        dist.destroy_process_group()


def on_two_ranks(tmp_path: Path, body: Callable[[int], Any]) -> dict[int, Any]:
    """``body(rank)`` (a module-level function) on ranks 0 and 1 of one process group; what each returned (or
    its traceback)."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    init = f"file://{tmp_path / 'rendezvous'}"
    procs = [ctx.Process(target=_rank, args=(r, init, body, out)) for r in range(2)]
    for p in procs:
        p.start()
    try:
        return dict(out.get(timeout=90) for _ in procs)
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
