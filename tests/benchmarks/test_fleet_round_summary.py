"""The fleet-round benchmark's figures mean what its docstring says: worked by hand on a few units' returns."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # the scripts import their neighbours
from fleet_round_summary import EXPLORING, fleet_returns, paired, rebase_effect, set_after  # noqa: E402


def _arm(mean: float, se: float = 1.0) -> dict[str, float]:
    return {"mean": mean, "se": se, "episodes": 32}


def _round(units: dict[str, tuple[float, float, float]], promoted: bool) -> dict:
    """A round's rows from (old, naive, rebased) means per unit, ``after`` as the benchmark sets it."""
    rows = {}
    for robot, (old, naive, rebased) in units.items():
        row = {"old": _arm(old), "naive": _arm(naive), "rebased": _arm(rebased)}
        row["after"] = row["rebased"] if promoted else row["old"]
        rows[robot] = row
    return {"units": rows, "outcome": "promoted" if promoted else "rolled_back"}


def test_the_worst_unit_is_the_one_that_lost_most_of_its_own_return_not_the_most_return():
    rounds = [_round({"a": (100.0, 0, 120.0), "b": (400.0, 0, 380.0), "c": (20.0, 0, 15.0)}, promoted=True),
              _round({"a": (120.0, 0, 130.0), "b": (380.0, 0, 340.0), "c": (15.0, 0, 16.0)}, promoted=True)]
    got = fleet_returns(rounds, tolerance=0.1)
    # b lost 60 (15% of 400), c lost 4 (20% of 20): c is the worst relative to its own return
    assert got["worst_unit"] == "c" and got["worst_unit_delta"] == pytest.approx(-0.2)
    assert got["units_beyond_tolerance"] == ["b", "c"]
    assert got["fleet_mean"]["before"] == pytest.approx(520 / 3)
    assert got["fleet_mean"]["after_round_1"] == pytest.approx(515 / 3)
    assert got["mean_gain"] == pytest.approx((486 - 520) / 520)
    assert got["units"]["a"]["delta_ci95"] == pytest.approx(1.96 * 2 ** 0.5)


def test_a_unit_is_surely_beyond_the_tolerance_only_when_its_whole_interval_is():
    rounds = [_round({"a": (100.0, 0, 100.0), "b": (100.0, 0, 100.0), "c": (100.0, 0, 100.0)}, promoted=False)]
    last = {"a": 70.0, "b": 85.0, "c": 98.0}  # each unit's se is 1.0 before and after: interval +-2.77
    rounds.append(_round({r: (m, 0, m) for r, m in last.items()}, promoted=False))
    got = fleet_returns(rounds, tolerance=0.1)
    assert got["units_beyond_tolerance"] == ["a", "b"]
    assert got["units_surely_beyond"] == ["a", "b"] and got["units_surely_within"] == ["c"]
    for row in rounds[-1]["units"].values():
        row["old"]["se"] = row["after"]["se"] = 5.0  # noisier replicas: interval +-9.99
    got = fleet_returns(rounds, tolerance=0.1)
    assert got["units_surely_beyond"] == ["a"] and got["units_surely_within"] == []  # b and c unresolved


def test_a_rolled_back_round_leaves_each_unit_where_it_was():
    got = fleet_returns([_round({"a": (100.0, 10.0, 50.0)}, promoted=False)], tolerance=0.1)
    assert got["fleet_mean"]["after_last_round"] == 100.0 and got["mean_gain"] == 0.0


def test_the_exploring_figures_read_the_sampled_action_arms_and_the_default_the_mean_action_ones():
    rounds = [_round({"a": (100.0, 0, 120.0)}, promoted=True), _round({"a": (120.0, 0, 130.0)}, promoted=True)]
    for r, (old, rebased) in zip(rounds, ((80.0, 60.0), (60.0, 70.0)), strict=True):
        row = r["units"]["a"]
        row["old_explore"], row["rebased_explore"] = _arm(old), _arm(rebased)
        row["after_explore"] = row["rebased_explore"]
    assert fleet_returns(rounds, tolerance=0.1)["worst_unit_delta"] == pytest.approx(0.3)
    exploring = fleet_returns(rounds, tolerance=0.1, arms=EXPLORING)
    assert exploring["worst_unit_delta"] == pytest.approx(-0.125) and exploring["units_beyond_tolerance"] == ["a"]
    assert exploring["fleet_mean"]["after_round_1"] == 60.0


def test_after_is_the_rebased_adapter_only_for_a_unit_that_swapped_both_on_mean_actions_and_exploring():
    def row() -> dict:
        return {"old": _arm(1.0), "old_explore": _arm(2.0), "rebased": _arm(3.0), "rebased_explore": _arm(4.0)}

    swapped, held = row(), row()  # held: a promoted candidate the watch held this unit back from, or a refused one
    set_after(swapped, True)
    set_after(held, False)
    assert (swapped["after"]["mean"], swapped["after_explore"]["mean"]) == (3.0, 4.0)
    assert (held["after"]["mean"], held["after_explore"]["mean"]) == (1.0, 2.0)


def test_paired_gain_is_the_mean_difference_over_units_relative_to_the_baseline_mean():
    rows = {"a": {"new": _arm(110.0), "old": _arm(100.0)}, "b": {"new": _arm(290.0), "old": _arm(300.0)},
            "c": {"new": _arm(230.0), "old": _arm(200.0)}}
    got = paired(rows, "new", "old")
    # differences +10, -10, +30: mean 10, sd 20, t(2 dof) 4.30: half-width 4.30 * 20 / sqrt(3)
    assert got["mean_difference"] == pytest.approx(10.0)
    assert got["ci95"] == pytest.approx(4.30 * 20 / 3 ** 0.5)
    assert got["relative"] == pytest.approx(10.0 / 200.0) and got["units_better"] == 2


def test_rebasing_is_compared_only_in_rounds_whose_candidate_got_rebased_adapters():
    refused = {"units": {"a": {"old": _arm(100.0), "after": _arm(100.0)}}, "outcome": "gate_refused"}
    rounds = [_round({"a": (100.0, 60.0, 90.0)}, promoted=True), refused,
              _round({"a": (100.0, 80.0, 110.0)}, promoted=False)]
    got = rebase_effect(rounds)
    assert got["rounds"] == 2  # a rolled-back candidate was still rebased onto; a refused one was not
    assert got["per_unit"]["a"]["rebased"]["mean"] == pytest.approx(100.0)
    assert got["rebased_vs_unchanged"]["mean_difference"] == pytest.approx(30.0)
    assert got["rebased_vs_unchanged"]["relative"] == pytest.approx(30.0 / 70.0)


def test_the_other_rebase_target_is_compared_over_the_units_it_was_measured_for_a_held_unit_has_none():
    rnd = _round({"a": (100.0, 60.0, 90.0), "b": (100.0, 70.0, 95.0), "held": (50.0, 40.0, 45.0)}, promoted=True)
    rnd["units"]["a"]["other_rebase"] = _arm(80.0)
    rnd["units"]["b"]["other_rebase"] = _arm(90.0)  # "held" ran an older trunk: no other target was computed
    got = rebase_effect([rnd])
    assert got["other_rebase_vs_unchanged"]["units"] == 2
    assert got["other_rebase_vs_unchanged"]["mean_difference"] == pytest.approx(20.0)  # (20 + 20) / 2
    assert got["rebased_vs_unchanged"]["units"] == 3


def test_a_unit_held_in_a_later_round_after_an_other_rebase_arm_does_not_break_the_summary():
    first = _round({"a": (100.0, 60.0, 90.0)}, promoted=True)
    first["units"]["a"]["other_rebase"] = _arm(80.0)
    later = _round({"a": (100.0, 70.0, 95.0)}, promoted=True)  # held that round: no other target measured
    got = rebase_effect([first, later])
    assert got["per_unit"]["a"]["other_rebase"]["mean"] == pytest.approx(80.0)
    assert got["per_unit"]["a"]["rebased"]["mean"] == pytest.approx(92.5)


def test_a_unit_that_returned_nothing_before_is_neither_surely_beyond_nor_within():
    rounds = [_round({"a": (0.0, 0, 0.0), "b": (100.0, 0, 100.0)}, promoted=False),
              _round({"a": (-50.0, 0, -50.0), "b": (100.0, 0, 100.0)}, promoted=False)]
    got = fleet_returns(rounds, tolerance=0.1)
    assert got["units_surely_beyond"] == [] and got["units_surely_within"] == ["b"]  # a: no scale to judge by
