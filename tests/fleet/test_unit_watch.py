"""The unit watch after a promotion (fleet/unit_watch.py): each robot judged on its own returns, one the new trunk
hurts held back on what it ran, holds kept across a restart and cleared by a change made by hand."""

from __future__ import annotations

import pytest

from fleet.rollout import RolloutConfig
from fleet.rollout_log import read_steps
from fleet.unit_watch import UnitWatch, holds_path

CFG = RolloutConfig(min_episodes=2, history_episodes=3, tolerance=0.2, max_wait_s=100.0)


def _events(storage) -> list[tuple]:
    return [(s["event"], s["version"], s.get("robot")) for s in read_steps(storage)]


def test_after_a_promotion_a_robot_the_trunk_hurts_is_held_back_and_the_others_move_on(tmp_path):
    watch = UnitWatch(CFG, tmp_path)
    watch.promoted(2, 1, known=["canary", "a", "b", "new"], judged=["canary"], now=0.0)
    assert watch.wants("a", 2) == 2 and watch.wants("b", 2) == 2 and watch.served() == set()
    episodes = {"a": [(1, 10.0)] * 3 + [(2, 9.0)], "b": [(1, 10.0)] * 3 + [(2, 7.0), (2, 7.5)],
                "new": [(2, 1.0), (2, 1.0)]}  # "new" never ran v1: nothing to compare with, nothing to go back to
    assert watch.step(lambda r: episodes.get(r, []), now=1.0)  # b fails: 7.25 < 10 - 0.2 * 10
    assert watch.wants("b", 2) == 1 and watch.served() == {1}
    assert watch.wants("new", 2) == 2 and "a" not in watch.verdicts  # a: one episode on v2, not judged yet
    assert watch.verdicts["new"]["why"].startswith("no episode on its baseline")
    episodes["a"].append((2, 8.5))
    assert not watch.step(lambda r: episodes.get(r, []), now=2.0)  # a passes: 8.75 >= 8
    assert watch.wants("a", 2) == 2 and watch.version == 0  # every robot judged: the watch is over
    assert watch.holds == {"b": 1}
    assert _events(tmp_path) == [("watch_started", 2, None), ("unit_held_back", 2, "b"), ("unit_kept", 2, "new"),
                                 ("unit_kept", 2, "a"), ("watch_ended", 2, None)]
    ended = read_steps(tmp_path)[-1]
    assert ended["held"] == ["b"] and ended["unjudged"] == []


def test_holds_survive_a_restart_and_a_change_of_the_current_version_by_hand_clears_them(tmp_path):
    watch = UnitWatch(CFG, tmp_path)
    watch.promoted(2, 1, known=["a", "b"], judged=[], now=0.0)
    watch.step(lambda r: [(1, 10.0)] * 3 + [(2, 1.0)] * 2 if r == "b" else [], now=1.0)
    assert watch.holds == {"b": 1} and watch.version == 2  # a still unjudged

    again = UnitWatch(CFG, tmp_path)  # the hub restarted
    assert again.holds == {"b": 1} and again.wants("b", 2) == 1 and again.current == 2
    assert again.version == 2 and again.baselines == {"a": 1, "b": 1} and "b" in again.verdicts
    assert again.cleared(3, "v3 made current by hand")  # b's version moves: notices are due
    assert again.holds == {} and again.version == 0 and again.wants("b", 3) == 3
    assert UnitWatch(CFG, tmp_path).holds == {} and UnitWatch(CFG, tmp_path).current == 3
    steps = read_steps(tmp_path)
    assert [s["event"] for s in steps][-2:] == ["watch_ended", "holds_cleared"] and steps[-1]["robots"] == ["b"]


def test_the_next_promotion_moves_a_held_robot_forward_and_judges_it_against_the_version_it_was_held_on(tmp_path):
    watch = UnitWatch(CFG, tmp_path)
    watch.promoted(2, 1, known=["a", "b"], judged=[], now=0.0)
    watch.step(lambda r: [(1, 10.0)] * 3 + [(2, 20.0 if r == "a" else 1.0)] * 2, now=1.0)
    assert watch.holds == {"b": 1}
    watch.promoted(3, 2, known=["a", "b"], judged=[], now=5.0)
    assert watch.baselines == {"a": 2, "b": 1} and watch.holds == {} and watch.wants("b", 3) == 3
    assert read_steps(tmp_path)[-1]["released"] == ["b"]
    # b on v3 is judged against its v1 history (10), not v2 (1, what hurt it): 8.5 passes, a 15 fails vs 20
    episodes = {"a": [(1, 10.0)] * 3 + [(2, 20.0)] * 2 + [(3, 15.0)] * 2,
                "b": [(1, 10.0)] * 3 + [(2, 1.0)] * 2 + [(3, 8.5)] * 2}
    watch.step(episodes.get, now=6.0)
    assert watch.holds == {"a": 2} and watch.verdicts == {} and watch.version == 0


def test_robots_short_of_episodes_at_the_timeout_stay_on_the_new_version_and_are_named(tmp_path):
    watch = UnitWatch(CFG, tmp_path)
    watch.promoted(2, 1, known=["a", "b"], judged=[], now=0.0)
    assert not watch.step(lambda r: [(1, 10.0)] * 3 + [(2, 10.0)], now=50.0)
    assert watch.version == 2
    assert not watch.step(lambda r: [(1, 10.0)] * 3 + [(2, 10.0)], now=101.0)
    assert watch.version == 0 and watch.holds == {}
    last = read_steps(tmp_path)[-1]
    assert last["event"] == "watch_ended" and last["unjudged"] == ["a", "b"] and "timeout" in last["why"]


def test_a_damaged_holds_file_stops_the_hub_rather_than_guessing_which_robot_runs_what(tmp_path):
    holds_path(tmp_path).parent.mkdir(parents=True)
    holds_path(tmp_path).write_text('{"holds": {"b": "one"}')
    with pytest.raises(ValueError, match="unit_holds.json"):
        UnitWatch(CFG, tmp_path)
