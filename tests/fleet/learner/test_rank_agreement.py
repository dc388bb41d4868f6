"""Ranks of a data-parallel fleet learner stop together: real gloo process groups in real processes."""

from __future__ import annotations

import pytest

from fleet.rank_gradients import raise_if_any_rank_nonfinite
from tests.fleet.learner.gloo_ranks import on_two_ranks


def _nan_on_rank_1(rank: int) -> str:
    values = {"cartpole/policy_loss": float("nan") if rank == 1 else 0.5, "cartpole/value_loss": 1.0}
    try:
        raise_if_any_rank_nonfinite(values, "update 3 of round 1")
        return "went on"
    except FloatingPointError as exc:
        return str(exc)


@pytest.mark.timeout(120)
def test_a_non_finite_loss_on_one_rank_stops_every_rank(tmp_path):
    got = on_two_ranks(tmp_path, _nan_on_rank_1)
    assert got[1] == "non-finite cartpole/policy_loss at update 3 of round 1"
    assert got[0] == "non-finite values on another rank at update 3 of round 1"
