"""The unit watch after a promotion (fleet/unit_watch.py): each robot judged on its own returns, one the new trunk
hurts held back on what it ran, holds kept across a restart and cleared by a change made by hand; the roll-out
log steps it follows (fleet/rollout_log.py ``CurrentSteps``)."""

from __future__ import annotations

import pytest

from fleet.rollout import RolloutConfig
from fleet.rollout_log import CurrentSteps, append_step, log_path, read_steps
from fleet.unit_watch import UnitWatch, holds_path

CFG = RolloutConfig(min_episodes=2, history_episodes=3, tolerance=0.2, max_wait_s=100.0)


class Log:
    """Steps that set the current version, as ``CurrentSteps`` hands them to the hub (each at a later time)."""

    def __init__(self) -> None:
        self.time = 0.0

    def step(self, event: str, version: int, by: str = "hand", **fields) -> dict:
        self.time += 100
        return {"event": event, "version": version, "by": by, "time": self.time, **fields}

    def promoted(self, version: int, previous: int, canaries: tuple[str, ...] = ()) -> dict:
        return self.step("promoted", version, "hub", previous=previous, canaries=list(canaries))


def _started(tmp_path) -> tuple[UnitWatch, Log]:
    watch, steps = UnitWatch(CFG, tmp_path), Log()
    published = steps.step("published", 1)
    watch.start_at(published)  # the first start: what the log holds so far is done
    assert not watch.follow(published, known=[])
    return watch, steps


def _events(storage) -> list[tuple]:
    return [(s["event"], s["version"], s.get("robot")) for s in read_steps(storage)]


def test_after_a_promotion_a_robot_the_trunk_hurts_is_held_back_and_the_others_move_on(tmp_path):
    watch, steps = _started(tmp_path)
    watch.follow(steps.promoted(2, 1, canaries=("canary",)), known=["canary", "a", "b", "new"], now=0.0)
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
    watch, steps = _started(tmp_path)
    watch.follow(steps.promoted(2, 1), known=["a", "b"], now=0.0)
    watch.step(lambda r: [(1, 10.0)] * 3 + [(2, 1.0)] * 2 if r == "b" else [], now=1.0)
    assert watch.holds == {"b": 1} and watch.version == 2  # a still unjudged

    again = UnitWatch(CFG, tmp_path)  # the hub restarted
    assert again.holds == {"b": 1} and again.wants("b", 2) == 1 and again.served() == {1}
    assert again.version == 2 and again.baselines == {"a": 1, "b": 1} and "b" in again.verdicts
    assert again.follow(steps.step("rollback", 2), known=["a", "b"])  # to the version already current: b moves
    assert again.holds == {} and again.version == 0 and again.wants("b", 2) == 2
    assert UnitWatch(CFG, tmp_path).holds == {}
    steps_logged = read_steps(tmp_path)
    assert [s["event"] for s in steps_logged][-2:] == ["watch_ended", "holds_cleared"]
    assert steps_logged[-1]["robots"] == ["b"] and steps_logged[-1]["why"] == "rollback by hand"


def test_a_promotion_the_hub_did_not_act_on_before_it_died_starts_the_watch_after_the_restart(tmp_path):
    watch, steps = _started(tmp_path)
    promoted = steps.promoted(2, 1)  # logged; the hub was killed before its next poll
    again = UnitWatch(CFG, tmp_path)
    again.follow(promoted, known=["a"], now=0.0)
    assert again.version == 2 and again.baselines == {"a": 1}  # watched, not mistaken for a change by hand
    assert not again.follow(promoted, known=["a"], now=1.0)  # each step is acted on once
    assert [s["event"] for s in read_steps(tmp_path)] == ["watch_started"]


def test_the_next_promotion_moves_a_held_robot_forward_and_judges_it_against_the_version_it_was_held_on(tmp_path):
    watch, steps = _started(tmp_path)
    watch.follow(steps.promoted(2, 1), known=["a", "b"], now=0.0)
    watch.step(lambda r: [(1, 10.0)] * 3 + [(2, 20.0 if r == "a" else 1.0)] * 2, now=1.0)
    assert watch.holds == {"b": 1}
    watch.follow(steps.promoted(3, 2), known=["a"], now=5.0)  # b is not connected now: watched all the same
    assert watch.baselines == {"a": 2, "b": 1} and watch.holds == {} and watch.wants("b", 3) == 3
    assert read_steps(tmp_path)[-1]["released"] == ["b"]
    # b on v3 is judged against its v1 history (10), not v2 (1, what hurt it): 8.5 passes, a 15 fails vs 20
    episodes = {"a": [(1, 10.0)] * 3 + [(2, 20.0)] * 2 + [(3, 15.0)] * 2,
                "b": [(1, 10.0)] * 3 + [(2, 1.0)] * 2 + [(3, 8.5)] * 2}
    watch.step(episodes.get, now=6.0)
    assert watch.holds == {"a": 2} and watch.verdicts == {} and watch.version == 0


def test_a_robot_that_connects_during_the_watch_is_judged_and_a_canary_it_has_not_judged_keeps_its_baseline(tmp_path):
    watch, steps = _started(tmp_path)
    watch.follow(steps.promoted(2, 1, canaries=("c",)), known=["a"], now=0.0)
    assert watch.baseline("a", 2) == 1  # a canary of the next trial is compared with v1, not with unvetted v2
    episodes = {"late": [(1, 10.0)] * 3 + [(2, 2.0)] * 2}
    assert watch.step(lambda r: episodes.get(r, []), known=["a", "c", "late"], now=1.0)  # late: held back
    assert watch.holds == {"late": 1} and "c" not in watch.baselines  # the canary was judged by its trial
    watch.follow(steps.promoted(3, 2), known=["a", "late"], now=2.0)  # a was never judged on v2
    assert watch.baselines == {"a": 1, "late": 1}


def test_robots_short_of_episodes_at_the_timeout_stay_on_the_new_version_and_are_named(tmp_path):
    watch, steps = _started(tmp_path)
    watch.follow(steps.promoted(2, 1), known=["a", "b"], now=0.0)
    assert not watch.step(lambda r: [(1, 10.0)] * 3 + [(2, 10.0)], now=50.0)
    assert watch.version == 2
    assert not watch.step(lambda r: [(1, 10.0)] * 3 + [(2, 10.0)], now=101.0)
    assert watch.version == 0 and watch.holds == {}
    last = read_steps(tmp_path)[-1]
    assert last["event"] == "watch_ended" and last["unjudged"] == ["a", "b"] and "timeout" in last["why"]


def test_a_failed_write_leaves_no_hold_only_in_memory_and_the_verdict_comes_again(tmp_path):
    watch, steps = _started(tmp_path)
    watch.follow(steps.promoted(2, 1), known=["a"], now=0.0)
    saved = holds_path(tmp_path).read_bytes()
    holds_path(tmp_path).unlink()
    holds_path(tmp_path).mkdir()  # the state file cannot be replaced: every save fails with an OSError
    hurt = [(1, 10.0)] * 3 + [(2, 1.0)] * 2
    with pytest.raises(OSError):
        watch.step(lambda r: hurt, now=1.0)
    assert watch.holds == {} and watch.verdicts == {} and watch.version == 2  # undone, not half-done
    holds_path(tmp_path).rmdir()
    holds_path(tmp_path).write_bytes(saved)
    assert watch.step(lambda r: hurt, now=2.0)
    assert UnitWatch(CFG, tmp_path).holds == {"a": 1}
    assert [e for e in _events(tmp_path) if e[0] == "unit_held_back"] == [("unit_held_back", 2, "a")]


def test_a_damaged_holds_file_stops_the_hub_rather_than_guessing_which_robot_runs_what(tmp_path):
    holds_path(tmp_path).parent.mkdir(parents=True)
    holds_path(tmp_path).write_text('{"holds": {"b": "one"}')
    with pytest.raises(ValueError, match="unit_holds.json"):
        UnitWatch(CFG, tmp_path)


def test_current_steps_reads_what_was_appended_and_waits_for_a_torn_line(tmp_path):
    steps = CurrentSteps(tmp_path)
    assert steps.last() is None
    append_step(tmp_path, "published", "hand", 1)
    append_step(tmp_path, "published_candidate", "hand", 2)  # a candidate does not set CURRENT
    first = steps.last()
    assert first is not None and first["version"] == 1 and first["event"] == "published"
    with open(log_path(tmp_path), "a") as f:
        f.write('{"event": "rollback", "version": 1')  # a writer mid-append
    assert steps.last() == first
    with open(log_path(tmp_path), "a") as f:
        f.write(', "by": "hand", "time": 5.0}\n')
    again = steps.last()
    assert again["event"] == "rollback" and again["version"] == 1  # the same version again: a new step


def test_on_the_first_start_the_logged_past_is_done_and_the_first_promotion_after_it_is_watched(tmp_path):
    watch, steps = UnitWatch(CFG, tmp_path), Log()
    watch.start_at(None)  # v1 was published without a logged step (TrunkStore.publish): the log is empty
    assert not watch.follow(steps.promoted(2, 1), known=["a"], now=0.0)
    assert watch.version == 2 and watch.baselines == {"a": 1}
    old, before = UnitWatch(CFG, tmp_path / "other"), steps.promoted(3, 2)
    old.start_at(before)  # promoted before a hub ever ran on this storage dir: not watched now
    assert not old.follow(before, known=["a"]) and old.version == 0


def test_a_step_appended_after_a_torn_line_is_read_whole(tmp_path):
    append_step(tmp_path, "published", "hand", 1)
    with open(log_path(tmp_path), "a") as f:
        f.write('{"event": "rollback", "vers')  # a writer killed mid-line
    append_step(tmp_path, "rollback", "hand", 1)
    last = CurrentSteps(tmp_path).last()
    assert last is not None and last["event"] == "rollback" and [s["event"] for s in read_steps(tmp_path)] == [
        "published", "rollback"]


def test_a_hold_whose_log_step_cannot_be_written_still_moves_the_robot_and_the_step_follows(tmp_path):
    watch, steps = _started(tmp_path)
    watch.follow(steps.promoted(2, 1), known=["a"], now=0.0)
    kept = log_path(tmp_path).read_bytes()
    log_path(tmp_path).unlink()
    log_path(tmp_path).mkdir()  # the roll-out log cannot be appended to; the state file can be saved
    assert watch.step(lambda r: [(1, 10.0)] * 3 + [(2, 1.0)] * 2, now=1.0)  # held: the hub tells the robot now
    assert UnitWatch(CFG, tmp_path).holds == {"a": 1}
    log_path(tmp_path).rmdir()
    log_path(tmp_path).write_bytes(kept)
    watch.step(lambda r: [], now=2.0)
    assert [e[0] for e in _events(tmp_path)][-2:] == ["unit_held_back", "watch_ended"]


def test_a_logged_step_whose_version_is_not_a_whole_number_is_skipped_not_followed(tmp_path):
    append_step(tmp_path, "published", "hand", 1)
    with open(log_path(tmp_path), "a") as f:  # hand-edited or foreign lines: int() on them would stop the hub
        f.write('{"event": "rollback", "version": "two", "by": "hand", "time": 1.0}\n')
        f.write('{"event": "rollback", "version": 0, "by": "hand", "time": 2.0}\n')
        f.write('{"event": "promoted", "version": 3, "previous": "x", "by": "hub", "time": 3.0}\n')
        f.write('{"event": "rollback", "version": true, "by": "hand", "time": 4.0}\n')
        f.write('{"event": "promoted", "version": 3, "previous": 1, "canaries": 5, "by": "hub", "time": 5.0}\n')
    last = CurrentSteps(tmp_path).last()
    assert last is not None and last["event"] == "published" and last["version"] == 1


def test_a_log_replaced_or_cut_shorter_is_read_again_from_its_start(tmp_path):
    steps = CurrentSteps(tmp_path)
    append_step(tmp_path, "published", "hand", 1)
    append_step(tmp_path, "published", "hand", 2)
    assert steps.last()["version"] == 2
    log_path(tmp_path).write_text("")  # truncated in place: the same inode, shorter than what was read
    append_step(tmp_path, "rollback", "hand", 1)
    assert steps.last()["event"] == "rollback"
    fresh = log_path(tmp_path).with_suffix(".new")
    fresh.write_text('{"event": "published", "version": 7, "by": "hand", "time": 9.0}\n')
    fresh.replace(log_path(tmp_path))  # a restored log: another inode, read whole
    assert steps.last()["version"] == 7


def test_a_log_cut_shorter_and_grown_past_the_last_look_before_the_next_is_read_again(tmp_path):
    steps = CurrentSteps(tmp_path)
    append_step(tmp_path, "published", "hand", 1)
    append_step(tmp_path, "published", "hand", 2)
    assert steps.last()["version"] == 2
    log_path(tmp_path).write_text("")  # truncated in place, then longer than before by the next look
    append_step(tmp_path, "rollback", "hand", 1, reason="x" * 400)
    append_step(tmp_path, "published_candidate", "learner", 3)
    assert steps.last()["event"] == "rollback"  # not v2, which this log no longer holds


def test_a_log_that_stays_unwritable_does_not_stop_robots_being_judged(tmp_path):
    watch, steps = _started(tmp_path)
    watch.follow(steps.promoted(2, 1), known=["a", "b"], now=0.0)
    log_path(tmp_path).unlink()
    log_path(tmp_path).mkdir()  # every append fails from now on
    assert watch.step(lambda r: [(1, 10.0)] * 3 + [(2, 1.0 if r == "a" else 10.0)] * 2, now=1.0)
    assert watch.holds == {"a": 1}
    watch.follow(steps.promoted(3, 2), known=["a", "b"], now=2.0)  # and the next promotion is still watched
    assert watch.step(lambda r: [(2, 10.0)] * 3 + [(3, 1.0 if r == "b" else 10.0)] * 2, now=3.0)
    assert watch.holds == {"b": 2} and UnitWatch(CFG, tmp_path).holds == {"b": 2}


def test_a_current_version_no_logged_step_names_is_warned_about_once(monkeypatch, caplog, tmp_path):
    import types

    import fleet.hub_trunks as hub_trunks

    monkeypatch.setattr(hub_trunks, "UNLOGGED_WARN_S", 0.0)
    hub = hub_trunks.HubTrunks()
    hub.trunks = types.SimpleNamespace(version=3)  # CURRENT set without a logged step (TrunkStore used directly)
    hub.watch = types.SimpleNamespace(holds={"a": 1})
    last = {"event": "promoted", "version": 2}
    with caplog.at_level("WARNING", logger="fleet.hub"):
        for _ in range(3):
            hub._warn_unlogged(last)
    warned = [r.getMessage() for r in caplog.records if "last step that set CURRENT" in r.getMessage()]
    assert len(warned) == 1 and "v3" in warned[0] and "v2" in warned[0] and "fleet-hub rollback 3" in warned[0]
    caplog.clear()
    quiet = hub_trunks.HubTrunks()
    quiet.trunks, quiet.watch = types.SimpleNamespace(version=1), types.SimpleNamespace(holds={})
    with caplog.at_level("WARNING", logger="fleet.hub"):
        for _ in range(3):  # a first trunk published through the API, nothing logged, nobody held: no alarm
            quiet._warn_unlogged(None)
    assert not [r for r in caplog.records if "last step that set CURRENT" in r.getMessage()]
