"""The hub's one credit budget for all robots (fleet/hub_credit.py): shared among those connected, and shrunk to
what a slow store commits in ``credit_queue_s``, so the queue never outgrows the robots' resend timeout."""

from __future__ import annotations

from fleet.config import HubConfig
from fleet.hub_credit import MIN_BUDGET_BYTES, RESHARE_FACTOR, CreditBudget
from fleet.hub_session import RobotSession

MIB = 1 << 20


def _fleet(budget: CreditBudget, n: int) -> list[RobotSession]:
    sessions = [RobotSession(f"r{i}") for i in range(n)]
    for i, s in enumerate(sessions):
        s.connect(b"route-%d" % i, 0, 0.0)
        s.grant(budget.share(i + 1))  # each gets the share of the fleet as it was when it said HELLO
    return sessions


def test_a_fleet_shares_the_total_and_the_early_robots_are_lowered_to_their_share():
    budget = CreditBudget(HubConfig(credit_bytes=8 * MIB, credit_total_bytes=64 * MIB, credit_queue_s=0))
    sessions = _fleet(budget, 16)
    assert sessions[0].credit == 8 * MIB and sessions[-1].credit == 4 * MIB
    over = {s.robot_id for s in sessions if s.credit > RESHARE_FACTOR * 4 * MIB}
    moved = budget.reshare(sessions, lower_only=True)
    assert {s.robot_id for s, _ in moved} == over and {f"r{i}" for i in range(8)} <= over  # 8 MiB when they came
    assert all(share == 4 * MIB for _, share in moved)
    assert all(s.credit <= RESHARE_FACTOR * 4 * MIB for s in sessions)  # near enough: not one CREDIT per HELLO
    assert budget.reshare(sessions, lower_only=True) == []


def test_a_slow_store_shrinks_the_shares_to_its_queue_time():
    budget = CreditBudget(HubConfig(credit_bytes=8 * MIB, credit_total_bytes=256 * MIB, credit_queue_s=2.0))
    sessions = _fleet(budget, 16)
    assert sum(s.credit for s in sessions) == 128 * MIB  # 64 s of queue at 2 MiB/s: far past a 10 s resend timeout
    budget.measure(committed_bytes=20 * MIB, commit_seconds=10.0)  # the store commits 2 MiB/s
    assert budget.total == 4 * MIB
    moved = budget.reshare(sessions, lower_only=True)
    assert len(moved) == 16 and all(share == MIB // 4 for _, share in moved)
    assert sum(s.credit for s in sessions) == 4 * MIB  # robots that follow their credit queue 2 s at most
    budget.measure(committed_bytes=20 * MIB + 1000, commit_seconds=20.0)  # too little committed to tell: kept
    assert budget.total == 4 * MIB
    budget.measure(committed_bytes=4000 * MIB, commit_seconds=21.0)  # a fast store again: back to the ceiling
    assert budget.total == 256 * MIB
    assert {share for _, share in budget.reshare(sessions, lower_only=False)} == {8 * MIB}


def test_past_the_total_only_a_robot_with_nothing_queued_may_move_a_chunk():
    budget = CreditBudget(HubConfig(credit_bytes=8 * MIB, credit_total_bytes=4 * MIB, credit_queue_s=2.0))
    greedy, other = _fleet(budget, 2)
    greedy.highest_credit = 1 << 40  # as if it had been granted far more on this connection: only the total holds
    chunk = 135_000
    while budget.refusal(greedy, chunk) is None:
        budget.take(chunk)
        greedy.take(f"c{budget.queued_bytes}", chunk)
    assert budget.queued_bytes <= 4 * MIB and "budget" in budget.refusal(greedy, chunk)
    assert budget.refusal(other, chunk) is None  # nothing queued: one chunk always moves, so no robot starves
    budget.measure(committed_bytes=2 * MIB, commit_seconds=10.0)  # a slow store shrinks the shares ...
    assert budget.total == MIN_BUDGET_BYTES
    budget.release(chunk)
    assert budget.refusal(greedy, chunk) is None  # ... not the hard bound: chunks sent under an old credit are taken
