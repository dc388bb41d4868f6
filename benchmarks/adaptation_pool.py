"""On-robot adaptation over several learning seeds: one learning run per unit is a single draw.

``adaptation.py`` learns each unit's adapter once (``--learn-seed``), and a unit's gap recovered moves a lot with
the draws of that one run (the same unit has read -0.75 and +0.94 on two learning seeds). This reads result files of the same
units, code and settings that differ only in ``--learn-seed``, averages each unit's gap recovered (and its change)
over the seeds, and gives the 95% t-interval over units of those averages: the figure the target (>= 0.6 of the
gap) is judged by. As ``adaptation.py`` does, only units whose oracle beat zero-shot in every run (the gap has a
ceiling) count for the gap recovered; the others are counted apart. Each seed's own mean is printed beside it, and the worst unit's mean change.

    python benchmarks/adaptation.py --first-unit 200 --units 6 --jobs 2 --learn-seed 1235 \
        --out benchmarks/results/adaptation_learnseed1235.json     # and 1236; 1234 is adaptation.json
    python benchmarks/adaptation_pool.py benchmarks/results/adaptation.json \
        benchmarks/results/adaptation_learnseed1235.json benchmarks/results/adaptation_learnseed1236.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from result_record import write_result  # beside this script
from seed_stats import t_interval

# settings that must agree for runs to be draws of one measurement (everything but the learning seed and paths)
SAME = ("types", "units", "first_unit", "steps", "steps_per_update", "no_guard", "guard_episodes", "guard_floor",
        "hold_log_std", "eval_episodes", "pretrain_iterations", "num_envs", "oracle_max_iterations",
        "oracle_eval_every", "oracle_patience", "oracle_eval_episodes", "quick")


def pool(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-unit means over the runs, the interval over units, and each run's own mean; raises ValueError naming
    what differs when the runs are not draws of one measurement."""
    if len(runs) < 2:
        raise ValueError("give at least two result files (runs with different --learn-seed)")
    first = runs[0]
    for run in runs[1:]:
        for key in SAME:
            if run["args"].get(key) != first["args"].get(key):
                raise ValueError(f"args.{key} differs: {first['args'].get(key)!r} against {run['args'].get(key)!r}")
        if run["commit"] != first["commit"]:
            raise ValueError(f"measured at {first['commit'][:7]} and {run['commit'][:7]}: not the same code")
    if any(run.get("dirty") for run in runs):
        raise ValueError("a run was measured on a dirty tree: not the code its commit names")
    seeds = [run["args"]["learn_seed"] for run in runs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"learn seeds repeat: {seeds}")
    unit_sets = [sorted((row["hardware"], row["unit_seed"]) for row in run["rows"]) for run in runs]
    if any(units != unit_sets[0] for units in unit_sets) or len(set(unit_sets[0])) != len(unit_sets[0]):
        raise ValueError("the runs measured different units (or one unit twice)")
    by_unit: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for run in runs:
        for row in run["rows"]:
            by_unit.setdefault((row["hardware"], row["unit_seed"]), []).append(row)
    no_ceiling = sorted(f"{hw}-{seed}" for (hw, seed), rows in by_unit.items()
                        if not all(r.get("oracle_is_ceiling", True) for r in rows))
    every = [{"hardware": hw, "unit_seed": seed,
              "gap_recovered": float(np.mean([r["gap_recovered"] for r in rows])),
              "gap_recovered_per_seed": [r["gap_recovered"] for r in rows],
              "change": float(np.mean([r["change"] for r in rows])),
              "change_per_seed": [r["change"] for r in rows]}
             for (hw, seed), rows in sorted(by_unit.items())]
    worst = min(every, key=lambda u: u["change"])  # "no unit worse" counts every unit, a ceiling or not
    by_unit = {k: rows for k, rows in by_unit.items() if f"{k[0]}-{k[1]}" not in no_ceiling}
    units = [u for u in every if f"{u['hardware']}-{u['unit_seed']}" not in no_ceiling]
    if not units:
        raise ValueError("no unit's oracle beat zero-shot in every run: no gap to recover")
    mean, ci = t_interval([u["gap_recovered"] for u in units])
    per_type = {hw: t_interval([u["gap_recovered"] for u in units if u["hardware"] == hw])
                for hw in sorted({u["hardware"] for u in units})}
    return {"learn_seeds": seeds, "measured_commit": first["commit"], "units": units,
            "gap_recovered": mean, "ci95": ci, "per_type": {hw: {"mean": m, "ci95": c} for hw, (m, c) in per_type.items()},
            "per_seed": [float(np.mean([r["gap_recovered"] for r in run["rows"]
                                        if (r["hardware"], r["unit_seed"]) in by_unit])) for run in runs],
            "oracle_not_ceiling": no_ceiling,
            "worst_unit": f"{worst['hardware']}-{worst['unit_seed']}", "worst_change": worst["change"],
            "units_worse": sum(u["change"] < 0 for u in every),
            "unit_runs_worse": sum(c < 0 for u in every for c in u["change_per_seed"])}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+", help="adaptation.py result files that differ only in --learn-seed")
    ap.add_argument("--out", default="benchmarks/results/adaptation_pool.json")
    args = ap.parse_args(argv)
    p = pool([json.loads(Path(f).read_text()) for f in args.results])
    for u in p["units"]:
        print(f"[{u['hardware']}-{u['unit_seed']}] gap recovered {u['gap_recovered']:5.2f} "
              f"(per seed {', '.join(f'{g:.2f}' for g in u['gap_recovered_per_seed'])}) change {u['change']:+6.1f}")
    for hw, s in p["per_type"].items():
        print(f"{hw}: {s['mean']:.2f} +- {s['ci95']:.2f}")
    line = (f"adaptation_pool gap_recovered={p['gap_recovered']:.2f} ci95={p['ci95']:.2f} "
            f"per_seed={','.join(f'{g:.2f}' for g in p['per_seed'])} worst_change={p['worst_change']:.1f} "
            f"units_worse={p['units_worse']} unit_runs_worse={p['unit_runs_worse']} seeds={len(p['learn_seeds'])} "
            f"units={len(p['units'])}")
    write_result(args.out, line, {"args": {**vars(args)}, **p})


if __name__ == "__main__":
    main()
