"""Tuning the adapter guard on the TUNING units (seeds 100-199) only: each guard setting's decisions and the
change it leaves (adapted minus zero-shot), per unit, with the guard's decision log.

The held-out units (seeds 200 and up) measure the chosen setting in ``benchmarks/adaptation.py``; this
script refuses them. It needs no oracle (it reports changes, not gap fractions), so it is cheap enough to
compare settings: per unit, zero-shot is measured once, then each setting learns for ``--steps`` from the
same start with the same learning seed and is evaluated on the same noise seeds.

    python benchmarks/guard_tuning.py --units 5 --settings off default m4:guard_episodes=4
    python benchmarks/guard_tuning.py --types cartpole_long --units 3 --settings default

A setting is ``off`` (no guard), ``default`` (the agent's defaults) or ``name:key=value,...`` with
``adapter.guard_*`` keys. Last line, e.g. ``guard_tuning default mean_change=+61.2 worst_change=-3.1 ...``.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from adaptation import SETUPS, evaluate, learned_adapter_alone, pretrain, run_agent  # beside this script
from result_record import write_result  # beside this script

from robot_agent.config import AdapterTrainingConfig

FIRST_HELD_OUT = 200


def parse_setting(text: str) -> tuple[str, bool, dict[str, Any]]:
    """``off`` | ``default`` | ``name:key=value,...`` -> (name, guard on, adapter.guard_* overrides)."""
    if text in ("off", "default"):
        return text, text == "default", {}
    name, _, pairs = text.partition(":")
    fields = {f.name: f.type for f in dataclasses.fields(AdapterTrainingConfig) if f.name.startswith("guard_")}
    settings: dict[str, Any] = {}
    for pair in filter(None, pairs.split(",")):
        key, _, value = pair.partition("=")
        if key not in fields:
            raise SystemExit(f"--settings {text}: unknown key {key!r} (one of {sorted(fields)})")
        settings[key] = {"int": int, "float": float, "bool": lambda v: v.lower() == "true"}[str(fields[key])](value)
    return name, True, settings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--types", nargs="+", default=["cartpole", "cartpole_long"], choices=sorted(SETUPS))
    ap.add_argument("--units", type=int, default=5)
    ap.add_argument("--first-unit", type=int, default=100)
    ap.add_argument("--settings", nargs="+", default=["off", "default"])
    ap.add_argument("--steps", type=int, default=20_000)
    ap.add_argument("--eval-episodes", type=int, default=30)
    ap.add_argument("--learn-seed", type=int, default=1234)
    ap.add_argument("--pretrain-iterations", type=int, default=150)
    ap.add_argument("--num-envs", type=int, default=256)
    ap.add_argument("--workdir", default="/tmp/guard_bench")
    ap.add_argument("--out", default="benchmarks/results/guard_tuning.json")
    args = ap.parse_args()
    if args.first_unit + args.units > FIRST_HELD_OUT:
        raise SystemExit(f"--first-unit/--units: units {FIRST_HELD_OUT} and up are held out; tune on 100-199")
    settings = [parse_setting(s) for s in args.settings]
    work, rows = Path(args.workdir), []
    for hw in args.types:
        task, gap = SETUPS[hw]["task"], SETUPS[hw]["gap"]
        base = pretrain(hw, task, args.pretrain_iterations, args.num_envs, work / f"pretrained-{hw}")
        for seed in range(args.first_unit, args.first_unit + args.units):
            udir = work / f"tune-{hw}-unit{seed}"
            shutil.rmtree(udir, ignore_errors=True)  # a rerun's adapters, guard memory and spool numbers
            a = evaluate(hw, task, base, seed, gap, udir / "zero_shot", adapter=False, episodes=args.eval_episodes).mean()
            for name, on, overrides in settings:
                t0 = time.perf_counter()
                learner = run_agent(hw, task, base, seed, gap, udir / name, adapter=True, learn=True,
                                    steps=args.steps, agent_seed=args.learn_seed, guard=on, adapter_settings=overrides)
                b = evaluate(hw, task, base, seed, gap, learned_adapter_alone(udir / name, udir / f"{name}_eval"),
                             adapter=True, episodes=args.eval_episodes).mean()
                guard = learner.adapters.guard
                log = [dataclasses.asdict(v) for v in guard.history] if guard is not None else []
                row = {"hardware": hw, "unit_seed": seed, "setting": name, "zero_shot": a, "adapted": b,
                       "change": b - a, "kept_version": learner.adapters.kept[1],
                       "explore_returns": list(learner.episode_returns), "verdicts": log,
                       "minutes": (time.perf_counter() - t0) / 60}
                rows.append(row)
                print(f"[{hw}-{seed}] {name:10s} zero-shot {a:6.1f} adapted {b:6.1f} change {b - a:+6.1f} "
                      f"kept v{row['kept_version']} ({row['minutes']:.1f} min)", flush=True)
                for v in log:
                    print(f"    v{v['version']:<3d} vs v{v['baseline_version']:<3d} {'KEPT  ' if v['kept'] else 'ROLLED'} "
                          f"cand {v['candidate_mean']:6.1f} (n={v['episodes']}) base {v['baseline_mean']:6.1f} "
                          f"(n={len(v['baseline_returns'])}) se {v['standard_error']:5.1f}", flush=True)
    lines = []
    for name, _, _ in settings:
        ch = np.array([r["change"] for r in rows if r["setting"] == name])
        lines.append(f"guard_tuning {name} mean_change={ch.mean():+.1f} worst_change={ch.min():+.1f} "
                     f"units_worse={int((ch < 0).sum())} units={len(ch)}")
        print(lines[-1], flush=True)
    write_result(args.out, " | ".join(lines), {"args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
