"""The fleet-round benchmark's trunks: the sim-only pretrained v1 (cached), a fleet-learn round's config, and the
sim-only control (v1 given exactly the sim PPO iterations the fleet rounds' sim mix ran, and no fleet data).

The control separates what the fleet's experience did from what the learner's sim mix (``sim_fraction``) did:
the rounds keep training in sim, so "round-3 trunk beats v1" alone would not say the fleet helped.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import sim
from configs import CONFIG_DIR
from fleet.learner_config import LearnConfig
from fleet.learner_round import is_sim_slot
from shared_policy.checkpoint import load_checkpoint
from shared_policy.config import PolicyConfig, PPOConfig
from shared_policy.policy import FleetPolicy
from shared_policy.tracking import NullLogger
from sim.pretrain import PretrainRunner
from sim.unit_gaps import UNIT_SETUPS


def pretrain_trunk(types: list[str], iterations: int, num_envs: int, work: Path, seed: int = 0) -> Path:
    """A trunk trained in sim only (each type's task, its domain randomisation) as trunk version 1, cached in
    ``work`` by its settings (the same settings reuse it; other settings train another)."""
    key = {"types": types, "tasks": [UNIT_SETUPS[hw]["task"] for hw in types], "iterations": iterations,
           "num_envs": num_envs, "seed": seed}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    out = work / f"pretrained-{digest}"
    path = out / "checkpoints" / "latest"
    if (path / "manifest.json").is_file() and json.loads((out / "key.json").read_text())["key"] == key:
        print(f"[fleet_round] sim-only trunk (cached): {path}", flush=True)
        return path
    t0 = time.perf_counter()
    envs = [sim.make_env(UNIT_SETUPS[hw]["task"], hw, num_envs, seed=seed) for hw in types]
    runner = PretrainRunner(envs, PolicyConfig(), PPOConfig(), out, NullLogger(), checkpoint_every=10**6, seed=seed)
    runner.learn(iterations, log_every=max(1, iterations // 6))
    runner.trunk_version = 1  # published as the fleet's first trunk
    saved = runner.save()
    # what trained it and how long it took: a run that finds it cached records this
    (out / "key.json").write_text(json.dumps({"key": key, "minutes": (time.perf_counter() - t0) / 60,
                                              "date": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}))
    for e in envs:
        e.close()
    assert saved is not None
    return saved


def learn_config(storage: Path, out: Path, types: list[str], overrides: list[str]) -> LearnConfig:
    """One fleet-learn round (composed by Hydra as ``fleet-learn`` composes it) publishing a canary candidate."""
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        base = compose("learn", overrides=["logger=none"])
        tasks = base.gate.tasks
        gate = [f"{'' if hw in tasks else '+'}gate.tasks.{hw}={UNIT_SETUPS[hw]['task']}" for hw in types]
        dcfg = compose("learn", overrides=[f"storage_dir={storage}", f"output_dir={out}", "logger=none", "rounds=1",
                                           "publish_candidate=true", *gate, *overrides])
    cfg = OmegaConf.to_object(dcfg)
    assert isinstance(cfg, LearnConfig)
    return cfg


def sim_iterations(cfg: LearnConfig) -> int:
    """How many sim PPO iterations one fleet-learn round of ``cfg`` runs."""
    return sum(is_sim_slot(i, cfg.sim_fraction) for i in range(cfg.updates))


def sim_only_control(start: Path, cfg: LearnConfig, rounds: int, work: Path) -> FleetPolicy:
    """``start`` trained by the learner's sim mix alone: per round a new PPO runner on ``cfg.sim`` worlds and settings
    (as run_learn builds it) for :func:`sim_iterations` iterations, with no fleet data."""
    policy, _ = load_checkpoint(start)
    for r in range(rounds):
        envs = [sim.make_env(UNIT_SETUPS[hw]["task"], hw, cfg.sim.num_envs, seed=cfg.sim.seed) for hw in policy.specs]
        runner = PretrainRunner(envs, policy.cfg, cfg.sim.ppo, work / f"control_{r + 1}", NullLogger(),
                                checkpoint_every=10**9, seed=cfg.sim.seed)
        runner.policy.load_state_dict(policy.state_dict())
        runner.learn(sim_iterations(cfg), log_every=10**6)
        policy = runner.policy
        for e in envs:
            e.close()
    return policy


def pretrain_record(path: Path) -> dict:
    """The settings, duration and date of the pretraining that wrote the trunk at ``path`` (its key.json)."""
    return json.loads((path.parents[1] / "key.json").read_text())
