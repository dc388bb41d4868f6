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


def test_a_slow_store_shrinks_the_budget_to_its_queue_time_and_refuses_beyond_it():
    budget = CreditBudget(HubConfig(credit_bytes=8 * MIB, credit_total_bytes=256 * MIB, credit_queue_s=2.0))
    sessions = _fleet(budget, 16)
    assert sum(s.credit for s in sessions) == 128 * MIB  # 64 s of queue at 2 MB/s: far past a 10 s resend timeout
    budget.measure(committed_bytes=20 * MIB, commit_seconds=10.0)  # the store commits 2 MiB/s
    assert budget.total == 4 * MIB
    assert all(share == MIB // 4 for _, share in budget.reshare(sessions, lower_only=True))
    chunk = 135_000
    budget.take(chunk)
    sessions[0].take("c1", chunk)
    while budget.refusal(sessions[0], chunk) is None:  # a robot ignoring its credit: the budget still holds
        budget.take(chunk)
        sessions[0].take(f"c{budget.queued_bytes}", chunk)
        sessions[0].highest_credit = 1 << 40  # as if it had been granted far more on this connection
    assert budget.queued_bytes <= 4 * MIB
    assert "budget" in budget.refusal(sessions[0], chunk)
    assert budget.refusal(sessions[1], chunk) is None  # a robot with nothing queued may always move one chunk
    budget.measure(committed_bytes=20 * MIB + 1000, commit_seconds=20.0)  # too little committed to tell: kept
    assert budget.total == 4 * MIB
    budget.measure(committed_bytes=2000 * MIB, commit_seconds=20.0)  # a fast store again: the ceiling
    assert budget.total == 256 * MIB and MIN_BUDGET_BYTES <= budget.total
