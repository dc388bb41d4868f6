"""Sim pretraining of the shared trunk: PPO over one batched env per hardware type, in one update.

Data-parallel over ``torchrun`` ranks when launched that way: each rank steps its own worlds (seeded
by rank), gradients are averaged with all-reduce, normalisers are averaged after each rollout, and rank 0
logs and writes checkpoints.
"""

from __future__ import annotations

import math
import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from hardware.profile import profile_hash, profile_json
from shared_policy.checkpoint import load_checkpoint, load_training_state, save_checkpoint
from shared_policy.config import PolicyConfig, PPOConfig
from shared_policy.policy import FleetPolicy, HardwareSpec
from shared_policy.ppo import PPO
from shared_policy.tracking import CurveFile, RunLogger
from sim.env import BatchedEnv

CURVE_FILE = "curve.csv"  # in output_dir: one row per iteration
LEAVE_BARRIER_S = 60.0  # how long a finished rank waits for the others before leaving the process group


class TrainingDiverged(RuntimeError):
    """A loss or a weight became NaN/inf; the last good checkpoint is left intact."""


def hardware_spec(env: BatchedEnv) -> HardwareSpec:
    """The policy-facing description of an env's hardware type."""
    return HardwareSpec(env.profile.name, env.num_obs, env.num_actions, env.num_privileged_obs,
                        tuple(env.obs_layout.signature()), tuple(j.name for j in env.profile.actuated_joints),
                        profile_hash(env.profile), profile_json(env.profile))


class DistributedContext:
    """Rank and world size under torchrun (WORLD_SIZE > 1), else a single process.

    ``device`` is where training runs: ranks training on CUDA talk through NCCL, each on the GPU of its
    LOCAL_RANK; ranks on CPU through gloo (also on a machine that has GPUs).
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.enabled = self.world_size > 1
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        if self.enabled and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if self.device.type == "cuda" else "gloo")

    @property
    def is_main(self) -> bool:
        """Whether this process logs and writes checkpoints."""
        return self.rank == 0

    def broadcast_parameters(self, module: torch.nn.Module) -> None:
        """Start every rank from rank 0's weights and normalisers."""
        if self.enabled:
            for t in module.state_dict().values():
                dist.broadcast(t, src=0)

    def average_gradients(self, module: torch.nn.Module) -> None:
        """All-reduce gradients to their mean over ranks."""
        if not self.enabled:
            return
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def average_buffers(self, module: torch.nn.Module) -> None:
        """Average normaliser statistics over ranks (their worlds saw different data)."""
        if self.enabled:
            for name, t in module.named_buffers():
                if name.endswith(("mean", "var")):
                    dist.all_reduce(t)
                    t /= self.world_size

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """Element-wise sum of a tensor over ranks."""
        if self.enabled:
            t = t.clone()
            dist.all_reduce(t)
        return t

    def mean(self, x: float) -> float:
        """The mean of a scalar over ranks."""
        if not self.enabled:
            return x
        t = torch.tensor([x], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t.item()) / self.world_size

    def in_sync(self, module: torch.nn.Module) -> bool:
        """Whether every rank holds the same weights (compared through a checksum)."""
        if not self.enabled:
            return True
        flat = torch.cat([p.detach().reshape(-1).double() for p in module.parameters()])
        digest = torch.stack([flat.sum(), (flat * torch.arange(1, len(flat) + 1, dtype=flat.dtype)).sum()])
        gathered = [torch.zeros_like(digest) for _ in range(self.world_size)]
        dist.all_gather(gathered, digest)
        return all(torch.equal(g, gathered[0]) for g in gathered)

    def close(self, together: bool = False) -> None:
        """Leave the process group. ``together`` (every rank finished the same work without an error): first wait
        for every rank, so that none tears its connections down while another may still use them (one CI run saw
        rank 0 abort at exit, "terminate called without an active exception", after the last collective; not
        reproduced in 50 runs since). After an error a barrier could pair with a peer's pending collective and
        hang, so the group is left at once."""
        if self.enabled and dist.is_initialized():
            if together:
                try:  # bounded: a peer that failed after its last collective must not hold this rank for the
                    # process group's whole timeout (NCCL may not report it gone)
                    dist.barrier(async_op=True).wait(timedelta(seconds=LEAVE_BARRIER_S))
                except RuntimeError as exc:  # a peer already gone, or not there in time: leave anyway
                    print(f"rank {self.rank}: the barrier before leaving failed ({exc})", flush=True)
            dist.destroy_process_group()


class PretrainRunner:
    """Collects rollouts from every env, updates the policy with PPO, logs, checkpoints and resumes."""

    def __init__(self, envs: list[BatchedEnv], policy_cfg: PolicyConfig, ppo_cfg: PPOConfig, output_dir: str | Path,
                 logger: RunLogger, config: dict[str, Any] | None = None, ctx: DistributedContext | None = None,
                 checkpoint_every: int = 50, seed: int = 0, video_every: int = 0, video_steps: int = 150,
                 rollout_threads: int = 1):
        if rollout_threads < 0:
            raise ValueError(f"rollout_threads must be >= 0 (0: leave torch's setting), got {rollout_threads}")
        devices = {e.device for e in envs}
        if len(devices) != 1:
            raise ValueError(f"the envs of one run must share a device, got {sorted(map(str, devices))}")
        self.device = devices.pop()  # the policy, its rollouts and its update live where the envs' tensors do
        self.envs = {e.profile.name: e for e in envs}
        self.rollout_threads = rollout_threads
        self.ctx = ctx or DistributedContext(self.device)
        torch.manual_seed(seed + self.ctx.rank)
        self.policy = FleetPolicy(policy_cfg, {n: hardware_spec(e) for n, e in self.envs.items()}).to(self.device)
        self.ctx.broadcast_parameters(self.policy)
        self.ppo = PPO(self.policy, ppo_cfg, {n: e.num_envs for n, e in self.envs.items()}, device=self.device,
                       grad_hook=self.ctx.average_gradients, mean_over_ranks=self.ctx.mean)
        self.output_dir = Path(output_dir)
        self.logger, self.config = logger, config or {}
        self.checkpoint_every = checkpoint_every
        self.video_every, self.video_steps = video_every, video_steps
        self._video_envs: dict[str, BatchedEnv] = {}
        self.iteration = 0
        self.trunk_version = 0
        self.history: list[dict[str, float]] = []
        # iteration, env steps so far (all ranks), mean return per type: the pretraining curve the demo reports
        self.curve = CurveFile(self.output_dir / CURVE_FILE, ["iteration", "env_steps",
                                                              *[f"return/{n}" for n in self.envs]])
        self._ep_returns = {n: [] for n in self.envs}
        self._ep_success = {n: [] for n in self.envs}
        self._ep_lengths = {n: [] for n in self.envs}
        # the safety filter's counts at the last log: each iteration logs the share of world-steps it changed
        self._safety_seen = {n: e.safety.counts.copy() for n, e in self.envs.items()}
        self._last_return: dict[str, float] = {}
        # spread episode starts so that worlds do not all finish on the same step
        gen = torch.Generator().manual_seed(seed + self.ctx.rank)
        for env in self.envs.values():
            env.episode_length_buf.copy_(torch.randint(0, env.max_episode_length, (env.num_envs,), generator=gen))

    # -- resume / save -------------------------------------------------------------------------------
    def resume(self, path: str | Path) -> None:
        """Continue from a checkpoint: weights, normalisers, optimizer, learning rate and iteration."""
        expected = {n: hardware_spec(e) for n, e in self.envs.items()}
        loaded, manifest = load_checkpoint(path, expected=expected)
        self.policy.load_state_dict(loaded.state_dict())
        state = load_training_state(path)
        self.ppo.optimizer.load_state_dict(state["optimizer"])
        self.ppo.learning_rate = float(state["learning_rate"])
        for group in self.ppo.optimizer.param_groups:
            group["lr"] = self.ppo.learning_rate
        self.iteration = int(state["iteration"])
        self.trunk_version = int(manifest["trunk_version"])
        if "torch_rng" in state:
            torch.set_rng_state(state["torch_rng"])

    def save(self, name: str = "latest") -> Path | None:
        """Write a checkpoint (rank 0 only); returns its path."""
        if not self.ctx.is_main:
            return None
        state = {"optimizer": self.ppo.optimizer.state_dict(), "learning_rate": self.ppo.learning_rate,
                 "iteration": self.iteration, "torch_rng": torch.get_rng_state()}
        return save_checkpoint(self.output_dir / "checkpoints" / name, self.policy, self.trunk_version,
                               config=self.config, training_state=state)

    # -- training ------------------------------------------------------------------------------------
    def collect(self) -> None:
        """One rollout of num_steps_per_env steps in every env."""
        # On CPU, a rollout's forward passes are small (one env's worlds at a time): a second intra-op
        # thread costs more in wake-ups than it saves (22% of the cart-pole rollout); the update's
        # minibatches keep every thread.
        threads = torch.get_num_threads()
        if self.rollout_threads > 0 and self.device.type == "cpu":
            torch.set_num_threads(min(self.rollout_threads, threads))
        try:
            self._collect()
        finally:
            torch.set_num_threads(threads)

    def _collect(self) -> None:
        obs = {n: e.get_observations() for n, e in self.envs.items()}
        critic = {n: e.get_privileged_observations() for n, e in self.envs.items()}
        with torch.inference_mode():
            for _ in range(self.ppo.cfg.num_steps_per_env):
                for name, env in self.envs.items():
                    self.policy.update_normalizers(name, obs[name], critic[name])
                    actions, transition = self.ppo.act(name, obs[name], critic[name])
                    if not torch.isfinite(actions).all():
                        raise TrainingDiverged(f"the policy produced NaN/inf actions for {name} at iteration "
                                               f"{self.iteration}; stopping. The last good checkpoint in "
                                               f"{self.output_dir / 'checkpoints' / 'latest'} is intact.")
                    obs[name], rew, done, extras = env.step(actions)
                    critic[name] = extras["observations"]["critic"]
                    self.ppo.storage[name].add(**transition, rewards=rew, dones=done.float(),
                                               time_outs=extras["time_outs"].float())
                    if "episode" in extras:
                        ep = extras["episode"]
                        self._ep_returns[name] += [ep["return"]] * ep["count"]
                        self._ep_success[name] += [ep["success"]] * ep["count"]
                        self._ep_lengths[name] += [ep["length"]] * ep["count"]
            for name in self.envs:
                last = self.policy.value(name, critic[name])
                self.ppo.storage[name].compute_returns(last, self.ppo.cfg.gamma, self.ppo.cfg.lam)
        self.ctx.average_buffers(self.policy)

    def learn(self, iterations: int, log_every: int = 1) -> list[dict[str, float]]:
        """Run ``iterations`` PPO iterations; returns per-iteration metrics."""
        steps_per_iter = sum(e.num_envs for e in self.envs.values()) * self.ppo.cfg.num_steps_per_env
        start_iter, t_start = self.iteration, time.perf_counter()
        end = self.iteration + iterations
        while self.iteration < end:
            t0 = time.perf_counter()
            self.collect()
            t1 = time.perf_counter()
            losses = self.ppo.update()
            t2 = time.perf_counter()
            self.iteration += 1
            self.trunk_version += 1
            self._check_finite(losses)
            metrics = self._metrics(losses, steps_per_iter / (t2 - t0), t1 - t0, t2 - t1)
            self.history.append(metrics)
            if self.ctx.is_main:
                self.logger.log(metrics, step=self.iteration)
                self.curve.append({"iteration": self.iteration, "env_steps": self.env_steps(),
                                   **{f"return/{n}": metrics.get(f"{n}/return") for n in self.envs}})
                if self.iteration % log_every == 0 or self.iteration == end:
                    done = self.iteration - start_iter
                    eta = (time.perf_counter() - t_start) / done * (end - self.iteration)
                    print(self._progress_line(metrics, end, eta), flush=True)
                if self.iteration % self.checkpoint_every == 0 or self.iteration == end:
                    self.save()
                if self.video_every and self.iteration % self.video_every == 0:
                    self.log_videos()
        return self.history

    def env_steps(self) -> int:
        """Environment steps collected so far, over every hardware type and rank."""
        per_iteration = sum(e.num_envs for e in self.envs.values()) * self.ppo.cfg.num_steps_per_env
        return self.iteration * per_iteration * self.ctx.world_size

    def log_videos(self) -> None:
        """Render a short deterministic rollout per hardware type; one warning and no more tries if GL fails."""
        from sim.render import RenderUnavailable, record_rollout, write_gif

        for name, env in self.envs.items():
            if name not in self._video_envs:
                self._video_envs[name] = BatchedEnv(env.task, env.robot, 1, seed=env.seed + 999, device=str(env.device))
            venv = self._video_envs[name]
            try:
                frames = record_rollout(venv, lambda obs, n=name: self.policy.action_mean(n, obs),
                                        min(self.video_steps, venv.max_episode_length))
            except RenderUnavailable as exc:
                print(f"[train] warning: no rollout videos: {exc}", flush=True)
                self.video_every = 0
                return
            gif = write_gif(self.output_dir / "videos" / f"{name}_rollout_{self.iteration}.gif", frames,
                            fps=int(venv.profile.control_hz))
            self.logger.log_video(f"{name}/rollout", gif, step=self.iteration)

    def _check_finite(self, losses: dict[str, float]) -> None:
        bad = [k for k, v in losses.items() if not math.isfinite(v)]
        if not bad and all(torch.isfinite(p).all() for p in self.policy.parameters()):
            return
        where = f"losses {bad}" if bad else "policy weights"
        raise TrainingDiverged(f"NaN/inf in {where} at iteration {self.iteration}; stopping. The last good "
                               f"checkpoint in {self.output_dir / 'checkpoints' / 'latest'} is intact.")

    def _metrics(self, losses: dict[str, float], sps: float, t_collect: float, t_learn: float) -> dict[str, float]:
        m = {**losses, "learning_rate": self.ppo.learning_rate, "steps_per_s": self.ctx.mean(sps) * self.ctx.world_size,
             "time/collect_s": t_collect, "time/learn_s": t_learn, "iteration": self.iteration}
        for name in self.envs:
            # every rank reduces the same tensors every iteration, with or without finished episodes
            local = torch.tensor([sum(self._ep_returns[name]), sum(self._ep_success[name]),
                                  sum(self._ep_lengths[name]), len(self._ep_returns[name])], dtype=torch.float64,
                                 device=self.ctx.device)
            total = self.ctx.sum(local)
            if total[3] > 0:
                m[f"{name}/return"] = float(total[0] / total[3])
                m[f"{name}/success"] = float(total[1] / total[3])
                m[f"{name}/episode_length"] = float(total[2] / total[3])
            self._ep_returns[name], self._ep_success[name], self._ep_lengths[name] = [], [], []
            env = self.envs[name]
            counts = env.safety.counts.copy()
            changed = self.ctx.sum(torch.as_tensor(counts - self._safety_seen[name], dtype=torch.float64,
                                                   device=self.ctx.device))
            self._safety_seen[name] = counts
            world_steps = env.num_envs * self.ppo.cfg.num_steps_per_env * self.ctx.world_size
            for kind, n in zip(env.safety.counts_by_kind(), changed.tolist(), strict=True):
                m[f"{name}/safety/{kind}"] = n / world_steps
        return m

    def _progress_line(self, m: dict[str, float], end: int, eta: float) -> str:
        for n in self.envs:
            if f"{n}/return" in m:
                self._last_return[n] = m[f"{n}/return"]
        rets = " ".join(f"{n} {r:.1f}" for n, r in self._last_return.items()) or "-"
        return (f"[train] it {self.iteration}/{end} | {m['steps_per_s']:,.0f} steps/s | return {rets} | "
                f"kl {m['kl']:.4f} lr {m['learning_rate']:.1e} | ETA {eta / 60:.1f} min")
