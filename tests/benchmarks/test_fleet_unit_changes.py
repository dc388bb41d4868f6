"""The split of a fleet unit's change into trunk swaps and its own on-robot learning, worked by hand."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # the scripts import their neighbours
from fleet_unit_changes import beside_exploring, set_against, tally, unit_parts  # noqa: E402


def _round(**old_after: tuple[float, float]) -> dict:
    return {"units": {u: {"old": {"mean": o}, "after": {"mean": a}} for u, (o, a) in old_after.items()}}


def test_a_units_change_splits_exactly_into_its_swaps_and_its_learning_between_them():
    # u: before 100; round 1 swap +20 (120); learning in round 2 -30 (90); round 2 refused (no swap); learning in
    # round 3 -10 (80); round 3 swap +5 (85): change -15% = swaps +25% + learning -40%
    # w: before 200, a swap of -40 in round 1 and nothing else: -20%, all swaps
    result = {"rounds": [_round(u=(100.0, 120.0), w=(200.0, 160.0), x=(50.0, 50.0)),
                         _round(u=(90.0, 90.0), w=(160.0, 160.0)),  # x left out: missing from a round
                         _round(u=(80.0, 85.0), w=(160.0, 160.0), x=(50.0, 50.0))]}
    parts = unit_parts(result)
    assert sorted(parts) == ["u", "w"]
    u, w = parts["u"], parts["w"]
    assert u["change"] == pytest.approx(-0.15) and u["swaps"] == pytest.approx(0.25)
    assert u["on_robot"] == pytest.approx(-0.40) and u["on_robot_by_round"] == pytest.approx([-0.30, -0.10])
    assert u["swaps"] + u["on_robot"] == pytest.approx(u["change"])
    assert w["change"] == pytest.approx(-0.20) and w["swaps"] == pytest.approx(-0.20) and w["on_robot"] == 0.0
    t = tally(list(parts.values()), -0.10)
    assert (t["units"], t["beyond"], t["beyond_on_robot"], t["beyond_swaps"]) == (2, 2, 1, 1)
    # single steps past -10% of before: u's -30% learning; w's -20% swap (u's -10% is not below)
    assert (t["on_robot_steps"], t["on_robot_losses"], t["swap_losses"]) == (4, 1, 1)
    assert t["swaps_mean"] == pytest.approx((0.25 - 0.20) / 2) and t["on_robot_mean"] == pytest.approx(-0.20)
    assert unit_parts({}) == {}


def test_units_measured_both_ways_are_set_side_by_side_each_split_from_its_own_arms():
    def row(old: float, after: float, old_x: float, after_x: float) -> dict:
        return {"old": {"mean": old}, "after": {"mean": after}, "old_explore": {"mean": old_x},
                "after_explore": {"mean": after_x}}

    # u: mean actions 100 -> 80 (-20%), exploring 50 -> 48 (-4%); v: 100 -> 100, exploring 50 -> 40 (-20%)
    # w has no exploring arms (a run from before they were measured): left out
    result = {"rounds": [{"units": {"u": row(100.0, 100.0, 50.0, 50.0), "v": row(100.0, 100.0, 50.0, 50.0),
                                    "w": {"old": {"mean": 1.0}, "after": {"mean": 1.0}}}},
                         {"units": {"u": row(90.0, 80.0, 49.0, 48.0), "v": row(100.0, 100.0, 45.0, 40.0),
                                    "w": {"old": {"mean": 1.0}, "after": {"mean": 1.0}}}}]}
    got = beside_exploring(result, -0.10)
    assert sorted(got) == ["u", "v"]
    u, v = got["u"], got["v"]
    assert u["mean_actions"]["change"] == pytest.approx(-0.20) and u["exploring"]["change"] == pytest.approx(-0.04)
    assert u["mean_actions"]["on_robot"] == pytest.approx(-0.10) and u["exploring"]["swaps"] == pytest.approx(-0.02)
    assert (u["beyond_mean_actions"], u["beyond_exploring"]) == (True, False)
    assert (v["beyond_mean_actions"], v["beyond_exploring"]) == (False, True)


def test_a_unit_surely_beyond_the_tolerance_has_its_whole_95_percent_interval_past_it():
    def arm(mean: float, se: float) -> dict:
        return {"mean": mean, "se": se}

    def rnd(**units: tuple[float, float]) -> dict:
        return {"units": {u: {"old": arm(m, se), "after": arm(m, se)} for u, (m, se) in units.items()}}

    # before 100 (se 1) for all; after: a 70 (se 1): -30% +-2.8%, surely beyond; b 88 (se 5): -12% +-10%, unresolved;
    # c 99 (se 1): -1% +-2.8%, surely within; d without a recorded se: neither
    first = rnd(a=(100.0, 1.0), b=(100.0, 1.0), c=(100.0, 1.0))
    first["units"]["d"] = {"old": {"mean": 100.0}, "after": {"mean": 100.0}}
    last = rnd(a=(70.0, 1.0), b=(88.0, 5.0), c=(99.0, 1.0))
    last["units"]["d"] = {"old": {"mean": 50.0}, "after": {"mean": 50.0}}
    parts = unit_parts({"rounds": [first, last]})
    assert parts["b"]["change_ci95"] == pytest.approx(1.96 * 26 ** 0.5 / 100)
    t = tally(list(parts.values()), -0.10)
    assert (t["beyond"], t["surely_beyond"], t["surely_within"]) == (3, 1, 1)


def test_two_sets_of_runs_are_compared_run_by_run_with_a_welch_interval():
    def run(*changes: float) -> dict:  # one unit per change, all learned on-robot (no swaps)
        return {f"u{i}": {"change": c, "change_ci95": 0.01, "on_robot": c, "swaps": 0.0, "on_robot_by_round": [c],
                          "swap_by_round": [0.0]} for i, c in enumerate(changes)}

    new = {"a": run(0.0, -0.20), "b": run(0.10, 0.0)}  # run means -0.10, +0.05; 1 unit beyond -10% (surely)
    old = {"c": run(-0.30, -0.30), "d": run(-0.20, 0.0), "e": run(0.0, 0.0)}  # -0.30, -0.10, 0; 3 beyond
    got = set_against(new, old, -0.10)
    assert got["change"]["runs"] == pytest.approx(-0.025) and got["change"]["against"] == pytest.approx(-0.40 / 3)
    assert got["change"]["difference"] == pytest.approx(-0.025 + 0.40 / 3)
    # Welch: var(-0.10, 0.05) / 2 + var(-0.30, -0.10, 0) / 3, t of the smaller sample (2 runs: 12.71)
    se = (np.var([-0.10, 0.05], ddof=1) / 2 + np.var([-0.30, -0.10, 0.0], ddof=1) / 3) ** 0.5
    lo, hi = got["change"]["interval"]
    assert (hi - lo) / 2 == pytest.approx(12.71 * se)
    assert got["beyond"]["runs"] == 0.5 and got["beyond"]["against"] == 1.0
    assert got["surely_beyond"]["difference"] == pytest.approx(0.5 - 1.0)


def test_runs_of_the_same_configuration_in_both_sets_are_also_compared_paired():
    def run(change: float) -> dict:
        return {"u": {"change": change, "change_ci95": 0.01, "on_robot": change, "swaps": 0.0,
                      "on_robot_by_round": [change], "swap_by_round": [0.0]}}

    # two configurations far apart, each 0.10 better with the change: paired, the spread between them drops out
    new = {"c1 seed 0 pretrain seed 1": run(0.60), "c1 seed 0 pretrain seed 2": run(-0.20)}
    old = {"c0 seed 0 pretrain seed 1": run(0.50), "c0 seed 0 pretrain seed 2": run(-0.30),
           "c0 seed 0 pretrain seed 3": run(0.0)}  # no partner: left out of the pairing
    got = set_against(new, old, -0.10)["change"]
    assert got["paired"]["configurations"] == 2
    assert got["paired"]["difference"] == pytest.approx(0.10)
    assert got["paired"]["interval"] == pytest.approx([0.10, 0.10])  # every pair differs by exactly 0.10
    lo, hi = got["interval"]
    assert lo < 0 < hi  # unpaired, the configurations' spread hides it


def test_own_learning_by_type_pairs_each_units_two_measures():
    from fleet_unit_changes import own_learning_by_type

    def unit(m: float, e: float) -> dict:
        return {"mean_actions": {"on_robot": m}, "exploring": {"on_robot": e}}

    runs = {"a": {"cartpole_pivot-304": unit(-0.2, 0.1), "cartpole-300": unit(0.05, 0.05)},
            "b": {"cartpole_pivot-1304": unit(0.0, 0.1)}}
    got = own_learning_by_type(runs)
    assert sorted(got) == ["cartpole", "cartpole_pivot"]
    p = got["cartpole_pivot"]
    assert p["units"] == 2 and p["mean_actions"] == pytest.approx(-0.1) and p["exploring"] == pytest.approx(0.1)
    assert p["difference"] == pytest.approx(0.2) and got["cartpole"]["difference"] == pytest.approx(0.0)
