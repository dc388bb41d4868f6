"""Console scripts of the sim side: fleet-train, fleet-eval (each a Hydra app). fleet-demo, the whole loop, is
fleet/demo/app.py."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from configs import CONFIG_DIR
from hardware.profile import HardwareProfile, ProfileError, profile_from_config
from hardware.tasks import TaskConfigError, task_class
from shared_policy.checkpoint import CheckpointError
from shared_policy.tracking import open_logger
from sim.app_config import register_configs
from sim.config import task_config_from
from sim.env import BatchedEnv, make_batched_env

register_configs()


def envs_from_config(cfg: DictConfig, num_envs: int | None = None) -> list[BatchedEnv]:
    """One batched env per hardware type the config selects, all running the config's task."""
    if not cfg.hardware:
        raise ProfileError("no hardware selected: set hardware=[<type>, ...]")
    tcls = task_class(cfg.task.name)
    task_cfg = task_config_from(tcls.config_cls, cfg.task)
    envs = []
    for key, node in cfg.hardware.items():
        profile: HardwareProfile = profile_from_config(node, where=f"hardware.{key}")
        envs.append(make_batched_env(tcls(task_cfg, profile), profile, num_envs or cfg.sim.num_envs,
                                     seed=cfg.sim.seed, device=cfg.sim.device, nthread=cfg.sim.nthread))
    return envs


def _guarded(fn, cfg: DictConfig) -> None:
    """Run an app body; config errors exit non-zero with the message naming the key."""
    try:
        fn(cfg)
    except (ProfileError, TaskConfigError, CheckpointError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def run_train(cfg: DictConfig) -> Path:
    """PPO pretraining over every selected hardware type; returns the final checkpoint directory."""
    from shared_policy.config import PolicyConfig, PPOConfig
    from shared_policy.tracking import NullLogger
    from sim.pretrain import DistributedContext, PretrainRunner

    ctx = DistributedContext(cfg.sim.device)
    finished = False
    try:
        # each rank steps its own worlds: different seeds, same policy; on CUDA, each on its own GPU
        rank_cfg = OmegaConf.merge(cfg, {"sim": {"seed": cfg.sim.seed + 1000 * ctx.rank, "device": str(ctx.device)}})
        envs = envs_from_config(rank_cfg)
        plain = OmegaConf.to_container(cfg, resolve=True)
        logger = open_logger(cfg.logger, job="train", config=plain) if ctx.is_main else NullLogger()
        policy_cfg = OmegaConf.to_object(cfg.policy)
        ppo_cfg = OmegaConf.to_object(cfg.algorithm)
        assert isinstance(policy_cfg, PolicyConfig) and isinstance(ppo_cfg, PPOConfig)
        runner = PretrainRunner(envs, policy_cfg, ppo_cfg, cfg.output_dir, logger, config=plain, ctx=ctx,
                                checkpoint_every=cfg.checkpoint_every, seed=cfg.sim.seed,
                                video_every=cfg.logger.video_every, rollout_threads=cfg.rollout_threads)
        if cfg.resume:
            runner.resume(cfg.resume)
            print(f"[train] resumed from {cfg.resume} at iteration {runner.iteration}", flush=True)
        if ctx.is_main:
            names = ", ".join(f"{e.profile.name} ({e.num_envs} worlds)" for e in envs)
            print(f"[train] {cfg.task.name} on {names}; {ctx.world_size} process(es); "
                  f"{cfg.iterations} iterations", flush=True)
        try:
            runner.learn(cfg.iterations)
        finally:
            logger.close()
        final = Path(cfg.output_dir) / "checkpoints" / "latest"
        synced = ctx.in_sync(runner.policy)
        if ctx.is_main:
            if ctx.enabled:
                print(f"[train] {ctx.world_size} ranks hold identical weights: {synced}", flush=True)
            print(f"[train] checkpoint -> {final}", flush=True)
        finished = True
        return final
    finally:
        ctx.close(together=finished)


def run_eval(cfg: DictConfig) -> None:
    """Load a checkpoint and print mean return (95% CI) and success rate per hardware type."""
    from shared_policy.checkpoint import load_checkpoint
    from sim.evaluation import evaluate
    from sim.pretrain import hardware_spec

    if not cfg.checkpoint:
        raise ValueError("checkpoint: set checkpoint=<checkpoint directory>")
    for env in envs_from_config(cfg):
        policy, manifest = load_checkpoint(cfg.checkpoint, expected={env.profile.name: hardware_spec(env)},
                                           device=str(env.device))
        result = evaluate(policy, env, cfg.episodes)
        print(f"[eval] {cfg.task.name} on {env.profile.name} (trunk v{manifest['trunk_version']}): "
              f"{result.summary()}", flush=True)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def train_main(cfg: DictConfig) -> None:
    """fleet-train: PPO pretraining of the shared trunk."""
    from sim.pretrain import TrainingDiverged

    try:
        _guarded(run_train, cfg)
    except TrainingDiverged as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(4)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="eval")
def eval_main(cfg: DictConfig) -> None:
    """fleet-eval: N episodes of a checkpoint's policy."""
    _guarded(run_eval, cfg)
