"""Console scripts of the sim side: fleet-demo, fleet-train, fleet-eval (each a Hydra app)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import hydra
import numpy as np
import torch
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


def run_demo(cfg: DictConfig) -> dict[str, float]:
    """Random-action rollout on every selected hardware type; prints and logs throughput."""
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    logger = open_logger(cfg.logger, job="demo", config=OmegaConf.to_container(cfg, resolve=True))
    results: dict[str, float] = {}
    try:
        for env in envs_from_config(cfg):
            name = env.profile.name
            print(f"[demo] {cfg.task.name} on {name}: {env.num_envs} worlds, obs {env.num_obs}, "
                  f"actions {env.num_actions}, {env.decimation} substeps at {env.profile.physics_hz:g} Hz", flush=True)
            gen = torch.Generator().manual_seed(cfg.sim.seed)
            returns, t0 = [], time.perf_counter()
            for step in range(cfg.steps):
                _, _, _, extras = env.step(torch.rand(env.num_envs, env.num_actions, generator=gen) * 2 - 1)
                if "episode" in extras:
                    returns.append(extras["episode"]["return"])
                if (step + 1) % max(cfg.steps // 3, 1) == 0:
                    print(f"[demo]   step {step + 1}/{cfg.steps}", flush=True)
            sps = cfg.steps * env.num_envs / (time.perf_counter() - t0)
            results[name] = sps
            ret = f"{np.mean(returns):.2f}" if returns else "n/a (no episode ended)"
            print(f"[demo] {name}: {sps:,.0f} env steps/s ({sps * env.decimation:,.0f} physics steps/s), "
                  f"mean episode return {ret}, divergences {env.num_divergences}", flush=True)
            logger.log({f"{name}/env_steps_per_s": sps, f"{name}/divergences": env.num_divergences})
            if cfg.render:
                save_frame(env, out / f"{name}.png")
    finally:
        logger.close()
    return results


def save_frame(env: BatchedEnv, path: Path) -> None:
    """Render world 0 to a PNG; one warning and no file when rendering is unavailable here."""
    from sim.render import EnvRenderer, RenderUnavailable

    try:
        renderer = EnvRenderer(env)
    except RenderUnavailable as exc:
        print(f"[demo] warning: {exc}; skipping frames", flush=True)
        return
    try:
        write_png(path, renderer.frame(0))
        print(f"[demo] frame of world 0 -> {path}", flush=True)
    finally:
        renderer.close()


def write_png(path: Path, rgb: np.ndarray) -> None:
    """Write an RGB uint8 image as PNG with only the standard library."""
    import struct
    import zlib

    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


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
        return final
    finally:
        ctx.close()


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


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="demo")
def demo_main(cfg: DictConfig) -> None:
    """fleet-demo: the short sim rollout `make demo` runs."""
    _guarded(run_demo, cfg)


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
