"""Ranks of a data-parallel fleet learner stop together: real gloo process groups in real processes."""

from __future__ import annotations

import multiprocessing as mp
import traceback

import pytest
import torch.distributed as dist

from fleet.rank_gradients import raise_if_any_rank_nonfinite


def _rank(rank: int, init: str, out) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        values = {"cartpole/policy_loss": float("nan") if rank == 1 else 0.5, "cartpole/value_loss": 1.0}
        try:
            raise_if_any_rank_nonfinite(values, "update 3 of round 1")
            out.put((rank, "went on"))
        except FloatingPointError as exc:
            out.put((rank, str(exc)))
        dist.barrier()  # both still reach the same collective afterwards: nobody is left waiting
    except Exception:  # noqa: BLE001 - reported to the test
        out.put((rank, traceback.format_exc()))
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_a_non_finite_loss_on_one_rank_stops_every_rank(tmp_path):
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    init = f"file://{tmp_path / 'rendezvous'}"
    procs = [ctx.Process(target=_rank, args=(r, init, out)) for r in range(2)]
    for p in procs:
        p.start()
    try:
        got = dict(out.get(timeout=90) for _ in procs)
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
    assert got[1] == "non-finite cartpole/policy_loss at update 3 of round 1"
    assert got[0] == "non-finite values on another rank at update 3 of round 1"
