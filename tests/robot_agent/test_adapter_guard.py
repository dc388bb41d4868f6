"""The adapter guard's decision on its own: which updates it keeps, rolls back, and runs next."""

from __future__ import annotations

import json

import numpy as np
import pytest

from robot_agent.adapter_guard import AdapterGuard, GuardedAdapters
from robot_agent.config import AdapterTrainingConfig

M = 4  # the default trial


def _trial(guard: AdapterGuard, baseline: np.ndarray, candidate: np.ndarray, version: int):
    """Feed the kept version's episodes, offer ``version``, feed its episodes; returns the verdict."""
    for r in baseline:
        assert guard.record(guard.kept_version, float(r)) is None
    guard.offer(version)
    assert guard.version_to_run() == version
    verdict = None
    for r in candidate:
        assert verdict is None
        verdict = guard.record(version, float(r))
    return verdict


def _cartpole_like(rng: np.random.Generator, n: int, mean: float = 330.0) -> np.ndarray:
    """Two-peaked swing-up returns: most episodes balance (~mean +- 40), one in six fails the swing (~60)."""
    fails = rng.random(n) < 1 / 6
    return np.where(fails, rng.normal(60.0, 30.0, n), rng.normal(mean, 40.0, n))


def test_clearly_worse_update_is_rolled_back_and_the_kept_version_runs_again():
    rng = np.random.default_rng(0)
    g = AdapterGuard(kept_version=3, episodes=M)
    v = _trial(g, rng.normal(300, 50, M), rng.normal(120, 50, M), version=4)
    assert v is not None and not v.kept and v.version == 4 and v.baseline_version == 3
    assert (g.kept, g.rolled_back, g.kept_version) == (0, 1, 3)
    assert g.version_to_run() == 3  # no candidate left: the kept version runs


@pytest.mark.parametrize("shift", [0.0, 40.0])
def test_equal_or_better_update_is_kept_and_becomes_the_baseline(shift):
    rng = np.random.default_rng(1)
    base = rng.normal(300, 50, M)
    g = AdapterGuard(kept_version=0, episodes=M)
    v = _trial(g, base, base + shift, version=1)  # the very same returns (or higher): never worse
    assert v is not None and v.kept
    assert (g.kept, g.rolled_back, g.kept_version) == (1, 0, 1)
    # the next candidate is compared with version 1's trial episodes: no new baseline episodes needed
    g.offer(2)
    assert g.version_to_run() == 2


@pytest.mark.parametrize("returns", ["normal", "cartpole_like"])
@pytest.mark.parametrize("reference", [M, 16])
def test_noise_alone_rarely_rolls_back_and_a_real_drop_is_caught(returns, reference):
    def draw(rng, n, drop=0.0):
        if returns == "normal":
            return rng.normal(300.0 - drop, 80.0, n)
        return _cartpole_like(rng, n, 330.0 - drop)

    def rollback_rate(drop: float) -> float:
        rolled = 0
        for seed in range(2000):
            rng = np.random.default_rng(seed)
            g = AdapterGuard(kept_version=0)  # the defaults: M = 4, tolerance 2.0, reference up to 16
            rolled += not _trial(g, draw(rng, reference), draw(rng, M, drop), version=1).kept
        return rolled / 2000

    assert rollback_rate(0.0) < 0.08  # equal distributions: ~5% (normal), 2-3% (two-peaked)
    assert rollback_rate(250.0) > 0.8  # a collapse to failed swing-ups: 84-92% (reference 4), >98% (16)


def test_a_floor_rolls_back_a_loss_the_standard_error_hides():
    """Three exploring episodes a side that spread ~25% of their mean: a candidate 20% below the best is within
    2 standard errors (kept without a floor), but more than a 10% floor below it (rolled back)."""
    best, worse = np.array([260.0, 330.0, 410.0]), np.array([210.0, 265.0, 325.0])  # means 333.3 and 266.7
    plain = _trial(AdapterGuard(0, episodes=3), best, worse, version=1)
    assert plain.kept and plain.change > -2.0 * plain.standard_error
    floored = _trial(AdapterGuard(0, episodes=3, floor=0.1), best, worse, version=1)
    assert not floored.kept and floored.baseline_version == 0 and floored.by_floor and not plain.by_floor
    within = _trial(AdapterGuard(0, episodes=3, floor=0.1), best, worse + 40.0, version=1)  # 8% below: kept
    assert within.kept


@pytest.mark.parametrize("candidate_mean, kept", [(-112.0, False), (-105.0, True), (-95.0, True)])
def test_a_floor_on_negative_returns_measures_from_their_magnitude(candidate_mean, kept):
    """Best -100 (spread 8): the floor is 10 below it, at -110, whatever the sign."""
    spread = np.array([-8.0, 8.0, -8.0, 8.0])
    v = _trial(AdapterGuard(0, episodes=M, floor=0.1), -100.0 + spread, candidate_mean + spread, 1)
    assert v.kept is kept


@pytest.mark.parametrize("floor", [0.0, 0.1])
def test_what_a_floor_costs_in_equal_updates_and_buys_in_small_losses(floor):
    """Three episodes a side, returns spreading 23% of the mean (the fleet benchmark's cart-poles): the floor
    rolls back about Phi(-f / s) of equal updates (s: the difference's standard error as a fraction, ~0.19:
    ~30%), and most updates 20% worse, which the standard error alone lets through."""
    def rollback_rate(drop: float) -> float:
        rolled = 0
        for seed in range(2000):
            rng = np.random.default_rng(seed)
            g = AdapterGuard(kept_version=0, episodes=3, floor=floor)
            rolled += not _trial(g, rng.normal(300.0, 69.0, 3), rng.normal(300.0 * (1 - drop), 69.0, 3), 1).kept
        return rolled / 2000

    equal, loss = rollback_rate(0.0), rollback_rate(0.2)
    if floor == 0:
        assert equal < 0.08 and loss < 0.35  # the standard error alone: a 20% loss mostly kept
    else:
        assert 0.2 < equal < 0.4 and loss > 0.6


def _spread(mean: float) -> np.ndarray:
    """M returns with mean ``mean`` and a fixed spread (sample standard deviation ~23)."""
    return mean + np.array([-20.0, 20.0, -20.0, 20.0])


def test_a_chain_of_small_drops_is_stopped_within_the_tolerance_of_the_best():
    """Each update a little worse than the one before, each within the noise of that one: compared with its
    predecessor every one would pass and the robot would walk down without bound."""
    g = AdapterGuard(0, episodes=M, tolerance=2.0, reference_episodes=M)
    se = float(np.sqrt(2 * np.var(_spread(0.0), ddof=1) / M))  # Welch's, equal spreads, M against M
    for r in _spread(300.0):
        g.record(0, float(r))
    verdicts, mean = [], 300.0
    for version in range(1, 6):
        mean -= 1.5 * se  # within 2.0 standard errors of the previous version
        g.offer(version)
        verdicts.append(next(v for r in _spread(mean) if (v := g.record(version, float(r))) is not None))
    assert verdicts[0].kept  # 1.5 se below the best: within the noise
    assert not verdicts[1].kept and verdicts[1].baseline_version == 0  # 3 se below the best: rolled back
    assert all(v.baseline_version == 0 for v in verdicts)  # version 0 stays the reference: the best measured
    assert min(v.candidate_mean for v in verdicts if v.kept) >= 300.0 - 2.0 * se  # never further down


@pytest.mark.parametrize("kept_episodes_between_offers", [0, 2])
def test_after_a_drop_no_update_caused_equal_updates_are_kept_again_within_the_reference_age(
        kept_episodes_between_offers):
    """Wear or a changed environment lowers every version's returns by 100 after 10 updates. The best version's
    episodes ran before the drop and are never measured again: counted for good, they would roll back every
    later update however good. They age out after ``reference_decisions`` (D) decisions."""
    D = 8
    g = AdapterGuard(0, episodes=M, tolerance=2.0, reference_episodes=16, reference_decisions=D)
    verdicts = []
    for version in range(1, 40):
        level = 300.0 if version <= 10 else 200.0  # every version alike: only the robot's conditions change
        for r in _spread(level)[:kept_episodes_between_offers]:
            g.record(g.kept_version, float(r))
        g.offer(version)
        while g.candidate is not None:  # the kept version runs while it re-measures, then the candidate
            episodes = [float(r) for r in _spread(level)]
            run = g.version_to_run()
            verdict = next((v for r in episodes if (v := g.record(run, r)) is not None), None)
            if verdict is not None:
                verdicts.append(verdict)
    assert all(v.kept for v in verdicts[:10])
    after = verdicts[10:]
    assert not after[0].kept  # 100 below the best measured: rolled back, as it must be until it is known why
    first_kept = next((i for i, v in enumerate(after) if v.kept), None)
    assert first_kept is not None and first_kept <= D  # at most D updates rolled back after the drop
    assert all(v.kept for v in after[first_kept:])  # then equal updates are kept again, against post-drop returns
    assert after[-1].baseline_mean == 200.0


def test_the_decision_history_is_bounded():
    g = AdapterGuard(0, episodes=2, history=5)
    for version in range(1, 13):
        g.offer(version)
        for r in (100.0, 104.0, 100.0, 104.0):
            g.record(g.version_to_run(), r)
    assert g.kept == 12 and len(g.history) == 5  # a daemon runs for months: only the last decisions stay
    assert [v.version for v in g.history] == [8, 9, 10, 11, 12]


def test_the_best_kept_version_is_the_reference_and_the_kept_version_gains_episodes():
    g = AdapterGuard(0, episodes=2, tolerance=2.0, reference_episodes=6)
    for r in (100.0, 110.0):
        g.record(0, r)
    g.offer(1)
    assert g.record(1, 150.0) is None and g.record(1, 160.0).kept  # better: the new best
    assert g.reference_version == 1
    g.offer(2)
    g.record(2, 140.0)
    assert g.record(2, 150.0).kept  # a little below version 1, within the noise: kept, but 1 stays the best
    assert (g.kept_version, g.reference_version) == (2, 1)
    for r in (170.0, 175.0):  # no candidate on trial: the kept version runs and its sample grows past 1's
        g.record(2, r)
    assert g.reference_version == 2
    g.offer(3)
    g.record(3, 50.0)
    v = g.record(3, 55.0)
    assert not v.kept and v.baseline_version == 2 and len(v.baseline_returns) == 4


def test_updates_offered_during_a_trial_wait_and_only_the_newest_is_tried():
    g = AdapterGuard(kept_version=0, episodes=2)
    g.offer(1)
    assert g.version_to_run() == 0  # the kept version first needs its 2 episodes
    g.offer(2)  # replaces 1, which never ran
    g.record(0, 100.0)
    g.record(0, 110.0)
    assert g.version_to_run() == 2
    g.record(2, 105.0)
    g.offer(3)
    g.offer(4)  # replaces 3 as the one waiting
    g.offer(4)  # a repeated report changes nothing
    assert g.version_to_run() == 2  # the trial in progress finishes first
    assert g.record(2, 108.0).kept
    assert g.version_to_run() == 4 and g.skipped == 2


def test_a_rolled_back_update_takes_the_updates_built_on_it_along():
    g = AdapterGuard(kept_version=0, episodes=2)
    g.offer(1)
    for r in (100.0, 102.0):
        g.record(0, r)
    g.record(1, 10.0)
    g.offer(2)  # built on 1
    assert not g.record(1, 12.0).kept
    assert g.version_to_run() == 0 and g.candidate is None and g.waiting is None
    g.offer(2)  # a stale report of it changes nothing either
    assert g.version_to_run() == 0


def test_returns_under_another_trunk_are_not_compared():
    g = AdapterGuard(kept_version=0, episodes=2)
    g.offer(1)
    g.record(0, 100.0, trunk_version=1)
    g.record(0, 100.0, trunk_version=1)
    g.record(1, 10.0, trunk_version=1)
    # a new trunk: neither side's episodes count any more; the kept version runs until it has 2 again
    assert g.record(1, 10.0, trunk_version=2) is None
    assert g.version_to_run() == 0


@pytest.mark.parametrize("key, kwargs", [("guard_episodes", {"episodes": 1}),
                                         ("guard_tolerance", {"tolerance": -1.0}),
                                         ("guard_reference_episodes", {"episodes": 4, "reference_episodes": 3}),
                                         ("guard_reference_decisions", {"reference_decisions": 0}),
                                         ("guard_floor", {"floor": -0.1}), ("guard_floor", {"floor": 1.0}),
                                         ("guard_floor", {"floor": float("nan")})])
def test_bad_settings_are_refused_naming_the_key(key, kwargs):
    with pytest.raises(ValueError, match=key):
        AdapterGuard(0, **kwargs)


class RecordingTrainer:
    """Collects the verdicts the agent sends (the trainer process receives the same two calls)."""

    def __init__(self):
        self.sent: list[tuple[str, int]] = []

    def keep(self, version: int) -> None:
        self.sent.append(("keep", version))

    def roll_back(self, version: int) -> None:
        self.sent.append(("roll_back", version))


def test_verdicts_reach_the_trainer_between_episodes_and_aborted_episodes_do_not_count():
    trainer = RecordingTrainer()
    kept, bad = object(), object()
    adapters = GuardedAdapters((kept, 0), trainer, AdapterGuard(0, episodes=2))
    adapters.offer(bad, 1)
    running = 0
    for ret in (100.0, 100.0):
        adapters.episode_done(running, 0, ret, complete=True)
    swap = adapters.next_adapter(running)
    assert swap == (bad, 1)
    running = 1
    adapters.episode_done(running, 0, -500.0, complete=False)  # aborted: cut short, not counted
    adapters.episode_done(running, 0, 0.0, complete=True)
    assert adapters.status()["adapter_on_trial"] == 1
    adapters.episode_done(running, 0, 1.0, complete=True)
    assert trainer.sent == []  # decided, but the trial's last segments go out before the verdict
    assert adapters.next_adapter(running) == (kept, 0)
    assert trainer.sent == [("roll_back", 1)]
    s = adapters.status()
    assert (s["adapter_kept"], s["adapter_rolled_back"], s["adapter_kept_version"]) == (0, 1, 0)
    assert adapters.kept == (kept, 0)


@pytest.mark.parametrize("floor, verdict", [(0.0, "keep"), (0.1, "roll_back")])
def test_the_agent_configs_guard_floor_reaches_its_guard(floor, verdict):
    trainer = RecordingTrainer()
    cfg = AdapterTrainingConfig(guard_episodes=3, guard_floor=floor)
    adapters = GuardedAdapters.from_config((object(), 0), trainer, cfg)
    for ret in (260.0, 330.0, 410.0):
        adapters.episode_done(0, 0, ret, complete=True)
    adapters.offer(object(), 1)
    for ret in (210.0, 265.0, 325.0):  # 20% below, within 2 standard errors
        adapters.episode_done(1, 0, ret, complete=True)
    adapters.next_adapter(1)
    assert trainer.sent == [(verdict, 1)]


def test_without_the_guard_every_update_is_kept_as_it_arrives():
    trainer = RecordingTrainer()
    adapters = GuardedAdapters((object(), 0), trainer, None)
    newest = object()
    adapters.offer(object(), 1)
    adapters.offer(newest, 2)
    assert adapters.next_adapter(0) == (newest, 2) and adapters.kept == (newest, 2)
    assert trainer.sent == []  # the trainer kept them itself
    assert adapters.status()["adapter_kept"] == 2


def test_a_non_finite_return_rolls_the_version_on_trial_back_at_once():
    g = AdapterGuard(kept_version=0, episodes=3)
    g.offer(1)
    assert g.record(1, float("nan")) is None  # not on trial yet (the baseline is not complete): not counted
    for r in (10.0, 11.0, 12.0):
        g.record(0, r)
    assert g.record(0, float("inf")) is None  # the kept version cannot be rolled back: not counted either
    v = g.record(1, float("nan"))
    assert v is not None and not v.kept and g.rolled_back == 1 and g.version_to_run() == 0


def _kept_below_the_best(g: AdapterGuard) -> None:
    """v0 measures 400 on tight returns; v1 measures 390 on wide ones, within 2 standard errors: kept, not best."""
    for r in (399.0, 400.0, 401.0):
        g.record(0, r)
    g.offer(1)
    for r in (330.0, 390.0, 450.0):
        g.record(1, r)
    assert g.kept_version == 1 and g.reference_version == 0


def test_a_restarted_guard_still_compares_with_the_best_kept_version():
    before = AdapterGuard(kept_version=0, episodes=3)
    _kept_below_the_best(before)
    worse = (318.0, 320.0, 322.0)  # far below v0 (400 +- 1), within 2 standard errors of v1's wide returns

    restarted = AdapterGuard(kept_version=1, episodes=3)
    assert restarted.restore(before.memory(), trunk_version=0)
    assert restarted.reference_version == 0 and restarted.decisions == 1
    restarted.offer(2)
    assert restarted.version_to_run() == 2  # the reference is measured: the trial starts at once
    verdicts = [restarted.record(2, r) for r in worse]
    assert verdicts[-1] is not None and not verdicts[-1].kept and verdicts[-1].baseline_version == 0

    # without the memory the kept version re-measures itself and is the only reference: the loss is kept
    forgetful = AdapterGuard(kept_version=1, episodes=3)
    forgetful.offer(2)
    assert forgetful.version_to_run() == 1
    for r in (300.0, 390.0, 480.0):
        forgetful.record(1, r)
    verdict = [forgetful.record(2, r) for r in worse][-1]
    assert verdict is not None and verdict.kept


def test_guard_memory_of_another_trunk_or_kept_version_is_not_taken_up():
    before = AdapterGuard(kept_version=0, episodes=3)
    _kept_below_the_best(before)
    other_trunk = AdapterGuard(kept_version=1, episodes=3)
    assert not other_trunk.restore(before.memory(), trunk_version=2)
    assert other_trunk.decisions == 0 and other_trunk.memory()["returns"] == {"1": []}  # unchanged
    fresh = AdapterGuard(kept_version=0, episodes=3)  # the kept file is older than the memory (a lost verdict)
    assert not fresh.restore(before.memory(), trunk_version=0)
    assert fresh.reference_version == 0 and fresh.decisions == 0 and fresh.version_to_run() == 0
    # memory written before any counted episode names no trunk: it matches none
    assert not AdapterGuard(kept_version=0, episodes=3).restore(AdapterGuard(kept_version=0).memory(), 0)


def _memory(**change: object) -> dict:
    return {"format": 1, "trunk_version": 0, "kept_version": 1, "decisions": 1, "returns": {"0": [[0, 1.0]]}} | change


@pytest.mark.parametrize("memory", [
    {k: v for k, v in _memory().items() if k != "returns"},
    _memory(returns={"0": [[0, "x"]]}),
    _memory(returns={"0": [[0, float("nan")]]}),
    _memory(returns={"5": [[0, 1.0]]}),  # newer than the kept version
    _memory(returns={"0": [[0.5, 1.0]]}),  # a decision count is a whole number
    _memory(returns=[[0, 1.0]]),
    _memory(decisions=-1),
    _memory(kept_version=None), _memory(kept_version="1"), _memory(kept_version=True),
    _memory(trunk_version="0"), _memory(decisions=1.5),
    _memory(format=2), {k: v for k, v in _memory().items() if k != "format"},
    [1, 2, 3], None, "memory",
])
def test_malformed_guard_memory_is_refused_and_changes_nothing(memory):
    g = AdapterGuard(kept_version=1, episodes=3)
    with pytest.raises(ValueError, match="malformed adapter guard memory"):
        g.restore(memory, trunk_version=0)
    assert g.decisions == 0 and g.version_to_run() == 1


@pytest.mark.parametrize("text", ['{"format": 1, "trunk_version": 7, "kept_version": null, "decisions": 0, '
                                  '"returns": {}}', "[]", "null", '{"format": 1, "returns": 5}', "\x00\x01"])
def test_a_guard_memory_file_of_any_content_starts_the_agent_afresh(tmp_path, caplog, text):
    path = tmp_path / "adapter_guard.json"
    path.write_text(text)
    with caplog.at_level("WARNING"):
        adapters = GuardedAdapters.from_config((object(), 1), RecordingTrainer(), AdapterTrainingConfig(), path, 7)
    assert not adapters.restored and "unreadable" in caplog.text
    assert adapters.guard.decisions == 0 and adapters.guard.version_to_run() == 1


def test_the_guards_memory_survives_a_restart_through_its_file(tmp_path, caplog):
    path = tmp_path / "adapter_guard.json"
    cfg = AdapterTrainingConfig(guard_episodes=3)
    first = GuardedAdapters.from_config((object(), 0), RecordingTrainer(), cfg, path, trunk_version=7)
    assert not first.restored
    _kept_below_the_best(_FeedThrough(first, trunk=7))
    first.next_adapter(1)
    trainer = RecordingTrainer()
    again = GuardedAdapters.from_config((object(), 1), trainer, cfg, path, trunk_version=7)
    assert again.restored and again.status()["adapter_guard_restored"]
    again.offer(object(), 2)
    assert again.next_adapter(1)[1] == 2  # on trial at once
    for r in (318.0, 320.0, 322.0):
        again.episode_done(2, 7, r, complete=True)
    again.next_adapter(2)
    assert trainer.sent == [("roll_back", 2)]  # against v0, remembered across the restart

    assert not GuardedAdapters.from_config((object(), 1), RecordingTrainer(), cfg, path, trunk_version=8).restored
    path.write_text('{"trunk_version": 7, "kept_')  # a torn or corrupted file: reported, measured afresh
    with caplog.at_level("WARNING"):
        torn = GuardedAdapters.from_config((object(), 1), RecordingTrainer(), cfg, path, trunk_version=7)
    assert not torn.restored and "unreadable" in caplog.text
    torn.episode_done(1, 7, 100.0, complete=True)
    assert json.loads(path.read_text())["returns"] == {"1": [[0, 100.0]]}  # rewritten whole


class _FeedThrough:
    """Drives a GuardedAdapters with the AdapterGuard calls ``_kept_below_the_best`` makes."""

    def __init__(self, adapters: GuardedAdapters, trunk: int):
        self.adapters, self.trunk = adapters, trunk

    def record(self, version: int, r: float) -> None:
        self.adapters.episode_done(version, self.trunk, r, complete=True)

    def offer(self, version: int) -> None:
        self.adapters.offer(object(), version)

    @property
    def kept_version(self) -> int:
        return self.adapters.kept[1]

    @property
    def reference_version(self) -> int:
        return self.adapters.guard.reference_version


def test_an_update_offered_between_a_rollback_and_its_sending_is_dropped():
    # the agent collects the trainer's updates between episodes before it sends the verdicts: an update reported
    # then was built on the rejected version, and the trainer drops it when the rollback reaches it
    trainer = RecordingTrainer()
    adapters = GuardedAdapters((object(), 0), trainer, AdapterGuard(0, episodes=2))
    for r in (100.0, 101.0):
        adapters.episode_done(0, 0, r, complete=True)
    adapters.offer(object(), 1)
    assert adapters.next_adapter(0)[1] == 1
    for r in (10.0, 11.0):
        adapters.episode_done(1, 0, r, complete=True)  # rolled back, not yet sent
    adapters.offer(object(), 2)  # built on v1
    assert adapters.next_adapter(1) is not None and adapters.guard.version_to_run() == 0
    assert trainer.sent == [("roll_back", 1)]
    assert adapters.guard.candidate is None and 2 not in adapters._adapters
    adapters.offer(object(), 3)  # after the rollback reached the trainer: built on the kept version
    assert adapters.guard.candidate == 3


def test_a_guard_memory_that_cannot_be_written_is_reported_and_the_guard_goes_on(tmp_path, caplog):
    path = tmp_path / "adapter_guard.json"
    path.mkdir()  # the write's rename onto it fails, as on a full or read-only disk
    trainer = RecordingTrainer()
    adapters = GuardedAdapters.from_config((object(), 0), trainer, AdapterTrainingConfig(guard_episodes=2), path)
    with caplog.at_level("WARNING"):
        for r in (100.0, 101.0, 99.0):
            adapters.episode_done(0, 0, r, complete=True)
    assert caplog.text.count("not written") == 1  # once, not per episode
    adapters.offer(object(), 1)
    assert adapters.next_adapter(0)[1] == 1  # the guard goes on deciding
    path.rmdir()  # the disk recovers: the next change is written, and a later failure is reported again
    for r in (100.0, 101.0):
        adapters.episode_done(1, 0, r, complete=True)  # the trial ends: a decision
    assert json.loads(path.read_text())["decisions"] == 1
    path.unlink()
    path.mkdir()
    with caplog.at_level("WARNING"):
        for r in (100.0, 100.5):
            adapters.episode_done(1, 0, r, complete=True)  # the kept v1's episodes: memory changes
    assert caplog.text.count("not written") == 2


def test_the_guards_memory_is_written_only_when_it_changes(tmp_path):
    path = tmp_path / "adapter_guard.json"
    adapters = GuardedAdapters.from_config((object(), 0), RecordingTrainer(), AdapterTrainingConfig(guard_episodes=3),
                                           path)
    for r in (100.0, 101.0, 99.0):
        adapters.episode_done(0, 0, r, complete=True)
    written = path.stat().st_ino  # every write replaces the file: a new inode
    adapters.offer(object(), 1)
    adapters.next_adapter(0)
    for r in (100.0, 100.5):
        adapters.episode_done(1, 0, r, complete=True)  # a trial's episodes: nothing remembered changes
        assert path.stat().st_ino == written
    adapters.episode_done(1, 0, 99.5, complete=True)  # the decision
    assert path.stat().st_ino != written and json.loads(path.read_text())["kept_version"] == 1


def test_a_wrecked_update_whose_own_spread_hides_it_from_the_standard_error_is_rolled_back():
    # what a learner at 1000x its step did to a reach unit: every episode far below the kept version's, but spread
    # so wide that Welch's standard error (2.9 million) put the mean within 2 of them
    kept = np.array([-50.2, -56.6, -45.5, -75.1, -94.8, -90.6])
    wrecked = np.array([-2388603.5, -2472895.5, -2291000.4, -14117935.7])
    assert (wrecked.mean() - kept.mean()) > -2.0 * np.sqrt(wrecked.var(ddof=1) / 4 + kept.var(ddof=1) / 6)
    verdict = _trial(AdapterGuard(kept_version=0), kept, wrecked, version=1)
    assert verdict is not None and not verdict.kept


def test_the_rank_rule_stays_out_of_trials_too_small_to_make_separation_rare():
    from robot_agent.adapter_guard import separated_below

    assert not separated_below(np.array([1.0, 2.0, 3.0]), np.array([10.0, 11.0, 12.0]))  # 3 v 3: 1 in 20 by chance
    assert separated_below(np.array([1.0, 2.0, 3.0]), np.array([10.0, 11.0, 12.0, 13.0, 14.0]))  # 3 v 5: 1 in 56
    assert separated_below(np.array([1.0, 2.0, 3.0, 4.0]), np.array([10.0, 11.0, 12.0, 13.0]))  # 4 v 4: 1 in 70
    assert not separated_below(np.array([1.0, 2.0, 3.0, 10.5]), np.array([10.0, 11.0, 12.0, 13.0]))


def test_a_tie_at_the_edge_is_not_separation():
    from robot_agent.adapter_guard import separated_below

    # the candidate's best equals the reference's worst: not every return lies below every one
    assert not separated_below(np.array([1.0, 2.0, 3.0, 10.0]), np.array([10.0, 11.0, 12.0, 13.0]))


def test_a_rollback_the_rank_rule_makes_is_not_counted_as_the_floors_even_with_a_floor_set():
    # the wrecked update above, with a floor: the rank rule rolls it back whether or not the floor would
    kept = np.array([-50.2, -56.6, -45.5, -75.1, -94.8, -90.6])
    wrecked = np.array([-2388603.5, -2472895.5, -2291000.4, -14117935.7])
    verdict = _trial(AdapterGuard(kept_version=0, floor=0.1), kept, wrecked, version=1)
    assert verdict is not None and not verdict.kept and not verdict.by_floor
