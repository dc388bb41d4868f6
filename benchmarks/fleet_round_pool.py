"""Fresh units across fleet_round runs: the fleet trunk against the sim-only control, pooled over every run in git.

Each ``fleet_round`` run (``benchmarks/results/fleet_round.json`` for seed 0, ``fleet_round_seed1.json`` for
seed 1) measures 8 fresh units zero-shot on the fleet-improved trunk and on a sim-only control given the same sim
iterations. One run's 8-unit interval is wide; this pools the runs: it reads every committed version of the two
result files (``git log``), keeps one run per (measured commit, seed), takes each fresh unit's mean difference
(fleet - control) over the runs it was in, and gives the 95% t-interval over units.

    python benchmarks/fleet_round_pool.py                      # every run in git
    python benchmarks/fleet_round_pool.py --commits 1f28610 4a03a80   # only runs measured at these commits

Last line, e.g. ``fleet_round_pool runs=14 units=16 fresh_vs_sim_control=12.0 low=-6.3 high=30.3 relative=0.042
units_better=9``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

from result_record import write_result  # beside this script
from seed_stats import t_interval

ROOT = Path(__file__).resolve().parents[1]
FILES = ("benchmarks/results/fleet_round.json", "benchmarks/results/fleet_round_seed1.json")


def committed_runs() -> dict[tuple[str, int], dict[str, Any]]:
    """Every committed fleet_round result with a sim-only control, by (measured commit, seed)."""
    runs: dict[tuple[str, int], dict[str, Any]] = {}
    for path in FILES:
        revs = subprocess.run(["git", "log", "--format=%H", "--", path], capture_output=True, text=True, cwd=ROOT,
                              check=True).stdout.split()
        for rev in revs:
            shown = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True, cwd=ROOT)
            try:
                result = json.loads(shown.stdout)
                units = result["fresh"]["units"]
            except (ValueError, KeyError, TypeError):
                continue  # deleted at that revision, or a run from before the control existed
            key = (result["commit"][:7], int(result["args"].get("seed", 0)))
            if units and all("sim_control" in u for u in units.values()) and key not in runs:  # newest first
                runs[key] = result
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--commits", nargs="*", default=None, help="measured commits (7 hex digits) to keep")
    ap.add_argument("--out", default="benchmarks/results/fleet_round_pool.json")
    args = ap.parse_args()
    runs = {k: v for k, v in committed_runs().items() if not args.commits or k[0] in args.commits}
    if not runs:
        raise SystemExit("no fleet_round runs with a sim-only control in git")
    diff: dict[str, list[float]] = defaultdict(list)
    control: dict[str, list[float]] = defaultdict(list)
    for (commit, seed), result in sorted(runs.items()):
        print(f"run {commit} seed {seed}: {result['summary_line']}")
        for unit, r in result["fresh"]["units"].items():
            diff[unit].append(r["fleet"]["mean"] - r["sim_control"]["mean"])
            control[unit].append(r["sim_control"]["mean"])
    means = [sum(v) / len(v) for v in diff.values()]
    mean, half = t_interval(means)
    base = sum(sum(v) / len(v) for v in control.values()) / len(control)
    better = sum(m > 0 for m in means)
    print(f"{len(means)} fresh units, each in {min(map(len, diff.values()))}-{max(map(len, diff.values()))} runs: "
          f"fleet - sim-only control {mean:+.1f} [{mean - half:+.1f}, {mean + half:+.1f}] (95% t over units), "
          f"{mean / base:+.1%} of the control's {base:.1f}; {better} of {len(means)} better")
    write_result(args.out, f"fleet_round_pool runs={len(runs)} units={len(means)} fresh_vs_sim_control={mean:.1f} "
                 f"low={mean - half:.1f} high={mean + half:.1f} relative={mean / base:.3f} units_better={better}",
                 {"runs": sorted(f"{c} seed {s}" for c, s in runs), "per_unit_difference": dict(diff),
                  "per_unit_control": dict(control), "control_mean": base})


if __name__ == "__main__":
    main()
