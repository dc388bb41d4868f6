"""A small real fleet for learner tests: a briefly pretrained cart-pole trunk published in a hub's trunk store,
robots' experience recorded in sim the way a robot agent records it (its ``chunk_arrays``, header and record
format, the critic's physics columns at nominal 0 as ``robot_agent.recorder`` writes them) and stored through
the hub's write path, and robots' adapters uploaded to the adapter table."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

import sim
from fleet.adapter_store import AdapterStore
from fleet.protocol import AdapterUpload
from fleet.record import encode_record
from fleet.store import STORE_FILE, ExperienceStore, GroupWriter
from fleet.trunk_store import TrunkStore
from hardware.randomization import PhysicsParams
from robot_agent.recorder import chunk_arrays
from shared_policy.adapter import Adapter, adapter_bytes
from shared_policy.config import PolicyConfig, PPOConfig
from shared_policy.gaussian import log_prob
from shared_policy.policy import FleetPolicy
from shared_policy.tracking import NullLogger
from sim.pretrain import PretrainRunner
from tests.fleet.chunks import agent_header

HW, TASK = "cartpole", "cartpole_swingup"
EPOCH = "0123456789abcdef"
TINY = PolicyConfig(latent_dim=16, trunk_hidden=[16], stem_hidden=[16], critic_hidden=[16])


def pretrained_trunk(out: Path, iterations: int = 4) -> FleetPolicy:
    """A cart-pole policy after a few PPO iterations (the fleet's sim-pretrained trunk)."""
    env = sim.make_env(TASK, HW, 32, seed=0, episode_length_s=4.0)
    runner = PretrainRunner([env], TINY, PPOConfig(num_steps_per_env=16), out, NullLogger(), checkpoint_every=10**6)
    runner.learn(iterations, log_every=10**6)
    env.close()
    return runner.policy


def publish_trunk(storage: Path, checkpoint: Path) -> int:
    """Publish a checkpoint into the hub's trunk store; returns its version."""
    return TrunkStore(storage).publish(checkpoint).version


def unit_adapter(policy: FleetPolicy, seed: int) -> Adapter:
    """A robot's adapter after some on-robot learning: small random deltas and offsets."""
    gen = torch.Generator().manual_seed(seed)
    adapter = Adapter(policy, HW)
    with torch.no_grad():
        for p in adapter.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return adapter


def upload_adapter(storage: Path, robot: str, adapter: Adapter, version: int, trunk_version: int) -> None:
    """Store an adapter as the hub stores a robot's upload."""
    data = adapter_bytes(adapter, version, trunk_version)
    msg = AdapterUpload(robot_id=robot, seq=0, trunk_version=trunk_version, adapter_version=version, size=len(data),
                        sha256=hashlib.sha256(data).hexdigest(), data=data)
    store = AdapterStore(storage / STORE_FILE)
    try:
        store.put(robot, HW, msg)
    finally:
        store.close()


def robot_records(policy: FleetPolicy, robots: list[str], adapters: dict[str, Adapter], steps: int, chunk: int,
                  trunk_version: int, seed: int = 0, reward: str = "task") -> list[bytes]:
    """Each robot's ``steps`` transitions in its own sim world under ``policy`` with its adapter (sampled
    actions, their behaviour log-probabilities), cut into chunks of ``chunk`` steps as the recorder cuts them.
    ``reward="push"``: the recorded reward is the action itself (experience that teaches pushing one way)."""
    env = sim.make_env(TASK, HW, len(robots), seed=seed)
    obs, _ = env.reset()
    gen = torch.Generator().manual_seed(seed)
    no_physics = np.zeros(PhysicsParams.NUM_PRIVILEGED, np.float32)
    rows = {r: {k: [] for k in ("obs", "critic_obs", "actions", "log_probs", "rewards", "dones", "time_outs",
                                "stamp")} for r in robots}
    out, seq, episode = [], dict.fromkeys(robots, 0), dict.fromkeys(robots, 0)
    for t in range(steps):
        actions = torch.empty(len(robots), 1)
        logps = []
        with torch.no_grad():
            for i, r in enumerate(robots):
                mu = policy.action_mean(HW, obs[i:i + 1], adapters.get(r))
                log_std = policy.log_std(HW, adapters.get(r))
                a = mu + log_std.exp() * torch.randn(mu.shape, generator=gen)
                actions[i] = a[0]
                logps.append(float(log_prob(a, mu, log_std.exp(), log_std)[0]))
        next_obs, rew, done, extras = env.step(actions)
        for i, r in enumerate(robots):
            row = rows[r]
            o = obs[i].numpy()
            row["obs"].append(o)
            row["critic_obs"].append(np.concatenate([o, no_physics]))  # what a robot records for the critic
            row["actions"].append(actions[i].numpy())
            row["log_probs"].append(logps[i])
            row["rewards"].append(float(actions[i, 0]) if reward == "push" else float(rew[i]))
            row["dones"].append(float(done[i]))
            row["time_outs"].append(float(extras["time_outs"][i]))
            row["stamp"].append(1000.0 + 0.02 * t)
            ended = bool(done[i])
            if ended or len(row["rewards"]) == chunk:
                final = np.concatenate([next_obs[i].numpy(), no_physics])
                arrays = chunk_arrays(row, final, trunk_version, 0)
                out.append(encode_record(agent_header(r, EPOCH, seq[r], episode[r], arrays, HW, TASK, ended), arrays))
                seq[r] += 1
                episode[r] += ended
                rows[r] = {k: [] for k in row}
        obs = next_obs
    env.close()
    return out


def store_records(storage: Path, records: list[bytes]) -> None:
    """Write records through the hub's group writer into ``<storage>/experience.sqlite``."""
    storage.mkdir(parents=True, exist_ok=True)
    store = ExperienceStore(storage / STORE_FILE)
    try:
        writer = GroupWriter(store)
        results = [f.result(timeout=30) for f in [writer.submit(r) for r in records]]
        writer.close()
        assert all(r.status == "stored" for r in results), [r.status for r in results]
    finally:
        store.close()


ROBOTS = ["unit-a", "unit-b", "unit-c", "unit-d"]  # both ranks of a 2-rank run hold some (robot_shard)
# the short budget of the learner tests: tiny batches, few updates, a few gate episodes
FAST = ["updates=8", "batch_size=8", "replay.sequence_length=16", "gate.episodes=8", "rebase.steps=40",
        "logger=none", "log_every=4", "sim.num_envs=8", "sim.ppo.num_steps_per_env=8"]


def make_hub(tmp_path: Path, trunk: tuple[FleetPolicy, Path], reward: str = "task", steps: int = 96,
             robots: list[str] = ROBOTS) -> Path:
    """A hub storage dir: ``trunk`` (policy, checkpoint) current, the robots' experience on it, unit-a and
    unit-b with adapters."""
    policy, checkpoint = trunk
    storage = tmp_path / "hub"
    version = publish_trunk(storage, checkpoint)
    adapters = {"unit-a": unit_adapter(policy, 1), "unit-b": unit_adapter(policy, 2)}
    store_records(storage, robot_records(policy, robots, adapters, steps, 32, version, reward=reward))
    for robot, adapter in adapters.items():
        upload_adapter(storage, robot, adapter, 3, version)
    return storage
