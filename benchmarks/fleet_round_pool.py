"""Fresh units across fleet_round runs: the fleet trunk against the sim-only control, pooled over every run in git.

Each ``fleet_round`` run (``benchmarks/results/fleet_round*.json``: seed 0, ``_seed1``, other v1 trunks'
``_v1seed<p>``) measures 8 fresh units zero-shot on the fleet-improved trunk and on a sim-only control given the
same sim iterations. One run's 8-unit interval is wide; this pools the runs: it reads every committed version of
those result files (``git log``), keeps one run per (measured commit, seed, pretrain seed), takes each fresh
unit's mean difference (fleet - control) over the runs it was in, and gives the 95% t-interval over units.

The sim-only v1 trunk the rounds start from is itself a draw: the same code and seed train another v1 on another
machine (float kernels differ), and the verdict has swung with it. So the runs are also grouped by v1 (its
weights' sha256 where the result records it, runs pretrained with the same settings in the same minute, or
runs whose fresh units return exactly the same on v1 share one: see ``v1_draws``) and each v1's mean relative
difference is printed: read the pooled interval together with how many v1 draws it spans and how many of them
the fleet trunk beat the control on.

    python benchmarks/fleet_round_pool.py                      # every run in git
    python benchmarks/fleet_round_pool.py --commits 1f28610 4a03a80   # only runs measured at these commits
    python benchmarks/fleet_round_pool.py --pretrain-iterations 160 --out benchmarks/results/fleet_round_pool_pretrain160.json

Each v1's runs are averaged and the v1 draws, the independent samples, get their own 95% t-interval
(``v1_mean``, ``v1_low``, ``v1_high``: the relative difference fleet vs control).

Last line, e.g. ``fleet_round_pool runs=22 units=16 fresh_vs_sim_control=-4.4 low=-24.3 high=15.6 relative=-0.016
units_better=6 v1_draws=4 v1_better=1 v1_mean=-0.112 v1_low=-0.301 v1_high=0.077``.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from result_record import ROOT, committed_results, write_result  # beside this script
from seed_stats import t_interval

POOL_FILE = "benchmarks/results/fleet_round_pool.json"
POOL_FILES = "benchmarks/results/fleet_round_pool*.json"  # this script's outputs, for every pretraining length


PRETRAIN_ITERATIONS = 40  # fleet_round's default: a v1 far from converged (see BENCHMARKS.md)


def committed_runs(pretrain_iterations: int = PRETRAIN_ITERATIONS, root: Path = ROOT
                   ) -> dict[tuple[str, int, int], dict[str, Any]]:
    """Every committed fleet_round result with a sim-only control whose v1 was pretrained for
    ``pretrain_iterations``, by (measured commit, seed, pretrain seed). v1s pretrained longer answer another
    question (what fleet data adds to a trunk more sim would improve less), so they are pooled apart. ``root``: the
    repository (this one unless a test names another)."""
    runs: dict[tuple[str, int, int], dict[str, Any]] = {}
    for _, result in committed_results("benchmarks/results/fleet_round*.json", exclude=POOL_FILES, root=root):
        try:
            units = result["fresh"]["units"]
            key = (result["commit"][:7], int(result["args"].get("seed", 0)), int(result["args"].get("pretrain_seed", 0)))
            if int(result["args"].get("pretrain_iterations", PRETRAIN_ITERATIONS)) != pretrain_iterations:
                continue
        except (KeyError, TypeError, AttributeError):
            continue  # a run from before the control existed
        if not (units and all("sim_control" in u for u in units.values())):
            continue
        if key not in runs:  # newest first
            runs[key] = result
        elif runs[key].get("adapter") != result.get("adapter"):  # two arms at one commit: never pool or drop one
            raise SystemExit(f"fleet_round runs at {key[0]} with seed {key[1]}, pretrain seed {key[2]} ran different "
                             f"adapter settings ({runs[key].get('adapter')} and {result.get('adapter')}): pool them "
                             "by --commits from separate commits")
    return runs


def refuse_mixed_adapters(runs: dict[tuple[str, int, int], dict[str, Any]]) -> None:
    """Exit naming the commits of each adapter setting when ``runs`` carry more than one (a record's ``adapter``
    block; none on runs before 2026-12-05): fresh units on trunks that robots of other settings improved are
    other draws, and pooling them answers neither arm."""
    by_setting: dict[str, set[str]] = defaultdict(set)
    for (commit, _, _), result in runs.items():
        by_setting[json.dumps(result.get("adapter"), sort_keys=True)].add(commit)
    if len(by_setting) > 1:
        raise SystemExit("these runs ran different adapter settings; pick one with --commits: " + "; ".join(
            f"{setting} at {' '.join(sorted(commits))}" for setting, commits in sorted(by_setting.items())))


def named_runs(lengths: list[int], commits: list[str] | None = None) -> list[tuple[str, dict[str, Any]]]:
    """(name, result) of the committed runs (:func:`committed_runs`) for each v1 pretraining length in ``lengths``,
    measured at ``commits`` (7-hex prefixes; None: all), in order; a name says commit, seeds and a length other
    than the default."""
    runs = {(*k, n): v for n in lengths for k, v in committed_runs(n).items() if not commits or k[0] in commits}
    return [(f"{c} seed {s} pretrain seed {p}" + (f" ({n} pretrain iterations)" if n != PRETRAIN_ITERATIONS else ""), r)
            for (c, s, p, n), r in sorted(runs.items())]


def v1_draws(runs: dict[tuple[str, int, int], dict[str, Any]]) -> dict[tuple[str, int, int], str]:
    """A label per run naming its v1 trunk: runs with the same v1 weights digest, pretrained with the same settings
    in the same minute (two runs started side by side each pretrain their own copy),
    or whose fresh units return exactly the same on v1 share a label (the union of those). A label is the group's
    digest where any run records it, else its earliest pretraining date, and always names the group's first run,
    so two groups never share one."""
    parent = {k: k for k in runs}

    def root(k: tuple[str, int, int]) -> tuple[str, int, int]:
        while parent[k] != k:
            k = parent[k]
        return k

    seen: dict[Any, tuple[str, int, int]] = {}
    for k, result in sorted(runs.items()):
        pre = result.get("pretrain", {})
        cache = (json.dumps(pre.get("key"), sort_keys=True), str(pre.get("date"))[:16]) if pre.get("date") else None
        marks = [("sha", pre.get("weights_sha256")), ("pretrained", cache),
                 ("v1_returns", tuple(sorted((u, round(r["sim_only"]["mean"], 6))
                                            for u, r in result["fresh"]["units"].items())))]
        for mark in marks:
            if mark[1] is None:
                continue
            if mark in seen:
                parent[root(k)] = root(seen[mark])
            else:
                seen[mark] = k
    groups: dict[tuple[str, int, int], list[tuple[str, int, int]]] = defaultdict(list)
    for k in sorted(runs):
        groups[root(k)].append(k)
    labels: dict[tuple[str, int, int], str] = {}
    for members in groups.values():
        pres = [runs[k].get("pretrain", {}) for k in members]
        digest = next((str(p["weights_sha256"])[:12] for p in pres if p.get("weights_sha256")), "")
        date = min((str(p["date"]) for p in pres if p.get("date")), default="?")
        first = min(members, key=lambda k: str(runs[k].get("date", "")))
        label = f"{digest or 'trained ' + date} (first: {first[0]} seed {first[1]} pretrain seed {first[2]})"
        labels.update(dict.fromkeys(members, label))
    return labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--commits", nargs="*", default=None, help="measured commits (7 hex digits) to keep")
    ap.add_argument("--pretrain-iterations", type=int, default=PRETRAIN_ITERATIONS,
                    help="pool only runs whose v1 was pretrained this long")
    ap.add_argument("--out", default="benchmarks/results/fleet_round_pool.json")
    args = ap.parse_args()
    runs = {k: v for k, v in committed_runs(args.pretrain_iterations).items()
            if not args.commits or k[0] in args.commits}
    if not runs:
        raise SystemExit("no fleet_round runs with a sim-only control in git")
    refuse_mixed_adapters(runs)
    diff: dict[str, list[float]] = defaultdict(list)
    control: dict[str, list[float]] = defaultdict(list)
    labels = v1_draws(runs)
    by_v1: dict[str, list[float]] = defaultdict(list)  # per v1: each run's relative difference over its units
    for (commit, seed, pseed), result in sorted(runs.items()):
        print(f"run {commit} seed {seed} pretrain seed {pseed} (v1 {labels[commit, seed, pseed]}): "
              f"{result['summary_line']}")
        units = result["fresh"]["units"]
        for unit, r in units.items():
            diff[unit].append(r["fleet"]["mean"] - r["sim_control"]["mean"])
            control[unit].append(r["sim_control"]["mean"])
        by_v1[labels[commit, seed, pseed]].append(
            sum(r["fleet"]["mean"] - r["sim_control"]["mean"] for r in units.values())
            / sum(r["sim_control"]["mean"] for r in units.values()))
    v1_mean = {v1: sum(rel) / len(rel) for v1, rel in by_v1.items()}
    for v1, rel in sorted(by_v1.items()):
        print(f"v1 {v1}: {len(rel)} run(s), fleet vs sim-only control {v1_mean[v1]:+.1%} "
              f"({', '.join(f'{x:+.1%}' for x in rel)})")
    # the v1 draws are the independent samples here: runs on one v1 share it, and the sign has followed the v1
    v1_avg, v1_half = t_interval(list(v1_mean.values()))
    print(f"over {len(v1_mean)} v1 draws (each its runs' mean): fleet vs sim-only control {v1_avg:+.1%} "
          f"[{v1_avg - v1_half:+.1%}, {v1_avg + v1_half:+.1%}] (95% t over v1 draws); better on "
          f"{sum(m > 0 for m in v1_mean.values())} of {len(v1_mean)}")
    means = [sum(v) / len(v) for v in diff.values()]
    mean, half = t_interval(means)
    base = sum(sum(v) / len(v) for v in control.values()) / len(control)
    better = sum(m > 0 for m in means)
    print(f"{len(means)} fresh units, each in {min(map(len, diff.values()))}-{max(map(len, diff.values()))} runs: "
          f"fleet - sim-only control {mean:+.1f} [{mean - half:+.1f}, {mean + half:+.1f}] (95% t over units), "
          f"{mean / base:+.1%} of the control's {base:.1f}; {better} of {len(means)} better")
    write_result(args.out, f"fleet_round_pool runs={len(runs)} units={len(means)} fresh_vs_sim_control={mean:.1f} "
                 f"low={mean - half:.1f} high={mean + half:.1f} relative={mean / base:.3f} units_better={better} "
                 f"v1_draws={len(v1_mean)} v1_better={sum(m > 0 for m in v1_mean.values())} v1_mean={v1_avg:.3f} "
                 f"v1_low={v1_avg - v1_half:.3f} v1_high={v1_avg + v1_half:.3f}",
                 {"runs": sorted(f"{c} seed {s} pretrain seed {p}" for c, s, p in runs), "v1_of_run":
                  {f"{c} seed {s} pretrain seed {p}": v for (c, s, p), v in labels.items()},
                  "v1_relative_difference": dict(by_v1), "per_unit_difference": dict(diff),
                  "per_unit_control": dict(control), "control_mean": base})


if __name__ == "__main__":
    main()
