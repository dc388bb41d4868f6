"""The verdict agreement: which roll-out verdicts are set beside which replica changes, and what is counted."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # the scripts import their neighbours
from fleet_verdict_agreement import agreement, correlation, verdict_pairs  # noqa: E402


def _verdict(event: str, robot: str, version: int, baseline: int, candidate: float, previous: float,
             passed: bool = True) -> dict:
    return {"event": event, "robot": robot, "version": version, "baseline": baseline, "mean_candidate": candidate,
            "mean_previous": previous, "passed": passed}


def _units(**old_rebased: tuple[float, float]) -> dict:
    return {u: {"old": {"mean": o}, "rebased": {"mean": r}} for u, (o, r) in old_rebased.items()}


def test_only_verdicts_on_the_rounds_candidate_against_the_rounds_trunk_with_both_replicas_are_paired():
    result = {"rounds": [{"round": 2, "trunk": 2, "candidate": 3, "units": _units(a=(100.0, 80.0), b=(200.0, 220.0)),
                          "rollout": [
                              {"event": "published_candidate", "version": 3},
                              _verdict("canary_verdict", "a", 3, 2, 110.0, 100.0),  # robots +10%, replicas -20%
                              _verdict("unit_held_back", "b", 3, 2, 50.0, 100.0, passed=False),  # -50%, +10%
                              _verdict("unit_kept", "c", 3, 2, 1.0, 1.0),  # no replica of c
                              _verdict("unit_kept", "b", 3, 1, 1.0, 1.0),  # held on v1: no replica of its baseline
                              _verdict("unit_kept", "a", 2, 2, 1.0, 1.0),  # an older candidate's watch
                          ]}]}
    pairs = verdict_pairs(result)
    assert [(p["robot"], p["event"]) for p in pairs] == [("a", "canary_verdict"), ("b", "unit_held_back")]
    assert pairs[0]["robot_change"] == pytest.approx(0.10) and pairs[0]["replica_change"] == pytest.approx(-0.20)
    assert pairs[1]["robot_change"] == pytest.approx(-0.50) and pairs[1]["replica_change"] == pytest.approx(0.10)
    a = agreement(pairs, -0.10)
    # a's drop past -10% was passed; b's refusal was a swap the replicas put above zero: a false alarm
    assert (a["replica_drops"], a["refused_of_drops"], a["refused"], a["false_alarms"]) == (1, 0, 1, 1)
    assert a["sign_agree"] == 0.0
    assert verdict_pairs({}) == []


def test_the_correlation_and_its_interval_are_pearsons_and_fishers():
    x = [0.0, 1.0, 2.0, 3.0, 4.0]
    r, low, high = correlation(x, [2 * v + 1 for v in x])
    assert r == pytest.approx(1.0, abs=1e-5) and high == pytest.approx(1.0, abs=1e-5)
    # r = 0.8 with n = 5 pairs worked by hand: y = (1, 3, 2, 5, 4); z = atanh(0.8) = 1.0986, half = 1.96 / sqrt(2)
    r, low, high = correlation(x, [1.0, 3.0, 2.0, 5.0, 4.0])
    assert r == pytest.approx(0.8)
    assert low == pytest.approx(math.tanh(1.0986123 - 1.3859293), abs=1e-6)
    assert high == pytest.approx(math.tanh(1.0986123 + 1.3859293), abs=1e-6)
    assert all(math.isnan(v) for v in correlation([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]))  # too few pairs
    assert all(math.isnan(v) for v in correlation(x, [1.0] * 5))  # no spread
