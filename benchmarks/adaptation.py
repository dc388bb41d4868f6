"""On-robot adaptation: how much of a unit's reality gap its adapter recovers within 20,000 control steps.

For each hardware type, a policy is pretrained in sim with the task's own domain randomisation. Then,
for each stand-in unit (its own true physics, drawn from a reality gap that lies partly outside the
training ranges, plus sensor noise), three policies drive the same unit through the real robot agent
(same goals, same noise seeds, deterministic actions):

  (a) zero-shot: the pretrained policy as it is;
  (b) adapted:   after the agent trained the unit's adapter on its own experience for ``--steps``
                 control steps (trunk, stems and heads frozen), with the adapter guard on (an update is
                 kept only if it does not measure worse than the last kept one) or off (``--no-guard``);
  (c) oracle:    the pretrained policy fine-tuned in sim on an exact replica of the unit
                 (``benchmarks/unit_replica.py``: physics, latency, joint offsets, sensor noise and bias,
                 period jitter, home noise), until its deterministic return on the replica stops improving
                 (no gain beyond one standard error in ``--oracle-patience`` evaluations, every
                 ``--oracle-eval-every`` iterations, at most ``--oracle-max-iterations``); the best
                 evaluation's weights are the oracle.

The oracle must be a ceiling: a unit where (c) <= (a) gets a warning line, is flagged in the results
and left out of the gap fractions. gap recovered = (b - a) / (c - a) per unit; the script prints mean and a
95% t-interval over units, the median, the pooled fraction sum(b - a) / sum(c - a) (which a unit with a
tiny gap cannot swing), the absolute mean returns a, b and c, and the worst unit's change b - a (what the
guard exists for). Each return is a mean over ``--eval-episodes`` episodes: one weak unit's deterministic
episodes range from a failed swing-up (~40) to ~390, so 6 episodes left +-50 of noise on each of a, b, c.

    python benchmarks/adaptation.py --first-unit 200               # held-out units, guard on
    python benchmarks/adaptation.py --first-unit 200 --no-guard    # the same units, guard off (oracles cached)
    python benchmarks/adaptation.py --first-unit 200 --guard-floor 0.1  # the guard with a floor (adapter.guard_floor)
    python benchmarks/adaptation.py --first-unit 200 --hold-log-std  # the noise held (adapter.learn_log_std=false)
    python benchmarks/adaptation.py --types arm2_planar            # reach: its gap barely hurts (BENCHMARKS.md)
    python benchmarks/adaptation.py --quick                        # one unit, few steps: does it run end to end

Last line, e.g. ``adaptation gap_recovered=0.72 worst_change=-12.3 guard=on units=20 oracle_not_ceiling=0
steps=20000``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import multiprocessing
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from result_record import write_result  # beside this script
from unit_replica import make_unit_replica, pinned_randomization  # beside this script

import sim
from hardware.profile import load_profile
from hardware.tasks.config import task_config
from robot_agent.agent import ADAPTER_FILE, RobotAgent
from robot_agent.config import AdapterTrainingConfig, AgentConfig
from shared_policy.config import AdapterLearnerConfig, PolicyConfig, PPOConfig
from shared_policy.tracking import NullLogger
from sim.evaluation import evaluate as evaluate_in_sim
from sim.pretrain import PretrainRunner
from sim.standin import MuJoCoStandInDriver, reality_gap
from sim.unit_gaps import UNIT_SETUPS

SETUPS = UNIT_SETUPS
QUICK = {"types": ["cartpole"], "units": 1, "steps": 2000, "eval_episodes": 3, "pretrain_iterations": 10,
         "oracle_max_iterations": 10, "oracle_eval_every": 5, "oracle_eval_episodes": 16, "num_envs": 64,
         "guard_episodes": 2, "workdir": "/tmp/adaptation_bench_quick"}


def pretrain(hw: str, task: str, iterations: int, num_envs: int, out: Path, seed: int = 0) -> Path:
    """A policy trained in sim with the task's domain randomisation (cached in ``out``)."""
    path = out / "checkpoints" / "latest"
    if (path / "manifest.json").exists():
        return path
    runner = PretrainRunner([sim.make_env(task, hw, num_envs, seed=seed)], PolicyConfig(), PPOConfig(), out,
                            NullLogger(), checkpoint_every=10**6, seed=seed)
    runner.learn(iterations, log_every=25)
    return runner.save()


def oracle(hw: str, task: str, start: Path, gap: dict, unit_seed: int, out: Path, args: argparse.Namespace
           ) -> tuple[Path, dict[str, Any]]:
    """The pretrained policy fine-tuned on a replica of the unit until its return plateaus (cached in ``out``)."""
    # the start's manifest holds its files' digests: a retrained pretrained policy is another start
    key = {"start": hashlib.sha256((start / "manifest.json").read_bytes()).hexdigest(), "gap": gap, "unit_seed": unit_seed, "num_envs": args.num_envs,
           **{k: getattr(args, k) for k in ("oracle_max_iterations", "oracle_eval_every", "oracle_patience",
                                              "oracle_eval_episodes")}}
    record, best_path = out / "oracle.json", out / "checkpoints" / "best"
    if record.is_file() and (best_path / "manifest.json").exists():
        info = json.loads(record.read_text())
        if info.get("key") == key:
            return best_path, info
    shutil.rmtree(out, ignore_errors=True)
    env = make_unit_replica(task, hw, gap, unit_seed, args.num_envs, seed=7)
    eval_env = make_unit_replica(task, hw, gap, unit_seed, args.oracle_eval_episodes, seed=8)
    runner = PretrainRunner([env], PolicyConfig(), PPOConfig(), out, NullLogger(), checkpoint_every=10**6, seed=7)
    runner.resume(start)
    first = runner.iteration

    def measure() -> tuple[float, float]:
        r = evaluate_in_sim(runner.policy, eval_env, args.oracle_eval_episodes)
        return r.mean_return, r.ci95 / 1.96

    best, best_se = measure()
    runner.save("best")
    curve, stale = [(0, best)], 0
    while runner.iteration - first < args.oracle_max_iterations and stale < args.oracle_patience:
        runner.learn(min(args.oracle_eval_every, first + args.oracle_max_iterations - runner.iteration),
                     log_every=10**6)
        ret, se = measure()
        curve.append((runner.iteration - first, ret))
        if ret > best + max(best_se, se):  # a gain beyond the evaluations' noise
            best, best_se, stale = ret, se, 0
            runner.save("best")
        else:
            stale += 1
    info = {"key": key, "iterations": runner.iteration - first, "converged": stale >= args.oracle_patience,
            "replica_return": best, "curve": curve}
    record.write_text(json.dumps(info, indent=1))
    return best_path, info


def run_agent(hw: str, task: str, checkpoint: Path, unit_seed: int, gap: dict, state_dir: Path, *,
              adapter: bool, learn: bool, episodes: int = 0, steps: int = 0,
              steps_per_update: int = AdapterLearnerConfig.steps_per_update, agent_seed: int = 1234,
              guard: bool = True, adapter_settings: dict[str, Any] | None = None) -> RobotAgent:
    """The real robot agent on the unit, on a simulated clock (realtime=false); ``adapter_settings``: other
    ``adapter.*`` values than the config's defaults (the guard's, ``learn_log_std``)."""
    cfg = AgentConfig(robot_id=f"{hw}-{unit_seed}", hardware=hw, checkpoint=str(checkpoint),
                      state_dir=str(state_dir), max_episodes=episodes, max_steps=steps, seed=agent_seed,
                      status_every_s=1e9)
    cfg.driver.options = {"realtime": False, "seed": unit_seed, "gap": gap}
    cfg.adapter.enabled, cfg.adapter.learn, cfg.adapter.explore = adapter, learn, learn
    cfg.adapter.wait_for_learner = True
    cfg.adapter.steps_per_update = steps_per_update
    cfg.adapter.guard = guard
    for key, value in (adapter_settings or {}).items():
        setattr(cfg.adapter, key, value)
    cfg.logger.backend = "none"
    agent = RobotAgent(cfg, task_config(task))
    agent.run()
    return agent


def evaluate(hw: str, task: str, checkpoint: Path, unit_seed: int, gap: dict, state_dir: Path, adapter: bool,
             episodes: int) -> np.ndarray:
    """Returns of deterministic actions over ``episodes`` episodes on the unit (episode i has the same noise
    seeds whichever policy drives)."""
    agent = run_agent(hw, task, checkpoint, unit_seed, gap, state_dir, adapter=adapter, learn=False,
                      episodes=episodes)
    return np.asarray(agent.episode_returns, dtype=float)


def learned_adapter_alone(learned: Path, to: Path) -> Path:
    """A fresh state directory holding only the adapter ``learned`` kept (none: the trunk alone); ``to`` must not
    exist yet (the caller clears it: a reused one keeps its spool's numbers and any older adapter). Its evaluation
    numbers its episodes from 0, like the zero-shot and oracle evaluations' fresh directories: the agent draws each
    episode's goals by its number, and the learning run used the first numbers of its own directory."""
    to.mkdir(parents=True, exist_ok=True)
    if (learned / ADAPTER_FILE).exists():
        shutil.copy2(learned / ADAPTER_FILE, to / ADAPTER_FILE)
    return to


def change_standard_error(before: np.ndarray, after: np.ndarray) -> float:
    """Standard error of mean(after) - mean(before), paired by episode (the same noise seeds)."""
    return float(np.std(after - before, ddof=1) / math.sqrt(len(after)))


def t_interval(x: list[float]) -> tuple[float, float]:
    """Mean and half-width of the 95% t-interval."""
    a = np.asarray(x, dtype=float)
    if len(a) == 0:
        return float("nan"), float("nan")
    if len(a) < 2:
        return float(a.mean()), float("nan")
    t95 = {2: 12.71, 3: 4.30, 4: 3.18, 5: 2.78, 6: 2.57, 7: 2.45, 8: 2.36, 9: 2.31, 10: 2.26, 11: 2.23, 12: 2.20,
           13: 2.18, 14: 2.16, 15: 2.14, 16: 2.13, 17: 2.12, 18: 2.11, 19: 2.10, 20: 2.09}.get(len(a), 2.0)
    return float(a.mean()), float(t95 * a.std(ddof=1) / math.sqrt(len(a)))


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Gap fractions over the units whose oracle is a ceiling; absolute returns and the worst change over all."""
    ceiling = [r for r in rows if r["oracle_is_ceiling"]]
    m, h = t_interval([r["gap_recovered"] for r in ceiling])
    worst = min(rows, key=lambda r: r["change"])
    gap = sum(r["oracle"] - r["zero_shot"] for r in ceiling)
    return {"mean": m, "ci95": h, "median": float(np.median([r["gap_recovered"] for r in ceiling])) if ceiling
            else float("nan"), "pooled": sum(r["change"] for r in ceiling) / gap if gap else float("nan"),
            "units": len(rows), "oracle_not_ceiling": len(rows) - len(ceiling),
            **{k: float(np.mean([r[k] for r in rows])) for k in ("zero_shot", "adapted", "oracle")},
            "worst_change": worst["change"], "worst_unit": f"{worst['hardware']}-{worst['unit_seed']}",
            "units_worse": sum(r["change"] < 0 for r in rows),
            # the stated tolerance: worse than zero-shot beyond 2 paired standard errors of the unit's change
            "units_worse_beyond_2se": sum(r["change"] < -2 * r["change_se"] for r in rows)}


def measure_unit(hw: str, task: str, gap: dict, base: Path, seed: int, work: Path, args: argparse.Namespace
                 ) -> dict[str, Any]:
    """Zero-shot, adapted and oracle returns of one unit."""
    udir = work / f"{hw}-unit{seed}"
    # A robot agent continues from the adapter saved in its state directory (as a restarted robot
    # should): a rerun in the same workdir would otherwise keep learning from the last run's adapter.
    shutil.rmtree(udir, ignore_errors=True)
    t0 = time.perf_counter()
    eps = args.eval_episodes
    a_eps = evaluate(hw, task, base, seed, gap, udir / "zero_shot", adapter=False, episodes=eps)
    learner = run_agent(hw, task, base, seed, gap, udir / "adapted", adapter=True, learn=True, steps=args.steps,
                        steps_per_update=args.steps_per_update, agent_seed=args.learn_seed, guard=not args.no_guard,
                        adapter_settings={"guard_episodes": args.guard_episodes, "guard_floor": args.guard_floor,
                                          "learn_log_std": not args.hold_log_std})
    b_eps = evaluate(hw, task, base, seed, gap, learned_adapter_alone(udir / "adapted", udir / "adapted_eval"),
                     adapter=True, episodes=eps)
    oracle_ck, info = oracle(hw, task, base, gap, seed, work / f"oracle-{hw}-unit{seed}", args)
    c = float(evaluate(hw, task, oracle_ck, seed, gap, udir / "oracle_eval", adapter=False, episodes=eps).mean())
    a, b = float(a_eps.mean()), float(b_eps.mean())
    status, guard = learner.status(), learner.adapters.guard
    row = {"hardware": hw, "unit_seed": seed,
           "params": pinned_randomization(MuJoCoStandInDriver(load_profile(hw), gap=gap, seed=seed)),
           "zero_shot": a, "adapted": b, "oracle": c, "change": b - a,
           "change_se": change_standard_error(a_eps, b_eps), "oracle_is_ceiling": c > a,
           "gap_recovered": (b - a) / (c - a) if c > a else float("nan"),
           "oracle_iterations": info["iterations"], "oracle_converged": info["converged"],
           "oracle_replica_return": info["replica_return"], "guard": not args.no_guard,
           "guard_floor": args.guard_floor, "learn_log_std": not args.hold_log_std,
           "adapter_updates": learner.adapter_updates, "adapter_version": learner.runtime.adapter_version,
           "adapter_kept": status["adapter_kept"], "adapter_rolled_back": status["adapter_rolled_back"],
           "learn_steps": learner.steps, "adapter_kept_version": learner.adapters.kept[1],
           "guard_verdicts": [dataclasses.asdict(v) for v in guard.history] if guard is not None else [],
           "learning_returns": list(learner.episode_returns),
           "zero_shot_returns": a_eps.tolist(), "adapted_returns": b_eps.tolist(),
           "minutes": (time.perf_counter() - t0) / 60}
    print(f"[{hw}] unit {seed}: zero-shot {a:7.1f} | adapted {b:7.1f} (change {b - a:+7.1f}; {row['adapter_updates']} "
          f"updates, {row['adapter_kept']} kept, {row['adapter_rolled_back']} rolled back) | oracle {c:7.1f} "
          f"({info['iterations']} it{'' if info['converged'] else ', at the cap'}) | change se {row['change_se']:.1f} | recovered "
          f"{row['gap_recovered']:.2f} ({row['minutes']:.1f} min)", flush=True)
    if not row["oracle_is_ceiling"]:
        print(f"WARNING: [{hw}] unit {seed}: oracle {c:.1f} <= zero-shot {a:.1f}: not a ceiling, left out of the "
              "gap fractions", flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--types", nargs="+", default=["cartpole", "cartpole_long"], choices=sorted(SETUPS))
    ap.add_argument("--units", type=int, default=10, help="stand-in units per type")
    ap.add_argument("--first-unit", type=int, default=100, help="unit seeds are first-unit, first-unit + 1, ...")
    ap.add_argument("--steps", type=int, default=20_000, help="on-robot control steps for adapter learning")
    ap.add_argument("--steps-per-update", type=int, default=AdapterLearnerConfig.steps_per_update)
    ap.add_argument("--no-guard", action="store_true", help="keep every adapter update (no trial, no rollback)")
    ap.add_argument("--guard-episodes", type=int, default=AdapterTrainingConfig.guard_episodes,
                    help="episodes per side of the guard's comparison")
    ap.add_argument("--guard-floor", type=float, default=AdapterTrainingConfig.guard_floor,
                    help="adapter.guard_floor: also roll back updates measuring more than this fraction worse")
    ap.add_argument("--hold-log-std", action="store_true",
                    help="adapter.learn_log_std=false: learn the mean actions only, the exploration noise held")
    ap.add_argument("--eval-episodes", type=int, default=30, help="episodes per measured return")
    ap.add_argument("--pretrain-iterations", type=int, default=150)
    ap.add_argument("--oracle-max-iterations", type=int, default=400, help="the oracle's cap")
    ap.add_argument("--oracle-eval-every", type=int, default=20, help="iterations between the oracle's evaluations")
    ap.add_argument("--oracle-patience", type=int, default=3,
                    help="evaluations without a gain beyond their standard error before the oracle stops")
    ap.add_argument("--oracle-eval-episodes", type=int, default=64, help="replica episodes per oracle evaluation")
    ap.add_argument("--num-envs", type=int, default=256)
    ap.add_argument("--learn-seed", type=int, default=1234,
                    help="the learning agent's seed (exploration noise, learner shuffles): another draw of (b)")
    ap.add_argument("--jobs", type=int, default=1, help="units measured at once, each in its own process")
    ap.add_argument("--quick", action="store_true", help=f"a smoke run of the whole pipeline: {QUICK}")
    ap.add_argument("--workdir", default="/tmp/adaptation_bench")
    ap.add_argument("--out", default="",
                    help="default: benchmarks/results/adaptation[_no_guard].json (--quick: in the workdir)")
    args = ap.parse_args()
    if args.quick:
        for k, v in QUICK.items():
            setattr(args, k, v)
    name = f"adaptation{'_no_guard' if args.no_guard else ''}.json"
    args.out = args.out or str(Path(args.workdir if args.quick else "benchmarks/results") / name)
    work = Path(args.workdir)
    t_start = time.perf_counter()
    units = []
    for hw in args.types:
        setup = SETUPS[hw]
        task, gap = setup["task"], setup["gap"]
        reality_gap(gap)  # refuse a malformed gap before any training
        base = pretrain(hw, task, args.pretrain_iterations, args.num_envs, work / f"pretrained-{hw}")
        print(f"[{hw}] pretrained policy: {base}", flush=True)
        units += [(hw, task, gap, base, args.first_unit + u, work, args) for u in range(args.units)]
    if args.jobs > 1:  # units are independent (own state directories, simulated clocks): the same returns
        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            rows = list(pool.map(measure_unit, *zip(*units, strict=True)))
    else:
        rows = [measure_unit(*unit) for unit in units]
    summary = {name: summarize(sel) for name, sel in
               [*((hw, [r for r in rows if r["hardware"] == hw]) for hw in args.types), ("all", rows)]}
    guard = "off" if args.no_guard else f"on floor={args.guard_floor:g}" if args.guard_floor else "on"
    guard += " log_std=held" if args.hold_log_std else ""
    for name, s in summary.items():
        print(f"{name:12s} gap recovered {s['mean']:.2f} +- {s['ci95']:.2f} (95% t-interval, "
              f"{s['units'] - s['oracle_not_ceiling']} units with a ceiling) | median {s['median']:.2f} | pooled "
              f"{s['pooled']:.2f} | returns zero-shot {s['zero_shot']:.1f}, adapted {s['adapted']:.1f}, oracle "
              f"{s['oracle']:.1f} | worst change {s['worst_change']:+.1f} ({s['worst_unit']}; {s['units_worse']} "
              f"units worse, {s['units_worse_beyond_2se']} beyond 2 standard errors) | guard {guard}")
    s = summary["all"]
    line = (f"adaptation gap_recovered={s['mean']:.2f} worst_change={s['worst_change']:.1f} guard={guard} "
            f"worse_beyond_2se={s['units_worse_beyond_2se']} units={len(rows)} oracle_not_ceiling={s['oracle_not_ceiling']} steps={args.steps}")
    write_result(args.out, line, {"args": vars(args), "setups": SETUPS, "rows": rows, "summary": summary,
                                  "minutes": (time.perf_counter() - t_start) / 60})

if __name__ == "__main__":
    main()
