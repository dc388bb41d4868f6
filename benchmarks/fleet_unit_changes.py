"""What moves a fleet unit's return over the fleet rounds: the trunk swaps, or the unit's own on-robot learning?

``fleet_round`` measures each unit on its exact replica (deterministic mean actions, 32 episodes a policy) at two
points of every round k (``rounds[k].units[robot]``):

- ``old``: the trunk the unit ran in round k with the adapter it uploaded in that round (its on-robot learning of
  the round included);
- ``after``: what it runs at the round's end: the new trunk with its rebased adapter when the candidate was
  promoted and the unit not held back, else ``old``.

A unit's "before" is round 1's ``old`` and its "after" the last round's ``after``, so its change splits exactly:

    after_K - old_1 = sum_k (after_k - old_k)          the trunk swaps (0 in a round without one)
                    + sum_{k>=2} (old_k - after_{k-1})  on-robot learning on a fixed trunk, rounds 2..K

Each part is taken relative to the unit's before, like ``worst_unit_delta``. Printed per run and over all
committed runs (``fleet_round_pool``'s, v1s pretrained 40 and 160 iterations): the mean of each part over units;
how many unit-rounds of on-robot learning lost more than ``--tolerance`` (default the benchmark's -10%) of the
unit's before on an unchanged trunk, and how many swaps did; and for each unit beyond the tolerance, which part
lost more.

    python benchmarks/fleet_unit_changes.py
    python benchmarks/fleet_unit_changes.py --commits 4d1143e 21b2fec
    python benchmarks/fleet_unit_changes.py --exploring   # mean actions beside exploring, where runs measured both

``--exploring`` reads the runs whose units were also measured acting as on-robot (``old_explore`` and
``after_explore``: actions sampled with the policy's std, as the robots, their adapter guard and the hub's canaries
see them) and sets each unit's change both ways side by side; last line, e.g. ``fleet_unit_changes_exploring
runs=6 units=48 beyond_mean_actions=3 beyond_exploring=1 beyond_both=1 ...``.

Last line, e.g. ``fleet_unit_changes runs=36 units=288 beyond=12 beyond_on_robot=8 beyond_swaps=4
on_robot_mean=-0.031 swaps_mean=0.210 on_robot_losses=30 swap_losses=20``.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import numpy as np
from fleet_round_pool import PRETRAIN_ITERATIONS, named_runs  # beside this script
from fleet_round_summary import EXPLORING, MEAN_ACTIONS
from result_record import write_result
from seed_stats import t_interval, welch_difference


def unit_parts(result: dict[str, Any], arms: tuple[str, str] = MEAN_ACTIONS) -> dict[str, dict[str, Any]]:
    """Per unit of a run: before, after, the swaps' and on-robot learning's parts (relative to before), and each
    round's part, as the module docstring splits them, read from the rounds' ``arms`` (old, after). Units
    missing from a round, or without those arms in it, are left out."""
    rounds = result.get("rounds") or []
    if not rounds:
        return {}
    was, now = arms
    out = {}
    for robot in rounds[0].get("units", {}):
        rows = [r.get("units", {}).get(robot) for r in rounds]
        if any(row is None or was not in row or now not in row for row in rows):
            continue
        before = rows[0][was]["mean"]
        if before <= 0:
            continue
        swaps = [(row[now]["mean"] - row[was]["mean"]) / before for row in rows]
        on_robot = [(rows[k][was]["mean"] - rows[k - 1][now]["mean"]) / before for k in range(1, len(rows))]
        se = math.hypot(rows[0][was].get("se", math.nan), rows[-1][now].get("se", math.nan))  # nan: not recorded
        out[robot] = {"before": before, "after": rows[-1][now]["mean"], "swaps": sum(swaps),
                      "on_robot": sum(on_robot), "swap_by_round": swaps, "on_robot_by_round": on_robot,
                      "change": (rows[-1][now]["mean"] - before) / before, "change_ci95": 1.96 * se / before}
    return out


def tally(units: list[dict[str, Any]], tolerance: float) -> dict[str, Any]:
    """Over units (of one run or many): the parts' means, the single steps that lost more than ``tolerance``, and
    the units beyond it by the part that lost more."""
    n = len(units)
    beyond = [u for u in units if u["change"] < tolerance]
    return {"units": n, "on_robot_mean": sum(u["on_robot"] for u in units) / n if n else float("nan"),
            "swaps_mean": sum(u["swaps"] for u in units) / n if n else float("nan"),
            "on_robot_steps": sum(len(u["on_robot_by_round"]) for u in units),
            "on_robot_losses": sum(x < tolerance for u in units for x in u["on_robot_by_round"]),
            "swap_losses": sum(x < tolerance for u in units for x in u["swap_by_round"]),
            "beyond": len(beyond), "beyond_on_robot": sum(u["on_robot"] < u["swaps"] for u in beyond),
            "beyond_swaps": sum(u["swaps"] <= u["on_robot"] for u in beyond),
            # the replicas' noise decides many units: those whose whole 95% interval lies past, or short of, it
            "surely_beyond": sum(u["change"] + u["change_ci95"] < tolerance for u in units),
            "surely_within": sum(u["change"] - u["change_ci95"] > tolerance for u in units)}


def run_figures(runs: dict[str, dict[str, dict[str, Any]]], tolerance: float) -> dict[str, list[float]]:
    """Per run (units of one run share a trunk, so runs, not units, are the independent draws): the mean over its
    units of on-robot learning, of swaps and of the whole change, and its counts of units beyond ``tolerance``."""
    out: dict[str, list[float]] = {k: [] for k in ("on_robot", "swaps", "change", "beyond", "surely_beyond")}
    for units in runs.values():
        t = tally(list(units.values()), tolerance)
        for k, v in (("on_robot", t["on_robot_mean"]), ("swaps", t["swaps_mean"]),
                     ("change", sum(u["change"] for u in units.values()) / len(units)),
                     ("beyond", t["beyond"]), ("surely_beyond", t["surely_beyond"])):
            out[k].append(float(v))
    return out


def set_against(runs: dict[str, dict[str, dict[str, Any]]], other: dict[str, dict[str, dict[str, Any]]],
                tolerance: float) -> dict[str, dict[str, float]]:
    """``runs`` minus ``other`` (two sets of runs, e.g. a change and the code before it) for each :func:`run_figures`
    figure: both means and the difference with its 95% Welch interval over runs."""
    a, b = run_figures(runs, tolerance), run_figures(other, tolerance)
    # the same configuration (seeds and v1) in both sets: its runs pair up, which removes the configurations' spread
    keys, other_keys = [configuration(n) for n in runs], [configuration(n) for n in other]
    # only configurations that ran once in each set: with two runs of one, which pairs with which is arbitrary
    paired = sorted(c for c in set(keys) & set(other_keys) if keys.count(c) == other_keys.count(c) == 1)
    out = {}
    for k in a:
        diff, half = welch_difference(a[k], b[k])
        out[k] = {"runs": float(np.mean(a[k])), "against": float(np.mean(b[k])), "difference": diff,
                  "interval": [diff - half, diff + half]}
        if len(paired) >= 2:
            d = [a[k][keys.index(c)] - b[k][other_keys.index(c)] for c in paired]
            mean, half = t_interval(d)
            out[k]["paired"] = {"configurations": len(paired), "difference": mean, "interval": [mean - half, mean + half]}
    return out


def configuration(name: str) -> str:
    """A run's name (:func:`fleet_round_pool.named_runs`) without its commit: its seeds and v1 length."""
    return name.split(" ", 1)[1] if " " in name else name


def print_against(name: str, cmp: dict[str, dict[str, float]], n: int, m: int) -> None:
    """One line per figure of :func:`set_against`."""
    for k, c in cmp.items():
        lo, hi = c["interval"]
        p = c.get("paired")
        paired = (f"; paired over {p['configurations']} configurations {p['difference']:+.3f} "
                  f"[{p['interval'][0]:+.3f}, {p['interval'][1]:+.3f}]" if p else "")
        print(f"{name} {k} per run: {c['runs']:+.3f} ({n} runs) vs {c['against']:+.3f} ({m} runs): "
              f"{c['difference']:+.3f} [{lo:+.3f}, {hi:+.3f}] (95% Welch over runs){paired}", flush=True)


def beside_exploring(result: dict[str, Any], tolerance: float) -> dict[str, dict[str, Any]]:
    """Per unit of a run measured both ways: its change on mean actions and acting as on-robot (exploring), each
    split as :func:`unit_parts` splits it, and whether each lies beyond ``tolerance``."""
    mean, explore = unit_parts(result), unit_parts(result, EXPLORING)
    return {r: {"mean_actions": mean[r], "exploring": explore[r], "beyond_mean_actions": mean[r]["change"] < tolerance,
                "beyond_exploring": explore[r]["change"] < tolerance} for r in mean if r in explore}


def exploring_main(args: argparse.Namespace) -> None:
    """``--exploring``: the runs whose units were measured both ways, side by side."""
    per_run = {}
    for name, result in named_runs(args.pretrain_iterations, args.commits):
        units = beside_exploring(result, args.tolerance)
        if not units:
            continue
        per_run[name] = units
        print(f"run {name}: " + "; ".join(
            f"{r} {u['mean_actions']['change']:+.1%} / {u['exploring']['change']:+.1%}" for r, u in units.items())
            + " (mean actions / exploring)", flush=True)
    every = [u for units in per_run.values() for u in units.values()]
    if not every:
        raise SystemExit("no committed fleet_round run measured its units exploring (see --commits)")
    m = tally([u["mean_actions"] for u in every], args.tolerance)
    e = tally([u["exploring"] for u in every], args.tolerance)
    both = sum(u["beyond_mean_actions"] and u["beyond_exploring"] for u in every)
    runs_held = {k: sum(all(not u[f"beyond_{k}"] for u in units.values()) for units in per_run.values())
                 for k in ("mean_actions", "exploring")}
    print(f"all: {len(every)} units in {len(per_run)} runs; beyond {args.tolerance:+.0%}: {m['beyond']} on mean "
          f"actions, {e['beyond']} exploring, {both} both; tolerance held in {runs_held['mean_actions']} runs on mean "
          f"actions, {runs_held['exploring']} exploring; on-robot learning on an unchanged trunk moved a unit "
          f"{m['on_robot_mean']:+.1%} on mean actions, {e['on_robot_mean']:+.1%} exploring; single rounds of it "
          f"losing more than {-args.tolerance:.0%}: {m['on_robot_losses']} and {e['on_robot_losses']} of "
          f"{m['on_robot_steps']}; with their whole 95% interval beyond: {m['surely_beyond']} on mean actions, "
          f"{e['surely_beyond']} exploring (within: {m['surely_within']}, {e['surely_within']})", flush=True)
    by_type = own_learning_by_type(per_run)
    for hw, t in by_type.items():
        print(f"{hw}: own learning on an unchanged trunk {t['mean_actions']:+.1%} on mean actions, "
              f"{t['exploring']:+.1%} exploring, exploring minus mean actions {t['difference']:+.1%} +- "
              f"{t['ci95']:.1%} (95% t, paired by unit, {t['units']} units)", flush=True)
    write_result(args.out, f"fleet_unit_changes_exploring runs={len(per_run)} units={len(every)} "
                 f"beyond_mean_actions={m['beyond']} beyond_exploring={e['beyond']} beyond_both={both} "
                 f"surely_beyond_mean_actions={m['surely_beyond']} surely_beyond_exploring={e['surely_beyond']} "
                 f"runs_held_mean_actions={runs_held['mean_actions']} runs_held_exploring={runs_held['exploring']} "
                 f"on_robot_mean_actions={m['on_robot_mean']:.3f} on_robot_exploring={e['on_robot_mean']:.3f} "
                 f"on_robot_losses_mean_actions={m['on_robot_losses']} on_robot_losses_exploring={e['on_robot_losses']}",
                 {"tolerance": args.tolerance, "mean_actions": m, "exploring": e, "by_type": by_type, "runs": per_run,
                  **against_exploring(args, per_run)})


def own_learning_by_type(runs: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per hardware type (the robot id's prefix): each unit's own learning on an unchanged trunk on mean actions and
    exploring, their means and the paired difference (exploring minus mean actions) with its 95% t-interval."""
    pairs: dict[str, list[tuple[float, float]]] = {}
    for units in runs.values():
        for robot, u in units.items():
            pairs.setdefault(robot.rsplit("-", 1)[0], []).append((u["mean_actions"]["on_robot"],
                                                                  u["exploring"]["on_robot"]))
    out = {}
    for hw, p in sorted(pairs.items()):
        d, h = t_interval([e - m for m, e in p])
        out[hw] = {"units": len(p), "mean_actions": float(np.mean([m for m, _ in p])),
                   "exploring": float(np.mean([e for _, e in p])), "difference": d, "ci95": h}
    return out


def against_exploring(args: argparse.Namespace, runs: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """``--against``: both ways, each run figure of ``runs`` against the same of the other commits' runs."""
    if args.against is None:
        return {}
    other = {n: u for n, r in named_runs(args.pretrain_iterations, args.against)
             if (u := beside_exploring(r, args.tolerance))}
    if not other:
        raise SystemExit(f"--against {' '.join(args.against)}: no committed run measured its units exploring")
    out = {}
    for arm in ("mean_actions", "exploring"):
        def pick(rs: dict[str, dict[str, dict[str, Any]]], arm: str = arm) -> dict[str, dict[str, Any]]:
            return {n: {r: u[arm] for r, u in units.items()} for n, units in rs.items()}
        out[arm] = set_against(pick(runs), pick(other), args.tolerance)
        print_against(arm.replace("_", " "), out[arm], len(runs), len(other))
    return {"against": {"commits": args.against, **out}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--commits", nargs="*", default=None, help="measured commits (7 hex digits) to keep")
    ap.add_argument("--tolerance", type=float, default=-0.10, help="a loss below this fraction of before counts")
    ap.add_argument("--pretrain-iterations", type=int, nargs="*", default=[PRETRAIN_ITERATIONS, 160])
    ap.add_argument("--against", nargs="*", default=None,
                    help="measured commits of a second set of runs: each per-run figure of --commits' runs minus "
                         "theirs, with a 95%% interval over runs (e.g. a change against the code before it)")
    ap.add_argument("--exploring", action="store_true",
                    help="compare each unit's change on mean actions with its change acting as on-robot")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    if args.exploring:
        args.out = args.out or "benchmarks/results/fleet_unit_changes_exploring.json"
        return exploring_main(args)
    args.out = args.out or "benchmarks/results/fleet_unit_changes.json"
    every, per_run = [], {}
    for name, result in named_runs(args.pretrain_iterations, args.commits):
        parts = unit_parts(result)
        if not parts:
            continue
        per_run[name] = parts
        every += parts.values()
        t = tally(list(parts.values()), args.tolerance)
        worst = min(parts, key=lambda r: parts[r]["change"])
        w = parts[worst]
        print(f"run {name}: swaps {t['swaps_mean']:+.1%}, on-robot learning {t['on_robot_mean']:+.1%} (means over "
              f"units); worst {worst} {w['change']:+.1%} = swaps {w['swaps']:+.1%} + on-robot {w['on_robot']:+.1%}",
              flush=True)
    if not every:
        raise SystemExit("no committed fleet_round run with per-round replicas matches (see --commits)")
    t = tally(every, args.tolerance)
    print(f"all: {t['units']} units in {len(per_run)} runs; over units the swaps moved a unit {t['swaps_mean']:+.1%} "
          f"of its before, its own learning on an unchanged trunk {t['on_robot_mean']:+.1%}; single steps losing more "
          f"than {-args.tolerance:.0%}: {t['on_robot_losses']} of {t['on_robot_steps']} rounds of on-robot learning, "
          f"{t['swap_losses']} swaps; {t['beyond']} units ended beyond {args.tolerance:+.0%}: "
          f"{t['beyond_on_robot']} lost more to on-robot learning, {t['beyond_swaps']} to swaps; "
          f"{t['surely_beyond']} with their whole 95% interval beyond, {t['surely_within']} within", flush=True)
    write_result(args.out, f"fleet_unit_changes runs={len(per_run)} units={t['units']} beyond={t['beyond']} "
                 f"surely_beyond={t['surely_beyond']} surely_within={t['surely_within']} "
                 f"beyond_on_robot={t['beyond_on_robot']} beyond_swaps={t['beyond_swaps']} "
                 f"on_robot_mean={t['on_robot_mean']:.3f} swaps_mean={t['swaps_mean']:.3f} "
                 f"on_robot_losses={t['on_robot_losses']} swap_losses={t['swap_losses']}",
                 {"tolerance": args.tolerance, "all": t, "runs": per_run, **against(args, per_run)})


def against(args: argparse.Namespace, runs: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """``--against``: each run figure of ``runs`` against the same of the other commits' runs (mean actions)."""
    if args.against is None:
        return {}
    other = {n: p for n, r in named_runs(args.pretrain_iterations, args.against) if (p := unit_parts(r))}
    if not other:
        raise SystemExit(f"--against {' '.join(args.against)}: no committed run with per-round replicas matches")
    cmp = set_against(runs, other, args.tolerance)
    print_against("mean actions", cmp, len(runs), len(other))
    return {"against": {"commits": args.against, "mean_actions": cmp}}


if __name__ == "__main__":
    main()
