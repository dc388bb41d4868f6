"""The robot agent in-process on a stand-in robot: refusals, recording, trunk hot-swap, restarts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from hardware.observation import ObservationLayout
from hardware.profile import load_profile
from hardware.tasks.config import task_config
from robot_agent.agent import ADAPTER_FILE, STATUS_FILE, AgentStartupError, RobotAgent
from robot_agent.spool import Spool
from shared_policy.adapter import Adapter, load_adapter, save_adapter
from shared_policy.checkpoint import load_checkpoint, save_checkpoint
from sim.standin import MuJoCoStandInDriver

from .conftest import pretrain

TASK = "cartpole_swingup"


class WrongProfileDriver(MuJoCoStandInDriver):
    """A driver for another robot than the one the agent is configured for."""

    def __init__(self, profile, **options):
        super().__init__(load_profile("arm2_planar"), **options)


def _agent(cfg) -> RobotAgent:
    return RobotAgent(cfg, task_config(TASK, {"episode_length_s": 2.0}))


@pytest.mark.timeout(120)
def test_agent_refuses_a_driver_whose_profile_does_not_match(agent_cfg):
    agent_cfg.driver.name = f"{__name__}:WrongProfileDriver"  # a driver named module:Class, as a vendor may
    with pytest.raises(AgentStartupError, match="does not match.*refusing to start"):
        _agent(agent_cfg)


@pytest.mark.timeout(300)
def test_agent_refuses_a_policy_trained_for_other_hardware(agent_cfg, tmp_path):
    agent_cfg.checkpoint = str(pretrain(tmp_path / "arm", "arm2_planar", "reach", iterations=1))
    with pytest.raises(AgentStartupError, match="no hardware type 'cartpole'"):
        _agent(agent_cfg)


@pytest.mark.timeout(120)
def test_agent_refuses_a_corrupted_checkpoint(agent_cfg, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(agent_cfg.checkpoint, bad)
    with open(bad / "trunk.safetensors", "r+b") as f:
        f.seek(-8, 2)
        f.write(b"\x00" * 8)
    agent_cfg.checkpoint = str(bad)
    with pytest.raises(AgentStartupError, match="corrupted"):
        _agent(agent_cfg)


@pytest.mark.timeout(120)
def test_every_transition_is_spooled_with_log_prob_and_versions(agent_cfg):
    agent_cfg.spool.chunk_steps = 40
    agent = _agent(agent_cfg)
    status = agent.run()
    assert status["episodes"] == 2 and status["steps"] == 200  # 2 s at 50 Hz, twice (cart-pole never fails)
    spool = Spool(Path(agent_cfg.state_dir) / "spool")
    chunks = [spool.read(r) for r in spool.pending()]
    assert sum(c.header["steps"] for c in chunks) == 200 and len(chunks) == 6  # 40+40+20 per episode
    last = chunks[2]
    assert last.header["episode_end"] and last.arrays["dones"][-1] == 1.0 and last.arrays["time_outs"][-1] == 1.0
    c = chunks[0]
    assert c.arrays["critic_obs"].shape[0] == c.arrays["obs"].shape[0] + 1
    assert np.isfinite(c.arrays["log_probs"]).all() and (c.arrays["trunk_version"] == agent.runtime.trunk_version).all()
    saved = json.loads((Path(agent_cfg.state_dir) / STATUS_FILE).read_text())
    assert saved["final"] and saved["steps"] == 200 and saved["spool_depth"] == 6


@pytest.mark.timeout(120)
def test_observations_match_the_simulators_layout(agent_cfg):
    agent_cfg.max_episodes = 1
    agent = _agent(agent_cfg)
    agent.run()
    with Spool(Path(agent_cfg.state_dir) / "spool") as spool:  # one open at a time: the spool is locked
        chunk = spool.read(spool.pending()[0])
    obs = chunk.arrays["obs"]
    assert obs.shape[1] == agent.runtime.policy.spec("cartpole").num_obs
    # cart-pole layout: slider pos, cos/sin of the hinge, then velocities; the pole starts hanging down
    assert obs[0, 1] == pytest.approx(-1.0, abs=0.01)


@pytest.mark.timeout(120)
def test_new_trunk_is_swapped_in_and_a_corrupted_one_refused(agent_cfg, tmp_path):
    trunks = tmp_path / "trunks"
    policy, manifest = load_checkpoint(agent_cfg.checkpoint)
    old = int(manifest["trunk_version"])
    save_checkpoint(trunks / "v0100", policy, trunk_version=old + 100)
    bad = save_checkpoint(trunks / "v0200", policy, trunk_version=old + 200)
    (bad / "hardware" / "cartpole.safetensors").write_bytes(b"not weights")
    agent_cfg.trunk_dir = str(trunks)
    agent = _agent(agent_cfg)
    agent.watcher.poll_once()  # what the watcher thread does every second
    status = agent.run()
    assert status["trunk_version"] == old + 100 and status["trunk_swaps"] == 1 and status["trunks_refused"] == 1
    assert "corrupted" in next(iter(agent.watcher.refused.values()))
    spool = Spool(Path(agent_cfg.state_dir) / "spool")
    versions = {int(spool.read(r).arrays["trunk_version"][0]) for r in spool.pending()}
    spool.close()  # the restarted agent below opens it
    assert versions == {old + 100}  # the swap happened before the first episode
    # a restart starts from the trunk the unit last swapped to
    agent_cfg.max_episodes = 1
    assert _agent(agent_cfg).runtime.trunk_version == old + 100


@pytest.mark.timeout(120)
def test_agent_continues_from_its_saved_adapter(agent_cfg):
    agent_cfg.adapter.enabled = True
    policy, _ = load_checkpoint(agent_cfg.checkpoint)
    adapter = Adapter(policy, "cartpole")
    with torch.no_grad():
        adapter.head_delta.up.fill_(0.1)
    save_adapter(Path(agent_cfg.state_dir) / ADAPTER_FILE, adapter, version=7, trunk_version=2)
    agent = _agent(agent_cfg)
    assert agent.runtime.adapter_version == 7
    assert float(agent.runtime.adapter.head_delta.up[0, 0].detach()) == pytest.approx(0.1)


@pytest.mark.timeout(120)
def test_an_adapter_of_another_trunk_is_replaced_on_disk_so_the_learner_starts_where_the_robot_does(agent_cfg):
    agent_cfg.adapter.enabled = agent_cfg.adapter.learn = True
    policy, manifest = load_checkpoint(agent_cfg.checkpoint)
    trunk = int(manifest["trunk_version"])
    other = Adapter(policy, "cartpole")
    with torch.no_grad():
        other.head_delta.up.fill_(0.1)
    path = Path(agent_cfg.state_dir) / ADAPTER_FILE
    save_adapter(path, other, version=7, trunk_version=trunk + 5)  # the agent died before the trainer wrote a swap
    agent = _agent(agent_cfg)
    saved, meta = load_adapter(path, policy, "cartpole")
    assert int(meta["trunk_version"]) == trunk  # the adapter file the trainer learns from is this trunk's
    assert all(torch.equal(v, agent.runtime.adapter.state_dict()[k]) for k, v in saved.state_dict().items())
    assert float(agent.runtime.adapter.head_delta.up[0, 0].detach()) == 0.0  # not the other trunk's


@pytest.mark.timeout(120)
def test_estop_holds_off_episodes_until_cleared(agent_cfg):
    import threading
    import time

    agent_cfg.max_episodes = 1
    agent = _agent(agent_cfg)
    flag = Path(agent_cfg.state_dir) / "ESTOP"
    flag.touch()
    seen: list[int] = []

    def operator():
        time.sleep(1.0)
        seen.append(agent.steps)
        flag.unlink()
        flag.with_name("ESTOP.clear").touch()

    t = threading.Thread(target=operator)
    t.start()
    status = agent.run()
    t.join()
    assert seen == [0]  # nothing ran while the e-stop was engaged
    assert status["episodes"] == 1 and status["steps"] == 100 and not status["estop"]


@pytest.mark.timeout(120)
def test_full_spool_refuses_new_episodes_and_keeps_what_it_has(agent_cfg):
    import threading

    agent_cfg.max_episodes = 0
    agent_cfg.spool.quota_mb = 0.05  # room for about two 100-step episodes of cart-pole chunks
    agent = _agent(agent_cfg)
    stopper = threading.Timer(3.0, agent.request_stop)
    stopper.start()
    status = agent.run()
    stopper.cancel()
    assert status["refused_episodes"] > 0 and status["lost_chunks"] == 0
    assert 0 < status["spool_bytes"] <= 0.05 * 2**20
    spool = Spool(Path(agent_cfg.state_dir) / "spool")
    assert sum(spool.read(r).header["steps"] for r in spool.pending()) == status["steps"]


@pytest.mark.timeout(120)
def test_drop_oldest_spool_keeps_running_and_counts_drops(agent_cfg):
    agent_cfg.max_episodes = 8
    agent_cfg.spool.quota_mb = 0.05
    agent_cfg.spool.segment_mb = 0.01
    agent_cfg.spool.when_full = "drop_oldest"
    status = _agent(agent_cfg).run()
    assert status["episodes"] == 8 and status["spool_dropped"] > 0 and status["spool_bytes"] <= 0.05 * 2**20


def test_learning_without_exploring_is_refused_naming_the_keys(agent_cfg):
    agent_cfg.adapter.enabled = agent_cfg.adapter.learn = True
    agent_cfg.adapter.explore = False
    with pytest.raises(ValueError, match=r"adapter\.learn=true needs adapter\.explore=true"):
        _agent(agent_cfg)


@pytest.mark.timeout(300)
def test_the_bootstrap_row_keeps_the_goal_the_last_reward_was_earned_under(agent_cfg, tmp_path):
    # a quadruped whose 0.4 s episode ends (by time) on a command period's boundary, as 20 s and 10 s do
    agent_cfg.hardware = "go2_like"
    agent_cfg.checkpoint = str(pretrain(tmp_path / "go2", "go2_like", "locomotion", iterations=1))
    agent_cfg.max_episodes = 1
    agent = RobotAgent(agent_cfg, task_config("locomotion", {"episode_length_s": 0.4, "command_period_s": 0.2}))
    agent.run()
    spool = Spool(Path(agent_cfg.state_dir) / "spool")
    chunks = [spool.read(r) for r in spool.pending()]
    last = chunks[-1].arrays
    assert chunks[-1].header["episode_end"] and last["time_outs"][-1] == 1.0
    command = ObservationLayout(agent.profile, agent.profile.observation).slices["command"]
    assert not np.array_equal(chunks[0].arrays["obs"][0, command], last["obs"][-1, command])  # re-drawn once
    np.testing.assert_array_equal(last["critic_obs"][-1, command], last["obs"][-1, command])


@pytest.mark.timeout(120)
def test_a_spool_too_small_for_one_episode_refuses_the_first_episode_too(agent_cfg):
    # before anything was written the room check had no chunk size to go by (it used 1 byte), so a first
    # episode started with no room and lost its chunks to the quota
    import threading

    agent_cfg.max_episodes = 0
    agent_cfg.spool.quota_mb = 0.01  # less than one 100-step episode of cart-pole chunks
    agent = _agent(agent_cfg)
    stopper = threading.Timer(2.0, agent.request_stop)
    stopper.start()
    status = agent.run()
    stopper.cancel()
    assert status["episodes"] == 0 and status["refused_episodes"] > 0
    assert status["lost_chunks"] == 0 and status["spool_bytes"] == 0


@pytest.mark.timeout(120)
def test_full_chunk_estimate_covers_the_chunks_the_agent_writes(agent_cfg):
    agent_cfg.max_episodes = 2
    agent = _agent(agent_cfg)
    status = agent.run()
    written = status["spool_bytes"] / 2  # two full-length episodes, none acked
    estimate = agent.recorder.episode_bytes(agent.task.max_episode_length)
    assert 0 < written <= estimate <= 1.1 * written
