"""Ape-X initial priorities computed on the robot: the lambda-return error under its own critic, worked out by
hand here; written into every spooled chunk by the spool writer's thread; carried by the hub's store and the
Parquet tier into the fleet learner's replay."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fleet.parquet_export import ParquetExporter
from fleet.replay.parquet_reader import ParquetReader
from fleet.replay.store_reader import StoreReader
from fleet.store import STORE_FILE, ExperienceStore
from hardware.tasks.config import task_config
from robot_agent.agent import RobotAgent
from robot_agent.priorities import td_priorities
from robot_agent.sink import SpoolWriter
from robot_agent.spool import Spool
from shared_policy.checkpoint import load_checkpoint
from shared_policy.vtrace import VTraceConfig
from tests.fleet.chunks import agent_arrays, agent_header

HW = "cartpole"


def task_cfg():
    return task_config("cartpole_swingup", {"episode_length_s": 1.0})


def _chunk(policy, seed: int, steps: int) -> dict[str, np.ndarray]:
    """A chunk's arrays with the critic rows as wide as ``policy``'s critic for cart-pole."""
    rng = np.random.default_rng(seed)
    arrays = agent_arrays(rng, steps)
    arrays["critic_obs"] = rng.standard_normal((steps + 1, policy.spec(HW).num_critic_obs)).astype(np.float32)
    return arrays


def _values(policy, critic_obs: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return policy.value(HW, torch.as_tensor(critic_obs)).reshape(-1).numpy().astype(np.float64)


@pytest.mark.parametrize("end", ["none", "termination", "time_out"])
def test_priorities_are_the_lambda_return_errors_with_episode_ends_as_recorded(cartpole_checkpoint, end):
    policy, _ = load_checkpoint(cartpole_checkpoint)
    arrays = _chunk(policy, 3, 6)
    arrays["dones"][:] = arrays["time_outs"][:] = 0.0
    if end != "none":  # the episode ends at step 3; a new one begins at step 4
        arrays["dones"][3] = 1.0
        arrays["time_outs"][3] = float(end == "time_out")
    cfg = VTraceConfig(gamma=0.9, lam=0.8)
    v = _values(policy, arrays["critic_obs"])  # v[t + 1]: the observation step t ended in
    r = arrays["rewards"].astype(np.float64)
    # lambda-returns, backwards: G_t = r_t + gamma * ((1 - lam) V(s_t+1) + lam G_t+1) inside an episode;
    # at a termination G_t = r_t; at a time-out G_t = r_t + gamma V(final observation); the chunk's last step
    # bootstraps from V of the observation after it
    g = np.zeros(6)
    for t in reversed(range(6)):
        if arrays["dones"][t] and not arrays["time_outs"][t]:
            g[t] = r[t]
        elif arrays["time_outs"][t] or t == 5:
            g[t] = r[t] + 0.9 * v[t + 1]
        else:
            g[t] = r[t] + 0.9 * (0.2 * v[t + 1] + 0.8 * g[t + 1])
    p = td_priorities(policy, HW, arrays, cfg)
    assert p.dtype == np.float32 and p.shape == (6,)
    np.testing.assert_allclose(p, np.abs(g - v[:-1]), rtol=1e-4, atol=1e-5)


def test_a_chunk_whose_critic_gives_nan_goes_without_priorities(cartpole_checkpoint):
    policy, _ = load_checkpoint(cartpole_checkpoint)
    arrays = _chunk(policy, 4, 5)
    arrays["rewards"][2] = np.inf  # a chunk no learner would take either; the robot sends no score for it
    assert td_priorities(policy, HW, arrays, VTraceConfig()) is None


def test_a_failing_prioritiser_costs_the_chunk_nothing(tmp_path):
    def broken(arrays):
        raise RuntimeError("critic gone")

    arrays = agent_arrays(np.random.default_rng(5), 5, episode_end=True)
    with Spool(tmp_path / "spool") as spool:
        writer = SpoolWriter(spool, before_write=broken)
        writer.start()
        writer.put({k: v for k, v in agent_header("unit-0", "e", 0, 0, arrays).items()
                    if k not in ("chunk_id", "seq", "spool_epoch")}, arrays)
        assert writer.wait_idle(10)
        writer.stop(10)
        assert writer.before_write_errors == 1 and writer.lost_chunks == 0
        assert len(spool.pending()) == 1 and "priorities" not in spool.read(spool.pending()[0]).arrays


@pytest.mark.timeout(120)
def test_an_agent_spools_its_critic_priorities_and_the_learner_reads_them_from_store_and_parquet(agent_cfg, tmp_path):
    RobotAgent(agent_cfg, task_cfg()).run()
    policy, _ = load_checkpoint(agent_cfg.checkpoint)
    with Spool(Path(agent_cfg.state_dir) / "spool") as spool:
        refs = spool.pending()
        chunks = [spool.read(r) for r in refs]
        records = [spool.read_record_bytes(r) for r in refs]
    assert len(chunks) >= 2
    for c in chunks:
        p = c.arrays["priorities"]
        assert np.isfinite(p).all() and (p >= 0).all() and p.std() > 0
        np.testing.assert_allclose(p, td_priorities(policy, HW, c.arrays, VTraceConfig()), rtol=1e-5, atol=1e-6)
    store = ExperienceStore(tmp_path / "hub" / STORE_FILE)
    try:
        store.put_many(records)
        ParquetExporter(store, tmp_path / "parquet", fsync=False).catch_up()
    finally:
        store.close()
    by_id = {(c.header["spool_epoch"], c.header["seq"]): c.arrays["priorities"] for c in chunks}
    from_store = StoreReader(tmp_path / "hub" / STORE_FILE).read()
    from_parquet = ParquetReader(tmp_path / "parquet").read()
    assert len(from_store) == len(from_parquet) == len(chunks)
    for c in [*from_store, *from_parquet]:
        np.testing.assert_array_equal(c.arrays["priorities"], by_id[(c.spool_epoch, c.seq)])


@pytest.mark.timeout(120)
def test_with_priorities_off_the_agent_sends_none(agent_cfg):
    agent_cfg.spool.priorities = False
    agent_cfg.max_episodes = 1
    RobotAgent(agent_cfg, task_cfg()).run()
    with Spool(Path(agent_cfg.state_dir) / "spool") as spool:
        assert all("priorities" not in spool.read(r).arrays for r in spool.pending())


def test_the_agent_s_priority_settings_default_to_the_learner_s_and_a_wrong_one_is_refused_naming_its_key(agent_cfg):
    from dataclasses import fields

    from robot_agent.config import PriorityVTraceConfig

    learner = VTraceConfig()
    assert {f.name: getattr(learner, f.name) for f in fields(PriorityVTraceConfig)} == vars(PriorityVTraceConfig())
    agent_cfg.spool.priority_vtrace.gamma = 1.5
    with pytest.raises(ValueError, match=r"spool\.priority_vtrace\.gamma"):
        agent_cfg.validate()


@pytest.mark.timeout(120)
def test_an_agent_scores_its_priorities_with_the_configured_v_trace_settings(agent_cfg):
    agent_cfg.max_episodes = 1
    agent_cfg.spool.priority_vtrace.gamma, agent_cfg.spool.priority_vtrace.lam = 0.9, 0.8
    RobotAgent(agent_cfg, task_cfg()).run()
    policy, _ = load_checkpoint(agent_cfg.checkpoint)
    with Spool(Path(agent_cfg.state_dir) / "spool") as spool:
        chunks = [spool.read(r) for r in spool.pending()]
    assert chunks
    for c in chunks:
        configured = td_priorities(policy, HW, c.arrays, VTraceConfig(gamma=0.9, lam=0.8))
        np.testing.assert_allclose(c.arrays["priorities"], configured, rtol=1e-5, atol=1e-6)
        assert not np.allclose(c.arrays["priorities"], td_priorities(policy, HW, c.arrays, VTraceConfig()))
