"""The verdict agreement: which roll-out verdicts are set beside which replica changes, and what is counted."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # the scripts import their neighbours
import fleet_verdict_agreement  # noqa: E402
from fleet_verdict_agreement import SWAP_EXPLORING, agreement, correlation, measure, refused, verdict_pairs  # noqa: E402


def _verdict(event: str, robot: str, version: int, baseline: int, candidate: float, previous: float | None,
             passed: bool = True) -> dict:
    means = {"mean_candidate": candidate, "mean_previous": previous} if previous is not None else {}
    return {"event": event, "robot": robot, "version": version, "baseline": baseline, "passed": passed,
            "tolerance": 0.25, **means}


def _units(**old_rebased: tuple[float, float]) -> dict:
    return {u: {"old": {"mean": o}, "rebased": {"mean": r}} for u, (o, r) in old_rebased.items()}


def test_only_verdicts_on_the_rounds_candidate_against_the_rounds_trunk_with_both_replicas_are_paired():
    units = _units(a=(100.0, 80.0), b=(200.0, 220.0), d=(100.0, 70.0), e=(100.0, 100.0))
    units["f"] = {"old": {"mean": 100.0}}  # a round the gate refused: no rebased arm
    result = {"rounds": [{"round": 2, "trunk": 2, "candidate": 3, "units": units, "rollout": [
        {"event": "published_candidate", "version": 3},
        _verdict("canary_verdict", "a", 3, 2, 110.0, 100.0),  # robots +10%, replicas -20%
        _verdict("unit_held_back", "b", 3, 2, 50.0, 100.0, passed=False),  # robots -50%, replicas +10%
        _verdict("unit_kept", "d", 3, 2, 80.0, 100.0),  # robots -20% (within the hub's 0.25), replicas -30%
        _verdict("unit_kept", "e", 3, 2, 1.0, None, passed=False),  # no episode on its baseline: kept unjudged
        _verdict("unit_kept", "f", 3, 2, 1.0, 1.0),  # no rebased replica
        _verdict("unit_kept", "c", 3, 2, 1.0, 1.0),  # no replica of c
        _verdict("unit_kept", "b", 3, 1, 1.0, 1.0),  # held on v1: no replica of its baseline
        _verdict("unit_kept", "a", 2, 2, 1.0, 1.0),  # an older candidate's watch
    ]}]}
    pairs = verdict_pairs(result)
    assert [(p["robot"], p["event"]) for p in pairs] == [("a", "canary_verdict"), ("b", "unit_held_back"),
                                                          ("d", "unit_kept")]
    assert pairs[0]["robot_change"] == pytest.approx(0.10) and pairs[0]["replica_change"] == pytest.approx(-0.20)
    assert pairs[1]["robot_change"] == pytest.approx(-0.50) and pairs[1]["replica_change"] == pytest.approx(0.10)
    assert [p["refused"] for p in pairs] == [False, True, False]
    a = agreement(pairs, -0.10)
    # two drops past -10% (a, d): the robots saw d's, the hub (0.25) refused neither; b's refusal was a swap the
    # replicas put above zero: a false alarm
    assert (a["replica_drops"], a["robots_saw_of_drops"], a["refused_of_drops"]) == (2, 1, 0)
    assert (a["robots_saw"], a["refused"], a["false_alarms"], a["hub_tolerances"]) == (2, 1, 1, [0.25])
    assert a["sign_agree"] == pytest.approx(1 / 3)
    assert verdict_pairs({}) == []


def test_exploring_arms_pair_each_verdict_with_the_replicas_sampled_actions_and_skip_units_without_them():
    units = {"a": {"old": {"mean": 100.0}, "rebased": {"mean": 80.0},
                   "old_explore": {"mean": 50.0}, "rebased_explore": {"mean": 60.0}},
             "b": {"old": {"mean": 100.0}, "rebased": {"mean": 90.0}}}  # a run from before the exploring arms
    result = {"rounds": [{"round": 1, "trunk": 1, "candidate": 2, "units": units, "rollout": [
        _verdict("canary_verdict", "a", 2, 1, 110.0, 100.0), _verdict("unit_kept", "b", 2, 1, 90.0, 100.0)]}]}
    assert [p["replica_change"] for p in verdict_pairs(result)] == pytest.approx([-0.20, -0.10])
    exploring = verdict_pairs(result, SWAP_EXPLORING)
    assert [p["robot"] for p in exploring] == ["a"]
    assert exploring[0]["replica_change"] == pytest.approx(0.20)  # (60 - 50) / 50, not the mean actions' -20%


def test_exploring_reads_the_sampled_action_arms_into_its_own_result():
    assert measure(True) == (("old_explore", "rebased_explore"), "fleet_verdict_agreement_exploring")
    assert measure(False) == (("old", "rebased"), "fleet_verdict_agreement")


def test_main_with_exploring_writes_its_own_summary_line_from_the_sampled_action_arms(tmp_path, monkeypatch):
    units = {u: {"old": {"mean": 100.0}, "rebased": {"mean": 100.0 + d},
                 "old_explore": {"mean": 50.0}, "rebased_explore": {"mean": 50.0 - d}} for u, d in
             (("a", 10.0), ("b", 20.0), ("c", 30.0), ("d", 40.0))}
    result = {"rounds": [{"round": 1, "trunk": 1, "candidate": 2, "units": units, "rollout": [
        _verdict("unit_kept", u, 2, 1, 100.0 - d, 100.0) for u, d in (("a", 1), ("b", 2), ("c", 3), ("d", 4))]}]}
    monkeypatch.setattr(fleet_verdict_agreement, "named_runs", lambda lengths, commits: [("run x", result)])
    out = tmp_path / "agreement.json"
    monkeypatch.setattr(sys, "argv", ["fleet_verdict_agreement.py", "--exploring", "--out", str(out)])
    fleet_verdict_agreement.main()
    record = json.loads(out.read_text())
    assert record["summary_line"].startswith("fleet_verdict_agreement_exploring runs=1 verdicts=4 corr=1.00")
    assert record["arms"] == ["old_explore", "rebased_explore"]  # on mean actions the changes anti-correlate


def test_a_failed_canary_is_a_refusal_and_a_kept_unit_never_is():
    assert refused({"event": "canary_verdict", "passed": False})
    assert not refused({"event": "canary_verdict", "passed": True})
    assert refused({"event": "unit_held_back", "passed": False})
    assert not refused({"event": "unit_kept", "passed": False})


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
