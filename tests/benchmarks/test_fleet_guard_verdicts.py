"""The tally of fleet units' guard verdicts, worked by hand."""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # the scripts import their neighbours
from fleet_guard_verdicts import kept_then_later, relative, run_tally  # noqa: E402


def _v(version: int, kept: bool, cand: float, base: float, by_floor: bool = False) -> dict:
    return {"version": version, "kept": kept, "candidate_mean": cand, "baseline_mean": base, "by_floor": by_floor}


def test_kept_updates_measuring_below_the_tolerance_are_counted_over_rounds():
    result = {"rounds": [
        {"round": 1, "guard_verdicts": {"u": [_v(1, True, 85.0, 100.0), _v(2, False, 92.0, 100.0, by_floor=True)],
                                        "w": [_v(1, True, -110.0, -100.0)]}},  # -10% of a negative return's size
        {"round": 2, "guard_verdicts": {"u": [_v(3, True, 95.0, 100.0)]}},
        {"round": 3},  # a round without verdicts
    ]}
    t = run_tally(result, tolerance=0.10)
    assert (t["decisions"], t["kept"], t["rolled_back"], t["by_floor"]) == (4, 3, 1, 1)
    assert t["kept_measured_below"] == 1  # u's v1 (-15%); w's -10% is not below -10%; v3 -5%
    assert [(k, v["version"]) for k, v in t["by_unit"]["u"]] == [(1, 1), (1, 2), (2, 3)]
    assert math.isnan(relative(_v(1, True, 5.0, 0.0)))


def test_a_kept_updates_later_episodes_are_its_reference_returns_without_its_trials():
    v1 = _v(1, True, 120.0, 100.0) | {"candidate_returns": (110.0, 130.0), "baseline_returns": (100.0,)}
    # v1 is the reference of v2's trial: its returns then are its trial's and two later episodes (90, 100)
    v2 = _v(2, False, 50.0, 107.5) | {"baseline_version": 1, "candidate_returns": (50.0,),
                                       "baseline_returns": (110.0, 130.0, 90.0, 100.0)}
    v1 |= {"baseline_version": 0}
    never = _v(3, True, 90.0, 100.0) | {"baseline_version": 1, "candidate_returns": (90.0,), "baseline_returns": ()}
    assert kept_then_later([v1, v2, never]) == [(0.2, -0.05)]  # +20% on trial, 95 later: -5% of the same 100


def test_the_trials_episodes_are_taken_off_the_front_by_position_not_by_value():
    from fleet_guard_verdicts import after_trial

    assert after_trial([110.0, 130.0], [110.0, 130.0, 110.0, 90.0]) == [110.0, 90.0]  # a later 110 stays
    assert after_trial([110.0, 130.0], [130.0, 110.0, 90.0]) == [110.0, 90.0]  # the first trial episode aged out
    assert after_trial([110.0, 130.0], [95.0, 90.0]) == [95.0, 90.0]  # the whole trial aged out
