"""The fleet-mix study learns from exactly the experience round 1 learned from: its copy of the hub's store keeps
each robot's first episodes and the adapters uploaded before any later episode, and leaves the source alone."""

from __future__ import annotations

import sqlite3
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # the scripts import their neighbours
from fleet_mix_study import (  # noqa: E402
    check_round_adapters,
    check_round_settings,
    drop_adapters,
    overrides,
    round_one_storage,
)

from fleet.segments import SegmentLockedError  # noqa: E402
from fleet.store import STORE_FILE, ExperienceStore  # noqa: E402
from shared_policy.config import PolicyConfig  # noqa: E402
from shared_policy.policy import FleetPolicy  # noqa: E402
from tests.fleet.chunks import agent_record  # noqa: E402
from tests.fleet.learner.experience import store_records, unit_adapter, upload_adapter  # noqa: E402
from tests.fleet.trunks import cartpole_spec  # noqa: E402


def _episodes(rng: np.random.Generator, robot: str, episodes: range, first_seq: int) -> list[bytes]:
    """Two chunks per episode, the second ending it."""
    out, seq = [], first_seq
    for e in episodes:
        for end in (False, True):
            out.append(agent_record(rng, robot, seq, episode=e, steps=8, episode_end=end))
            seq += 1
    return out


def _rows(storage: Path, sql: str) -> list[tuple]:
    con = sqlite3.connect(storage / STORE_FILE)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _policy() -> FleetPolicy:
    return FleetPolicy(PolicyConfig(latent_dim=16, trunk_hidden=[16], stem_hidden=[16], critic_hidden=[16]),
                       {"cartpole": cartpole_spec()})


def _two_rounds(tmp_path: Path, cut_episode: bool = False) -> Path:
    """Robot a: 2 episodes and an adapter in round 1, then 2 more and another adapter; robot b: 2, then 1 more.
    ``cut_episode``: b also sends the first chunk of an episode it never ends, before a's round-1 upload."""
    rng = np.random.default_rng(0)
    src = tmp_path / "hub"
    policy = _policy()
    store_records(src, _episodes(rng, "a", range(2), 0) + _episodes(rng, "b", range(2), 0))
    if cut_episode:
        time.sleep(0.01)
        store_records(src, [agent_record(rng, "b", 100, episode=50, steps=8, episode_end=False)])
    time.sleep(0.01)
    upload_adapter(src, "a", unit_adapter(policy, 1), 1, 1)  # uploaded in round 1
    time.sleep(0.01)  # later rows carry a later store time
    store_records(src, _episodes(rng, "a", range(2, 4), 4) + _episodes(rng, "b", range(2, 3), 4))
    upload_adapter(src, "a", unit_adapter(policy, 2), 2, 1)  # after round 1's episodes
    return src


@pytest.mark.timeout(60)
def test_round_one_copy_keeps_first_episodes_and_earlier_adapters_only(tmp_path):
    src = _two_rounds(tmp_path)
    kept = round_one_storage(src, tmp_path / "copy", {"a": 2, "b": 2})
    assert kept == {"a": 4, "b": 4}
    dst = tmp_path / "copy"
    assert _rows(dst, "select robot_id, max(episode) from chunks group by robot_id order by 1") == [("a", 1), ("b", 1)]
    assert _rows(dst, "select robot_id, adapter_version from adapters") == [("a", 1)]
    assert len(_rows(src, "select * from chunks")) == 14 and len(_rows(src, "select * from adapters")) == 2


@pytest.mark.timeout(60)
def test_the_copys_adapters_must_be_those_the_round_recorded(tmp_path):
    round_one_storage(_two_rounds(tmp_path), tmp_path / "copy", {"a": 2, "b": 2})
    check_round_adapters(tmp_path / "copy", _policy(), 1, ["a"])
    with pytest.raises(RuntimeError, match="adapters of \\['a'\\], round 1 learned with those of \\['a', 'b'\\]"):
        check_round_adapters(tmp_path / "copy", _policy(), 1, ["a", "b"])


@pytest.mark.timeout(60)
def test_the_copys_adapter_versions_must_be_those_the_round_recorded(tmp_path):
    round_one_storage(_two_rounds(tmp_path), tmp_path / "copy", {"a": 2, "b": 2})
    check_round_adapters(tmp_path / "copy", _policy(), 1, ["a"], {"a": [1, 1]})
    with pytest.raises(RuntimeError, match="adapter versions \\{'a': \\[1, 1\\]\\}, round 1 learned with "
                                           "\\{'a': \\[2, 1\\]\\}"):
        check_round_adapters(tmp_path / "copy", _policy(), 1, ["a"], {"a": [2, 1]})  # a later upload, same robot


@pytest.mark.timeout(60)
def test_an_episode_cut_during_round_one_does_not_drop_the_adapters_uploaded_after_it_began(tmp_path):
    src = _two_rounds(tmp_path, cut_episode=True)
    assert round_one_storage(src, tmp_path / "copy", {"a": 2, "b": 2}) == {"a": 4, "b": 4}
    assert _rows(tmp_path / "copy", "select robot_id, adapter_version from adapters") == [("a", 1)]


@pytest.mark.timeout(60)
def test_round_one_copy_refuses_a_store_a_hub_still_writes(tmp_path):
    src = _two_rounds(tmp_path)
    live = ExperienceStore(src / STORE_FILE)  # holds the writer lock, as a running hub's store does
    try:
        with pytest.raises(SegmentLockedError):
            round_one_storage(src, tmp_path / "copy", {"a": 2, "b": 2})
    finally:
        live.close()
    assert not (tmp_path / "copy").exists()
    round_one_storage(src, tmp_path / "copy", {"a": 2, "b": 2})  # and taken once the hub has stopped


def test_round_one_copy_refuses_a_work_dir_inside_the_source_or_a_source_without_segments(tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(RuntimeError, match="no hub store with segments"):
        round_one_storage(tmp_path / "plain", tmp_path / "copy", {"a": 1})
    with pytest.raises(ValueError, match="must not contain one another"):
        round_one_storage(tmp_path / "hub", tmp_path / "hub" / "study", {"a": 1})
    with pytest.raises(ValueError, match="must not contain one another"):
        round_one_storage(tmp_path / "w" / "hub", tmp_path / "w", {"a": 1})


@pytest.mark.timeout(60)
def test_the_bare_arms_store_keeps_every_chunk_and_no_adapter(tmp_path):
    src = _two_rounds(tmp_path)
    round_one_storage(src, tmp_path / "copy", {"a": 2, "b": 2})
    drop_adapters(tmp_path / "copy")
    assert _rows(tmp_path / "copy", "select count(*) from adapters") == [(0,)]
    assert _rows(tmp_path / "copy", "select count(*) from chunks") == [(8,)]


@pytest.mark.timeout(60)
def test_round_one_copy_refuses_a_store_with_fewer_episodes_than_the_round_counted(tmp_path):
    store_records(tmp_path / "hub", _episodes(np.random.default_rng(0), "a", range(2), 0))
    with pytest.raises(RuntimeError, match="fewer episodes"):
        round_one_storage(tmp_path / "hub", tmp_path / "copy", {"a": 3})


def test_an_arm_override_replaces_the_runs_value_of_the_same_key():
    run = ["updates=120", "sim_fraction=0.125", "gate.episodes=64"]
    assert overrides(run, ["gate.episodes=8"], ["sim_fraction=0", "updates=105"]) == \
        ["updates=105", "sim_fraction=0", "gate.episodes=8"]


def test_a_run_whose_round_had_other_sizes_is_refused_as_the_arms_would_not_keep_its_slots():
    types = ["cartpole", "cartpole_pivot"]
    check_round_settings({"types": types, "updates": 120, "learn": ["sim.seed=0", "sim_fraction=0.125"]})
    check_round_settings({"types": types, "updates": 120, "learn": ["sim_fraction=0.1250"]})  # the same value
    with pytest.raises(ValueError, match="it had 90 and 30"):
        check_round_settings({"types": types, "updates": 120, "learn": ["sim_fraction=0.25"]})
    with pytest.raises(ValueError, match="it had 90 and 30"):  # the config's default fraction, 0.25
        check_round_settings({"types": types, "updates": 120, "learn": []})
    with pytest.raises(ValueError, match="updates=60"):
        check_round_settings({"types": types, "updates": 60, "learn": ["sim_fraction=0.125"]})
