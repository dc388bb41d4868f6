"""What rank 0 decides is every rank's decision, and rank 0's failure every rank's: real gloo process groups in
real processes (the fleet learner reads the robots' adapters and releases its candidate this way)."""

from __future__ import annotations

import pytest

from fleet.rank_broadcast import OtherRankFailed, RankZeroFailed, from_rank0, on_every_rank
from tests.fleet.learner.gloo_ranks import on_two_ranks

BIG = bytes(range(256)) * 4096  # 1 MiB, every byte value


def _answer(rank: int) -> bytes:
    if rank != 0:
        raise AssertionError("make ran on a rank other than 0")
    return BIG


def _fail(rank: int) -> bytes:
    raise OSError(28, f"No space left on device (rank {rank})")


def _three_steps(rank: int) -> list[tuple]:
    got: list[tuple] = []
    for make in (lambda: _answer(rank)), (lambda: b""), (lambda: _fail(rank)):
        try:
            data = from_rank0(make, "the test step")
            got.append(("bytes", len(data), data == BIG))
        except (OSError, RankZeroFailed) as exc:
            got.append((type(exc).__name__, str(exc)))
    return got


@pytest.mark.timeout(120)
def test_every_rank_gets_rank_0s_answer_and_rank_0s_failure_stops_every_rank(tmp_path):
    got = on_two_ranks(tmp_path, _three_steps)
    assert got[0][:2] == got[1][:2] == [("bytes", len(BIG), True), ("bytes", 0, False)], got
    assert got[0][2] == ("OSError", "[Errno 28] No space left on device (rank 0)")
    assert got[1][2] == ("RankZeroFailed", "rank 0 failed the test step; its output says why")


def test_outside_torchrun_the_answer_is_just_made():
    assert from_rank0(lambda: b"abc", "a step") == b"abc"
    with pytest.raises(OSError):
        from_rank0(lambda: _fail(0), "a step")


def _rank_1_fails(rank: int) -> tuple:
    def load() -> int:
        if rank == 1:
            raise FileNotFoundError(f"rebased adapters not found (rank {rank})")
        return 7

    try:
        return ("value", on_every_rank(load, "loading the adapters"))
    except (FileNotFoundError, OtherRankFailed) as exc:
        return (type(exc).__name__, str(exc))


@pytest.mark.timeout(120)
def test_a_step_every_rank_takes_that_fails_on_one_rank_stops_every_rank(tmp_path):
    got = on_two_ranks(tmp_path, _rank_1_fails)  # both then reach a barrier: nobody waits on rank 1
    assert got[1] == ("FileNotFoundError", "rebased adapters not found (rank 1)")
    assert got[0] == ("OtherRankFailed", "another rank failed loading the adapters; its output says why")
    assert on_every_rank(lambda: 3, "a step") == 3  # outside torchrun: just the step
