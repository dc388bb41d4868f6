"""Sim pretraining with the policy on a GPU: a check for machines that have one (CI has none).

The worlds step on the CPU (MuJoCo); observations come back as CUDA tensors and the policy, its
rollout storage and its PPO update live on the GPU. The script trains cart-pole for a few iterations
on CUDA and on the CPU in the same run, checks where every tensor lives, writes a checkpoint from the
CUDA run, and evaluates it on the CPU (checkpoints are device-free).

    python benchmarks/cuda_pretrain.py --iterations 20 --num-envs 4096

Last line, e.g. ``cuda_pretrain ok device=NVIDIA H100 steps_per_s_cuda=61000 steps_per_s_cpu=48000``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

import sim
from shared_policy.checkpoint import load_checkpoint
from shared_policy.config import PolicyConfig, PPOConfig
from shared_policy.tracking import NullLogger
from sim.evaluation import evaluate
from sim.pretrain import PretrainRunner, hardware_spec


def train(device: str, iterations: int, num_envs: int, out: Path) -> tuple[PretrainRunner, float]:
    """Train cart-pole on ``device``; returns the runner and env steps per second."""
    env = sim.make_env("cartpole_swingup", "cartpole", num_envs, seed=0, device=device)
    runner = PretrainRunner([env], PolicyConfig(), PPOConfig(), out, NullLogger(), checkpoint_every=10**6)
    runner.learn(1, log_every=10**6)  # warm-up: first-call costs are not throughput
    t0 = time.perf_counter()
    runner.learn(iterations, log_every=max(1, iterations // 4))
    steps = iterations * num_envs * runner.ppo.cfg.num_steps_per_env
    return runner, steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--num-envs", type=int, default=4096)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("cuda_pretrain: no CUDA device here; run it on a machine with a GPU")
    with tempfile.TemporaryDirectory() as tmp:
        runner, sps_cuda = train("cuda", args.iterations, args.num_envs, Path(tmp) / "cuda")
        places = {p.device.type for p in runner.policy.parameters()} | {b.device.type for b in runner.policy.buffers()}
        store = next(iter(runner.ppo.storage.values()))
        assert places == {"cuda"} and store.obs.device.type == "cuda", (places, store.obs.device)
        ret = runner.history[-1].get("cartpole/return", float("nan"))
        ckpt = runner.save()
        env = sim.make_env("cartpole_swingup", "cartpole", 64, seed=1)
        policy, _ = load_checkpoint(ckpt, expected={"cartpole": hardware_spec(env)})
        result = evaluate(policy, env, 64)
        _, sps_cpu = train("cpu", args.iterations, args.num_envs, Path(tmp) / "cpu")
    print(f"CUDA run: policy and storage on {torch.cuda.get_device_name()}, training return {ret:.1f}; "
          f"its checkpoint on the CPU: {result.summary()}")
    print(f"env steps/s with {args.num_envs} worlds: policy on CUDA {sps_cuda:,.0f}, on CPU {sps_cpu:,.0f}")
    print(f"cuda_pretrain ok device={torch.cuda.get_device_name().replace(' ', '_')} "
          f"steps_per_s_cuda={sps_cuda:.0f} steps_per_s_cpu={sps_cpu:.0f}")


if __name__ == "__main__":
    main()
