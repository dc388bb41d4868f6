"""On-robot adaptation: how much of a unit's reality gap its adapter recovers within 20,000 control steps.

For each hardware type, a policy is pretrained in sim with the task's own domain randomisation. Then,
for each stand-in unit (its own true physics, drawn from a reality gap that lies partly outside the
training ranges, plus sensor noise), three policies drive the same unit through the real robot agent
(same goals, same noise seeds, deterministic actions):

  (a) zero-shot: the pretrained policy as it is;
  (b) adapted:   after the agent trained the unit's adapter on its own experience for ``--steps``
                 control steps (trunk, stems and heads frozen);
  (c) oracle:    the pretrained policy fine-tuned in sim on exactly that unit's physical parameters.

gap recovered = (b - a) / (c - a) per unit; the script prints mean and a 95% t-interval over units, the
median, and the pooled fraction sum(b - a) / sum(c - a) (which a unit with a tiny gap cannot swing).
Each return is a mean over ``--eval-episodes`` episodes: one weak unit's deterministic episodes range
from a failed swing-up (~40) to ~390, so 6 episodes left +-50 of noise on each of a, b and c.

    python benchmarks/adaptation.py                     # cartpole and cartpole_long, 10 units each
    python benchmarks/adaptation.py --types arm2_planar  # reach: its gap barely hurts (see BENCHMARKS.md)
    python benchmarks/adaptation.py --units 2 --steps 4000 --pretrain-iterations 30   # a quick look

Last line, e.g. ``adaptation gap_recovered=0.72 units=10 steps=20000``.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

import sim
from hardware.profile import load_profile
from hardware.tasks.config import task_config
from robot_agent.agent import RobotAgent
from robot_agent.config import AgentConfig
from shared_policy.config import AdapterLearnerConfig, PolicyConfig, PPOConfig
from shared_policy.tracking import NullLogger
from sim.pretrain import PretrainRunner
from sim.standin import MuJoCoStandInDriver, reality_gap

# Per hardware type: its task and the reality gap its units are drawn from. Ranges marked "outside" lie
# beyond the task's training randomisation (configs/task/*.yaml).
CARTPOLE_GAP = {
    "physics": {"motor_strength": [0.5, 0.7],  # outside: trained on [0.8, 1.2]
                "mass_scale": [1.0, 1.4],  # partly outside [0.8, 1.2]
                "damping_scale": [1.0, 3.0],  # partly outside [0.5, 1.5]
                "latency_steps": [1, 2]},  # partly outside [0, 1]
    "joint_pos_noise": 0.01, "joint_vel_noise": 0.05}
SETUPS: dict[str, dict[str, Any]] = {
    "cartpole": {"task": "cartpole_swingup", "gap": CARTPOLE_GAP},
    "cartpole_long": {"task": "cartpole_swingup", "gap": CARTPOLE_GAP},
    "arm2_planar": {"task": "reach", "gap": {
        "physics": {"motor_strength": [0.5, 0.7],  # outside: trained on [0.9, 1.1]
                    "kp_scale": [0.6, 0.9],  # partly outside [0.8, 1.2]
                    "mass_scale": [1.1, 1.5],  # partly outside [0.8, 1.2]
                    "latency_steps": [1, 2]},  # partly outside [0, 1]
        "joint_pos_noise": 0.005, "joint_vel_noise": 0.02}},
}
PARAM_FIELDS = ("friction", "mass_scale", "base_mass_add", "damping_scale", "armature_scale", "motor_strength",
                "kp_scale", "kd_scale")


def pretrain(hw: str, task: str, iterations: int, num_envs: int, out: Path, seed: int = 0) -> Path:
    """A policy trained in sim with the task's domain randomisation (cached in ``out``)."""
    path = out / "checkpoints" / "latest"
    if (path / "manifest.json").exists():
        return path
    runner = PretrainRunner([sim.make_env(task, hw, num_envs, seed=seed)], PolicyConfig(), PPOConfig(), out,
                            NullLogger(), checkpoint_every=10**6, seed=seed)
    runner.learn(iterations, log_every=25)
    return runner.save()


def unit_randomization(hw: str, gap: dict, unit_seed: int) -> dict[str, Any]:
    """Sim randomisation collapsed onto one unit's true parameters (what the oracle trains on)."""
    p = MuJoCoStandInDriver(load_profile(hw), gap=gap, seed=unit_seed).true_params
    r: dict[str, Any] = {f: [float(getattr(p, f)[0])] * 2 for f in PARAM_FIELDS}
    r["com_offset"] = [0.0, 0.0]
    r["latency_steps"] = [int(p.latency_steps[0])] * 2
    return r


def oracle(hw: str, task: str, start: Path, randomization: dict, iterations: int, num_envs: int, out: Path) -> Path:
    """The pretrained policy fine-tuned in sim on exactly one unit's physics."""
    env = sim.make_env(task, hw, num_envs, seed=7, randomization=randomization)
    runner = PretrainRunner([env], PolicyConfig(), PPOConfig(), out, NullLogger(), checkpoint_every=10**6, seed=7)
    runner.resume(start)
    runner.learn(iterations, log_every=10**6)
    return runner.save()


def run_agent(hw: str, task: str, checkpoint: Path, unit_seed: int, gap: dict, state_dir: Path, *,
              adapter: bool, learn: bool, episodes: int = 0, steps: int = 0,
              steps_per_update: int = AdapterLearnerConfig.steps_per_update, agent_seed: int = 1234) -> RobotAgent:
    """The real robot agent on the unit, on a simulated clock (realtime=false)."""
    cfg = AgentConfig(robot_id=f"{hw}-{unit_seed}", hardware=hw, checkpoint=str(checkpoint),
                      state_dir=str(state_dir), max_episodes=episodes, max_steps=steps, seed=agent_seed,
                      status_every_s=1e9)
    cfg.driver.options = {"realtime": False, "seed": unit_seed, "gap": gap}
    cfg.adapter.enabled, cfg.adapter.learn, cfg.adapter.explore = adapter, learn, learn
    cfg.adapter.wait_for_learner = True
    cfg.adapter.steps_per_update = steps_per_update
    cfg.logger.backend = "none"
    agent = RobotAgent(cfg, task_config(task))
    agent.run()
    return agent


def evaluate(hw: str, task: str, checkpoint: Path, unit_seed: int, gap: dict, state_dir: Path, adapter: bool,
             episodes: int) -> float:
    """Mean return of deterministic actions over ``episodes`` episodes on the unit."""
    agent = run_agent(hw, task, checkpoint, unit_seed, gap, state_dir, adapter=adapter, learn=False,
                      episodes=episodes)
    return float(np.mean(agent.episode_returns))


def t_interval(x: list[float]) -> tuple[float, float]:
    """Mean and half-width of the 95% t-interval."""
    a = np.asarray(x, dtype=float)
    if len(a) < 2:
        return float(a.mean()), float("nan")
    t95 = {2: 12.71, 3: 4.30, 4: 3.18, 5: 2.78, 6: 2.57, 7: 2.45, 8: 2.36, 9: 2.31, 10: 2.26, 11: 2.23, 12: 2.20,
           13: 2.18, 14: 2.16, 15: 2.14, 16: 2.13, 17: 2.12, 18: 2.11, 19: 2.10, 20: 2.09}.get(len(a), 2.0)
    return float(a.mean()), float(t95 * a.std(ddof=1) / math.sqrt(len(a)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--types", nargs="+", default=["cartpole", "cartpole_long"], choices=sorted(SETUPS))
    ap.add_argument("--units", type=int, default=10, help="stand-in units per type")
    ap.add_argument("--first-unit", type=int, default=100, help="unit seeds are first-unit, first-unit + 1, ...")
    ap.add_argument("--steps", type=int, default=20_000, help="on-robot control steps for adapter learning")
    ap.add_argument("--steps-per-update", type=int, default=AdapterLearnerConfig.steps_per_update)
    ap.add_argument("--eval-episodes", type=int, default=30, help="episodes per measured return")
    ap.add_argument("--pretrain-iterations", type=int, default=150)
    ap.add_argument("--oracle-iterations", type=int, default=60)
    ap.add_argument("--num-envs", type=int, default=256)
    ap.add_argument("--learn-seed", type=int, default=1234,
                    help="the learning agent's seed (exploration noise, learner shuffles): another draw of (b)")
    ap.add_argument("--workdir", default="/tmp/adaptation_bench")
    ap.add_argument("--out", default="benchmarks/results/adaptation.json")
    args = ap.parse_args()
    work = Path(args.workdir)
    rows: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    for hw in args.types:
        setup = SETUPS[hw]
        task, gap_dict = setup["task"], setup["gap"]
        reality_gap(gap_dict)  # refuse a malformed gap before any training
        base = pretrain(hw, task, args.pretrain_iterations, args.num_envs, work / f"pretrained-{hw}")
        print(f"[{hw}] pretrained policy: {base}", flush=True)
        for u in range(args.units):
            seed = args.first_unit + u
            udir = work / f"{hw}-unit{seed}"
            # A robot agent continues from the adapter saved in its state directory (as a restarted robot
            # should): a rerun in the same workdir would otherwise keep learning from the last run's adapter.
            shutil.rmtree(udir, ignore_errors=True)
            t0 = time.perf_counter()
            eps = args.eval_episodes
            a = evaluate(hw, task, base, seed, gap_dict, udir / "zero_shot", adapter=False, episodes=eps)
            learner = run_agent(hw, task, base, seed, gap_dict, udir / "adapted", adapter=True, learn=True,
                                steps=args.steps, steps_per_update=args.steps_per_update,
                                agent_seed=args.learn_seed)
            b = evaluate(hw, task, base, seed, gap_dict, udir / "adapted", adapter=True, episodes=eps)
            rand = unit_randomization(hw, gap_dict, seed)
            oracle_ck = oracle(hw, task, base, rand, args.oracle_iterations, args.num_envs, udir / "oracle")
            c = evaluate(hw, task, oracle_ck, seed, gap_dict, udir / "oracle_eval", adapter=False, episodes=eps)
            recovered = (b - a) / (c - a) if abs(c - a) > 1e-9 else float("nan")
            rows.append({"hardware": hw, "unit_seed": seed, "params": rand, "zero_shot": a, "adapted": b,
                         "oracle": c, "gap_recovered": recovered, "adapter_updates": learner.adapter_updates,
                         "adapter_version": learner.runtime.adapter_version, "learn_steps": learner.steps,
                         "minutes": (time.perf_counter() - t0) / 60})
            print(f"[{hw}] unit {seed}: zero-shot {a:8.2f} | adapted {b:8.2f} ({learner.adapter_updates} updates, "
                  f"{learner.steps} steps) | oracle {c:8.2f} | recovered {recovered:.2f} "
                  f"({rows[-1]['minutes']:.1f} min)", flush=True)
    summary: dict[str, Any] = {}
    for name, sel in [*((hw, [r for r in rows if r["hardware"] == hw]) for hw in args.types), ("all", rows)]:
        m, h = t_interval([r["gap_recovered"] for r in sel])
        median = float(np.median([r["gap_recovered"] for r in sel]))
        pooled = sum(r["adapted"] - r["zero_shot"] for r in sel) / sum(r["oracle"] - r["zero_shot"] for r in sel)
        summary[name] = {"mean": m, "ci95": h, "median": median, "pooled": pooled}
        print(f"{name:12s} gap recovered {m:.2f} +- {h:.2f} (95% t-interval, {len(sel)} units) | median "
              f"{median:.2f} | pooled {pooled:.2f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"date": datetime.now(UTC).isoformat(), "args": vars(args), "setups": SETUPS,
                               "rows": rows, "summary": summary,
                               "minutes": (time.perf_counter() - t_start) / 60}, indent=2))
    print(f"adaptation gap_recovered={summary['all']['mean']:.2f} units={len(rows)} steps={args.steps}")


if __name__ == "__main__":
    main()
