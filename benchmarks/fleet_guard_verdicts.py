"""What each fleet unit's adapter guard decided in the fleet rounds, and what it let through.

``fleet_round`` (since 68e1ef6) keeps every unit's guard verdicts per round (``rounds[k].guard_verdicts``: the
candidate, kept or rolled back, by the floor alone or not, the candidate's and the reference's mean returns over
the exploring episodes compared, the standard error, the trunk). Over the committed runs that have them this
prints per run the decisions made, kept, rolled back and rolled back by the floor alone, and how many kept updates
measured more than ``--tolerance`` (a fraction, as fleet_round's) below their reference; then, for each unit that
ended beyond the tolerance (on mean actions or as the robots act), its decisions round by round (``r2 t1 v5 kept
-12%``: round 2, trunk v1, adapter v5 kept though it measured 12% below its reference). A round's verdicts cover
both its phases: the units' episodes before the learner and the canary roll-out after it. Last, the kept updates
measured again later (:func:`kept_then_later`): how much of their trial's measured gain their later episodes keep.

    python benchmarks/fleet_guard_verdicts.py
    python benchmarks/fleet_guard_verdicts.py --commits 8c424b8

Last line, e.g. ``fleet_guard_verdicts runs=14 decisions=700 kept=400 rolled_back=300 by_floor=120
kept_measured_below=25``.
"""

from __future__ import annotations

import argparse
from typing import Any

from fleet_round_pool import PRETRAIN_ITERATIONS, named_runs  # beside this script
from result_record import write_result
from seed_stats import t_interval


def relative(v: dict[str, Any]) -> float:
    """The candidate's measured change as a fraction of the reference's magnitude (nan for a zero reference)."""
    base = abs(v["baseline_mean"])
    return (v["candidate_mean"] - v["baseline_mean"]) / base if base else float("nan")


def run_tally(result: dict[str, Any], tolerance: float) -> dict[str, Any]:
    """Counts over one run's verdicts, and each unit's verdicts by round."""
    by_unit: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for r in result["rounds"]:
        for robot, verdicts in r.get("guard_verdicts", {}).items():
            by_unit.setdefault(robot, []).extend((r["round"], v) for v in verdicts)
    every = [v for vs in by_unit.values() for _, v in vs]
    kept = [v for v in every if v["kept"]]
    return {"decisions": len(every), "kept": len(kept), "rolled_back": len(every) - len(kept),
            "by_floor": sum(bool(v.get("by_floor")) for v in every),
            "kept_measured_below": sum(relative(v) < -tolerance for v in kept),
            "kept_then_later": [p for _, vs in sorted(by_unit.items()) for p in kept_then_later([v for _, v in vs])],
            "by_unit": by_unit}


def kept_then_later(verdicts: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """For each kept update that later served as a reference: its trial's measured change and the change its later
    episodes show, both against the reference mean it was kept against (relative to that mean's size). A later
    verdict's reference returns hold the trial's episodes first (until they age out, from the front) and those
    after it: the later ones are what follows the trial's still-present tail. Only kept updates that later became
    the best-measured reference count, which favours ones that measured well later. Selection shows as later <
    trial: updates kept because their few trial episodes were lucky."""
    out = []
    for i, v in enumerate(verdicts):
        base = abs(v["baseline_mean"])
        if not v["kept"] or not base or not v.get("candidate_returns"):
            continue
        again = [w for w in verdicts[i + 1:] if w["baseline_version"] == v["version"]]
        if not again:
            continue
        ref = list(max((w["baseline_returns"] for w in again), key=len))  # its largest sample
        later = after_trial(list(v["candidate_returns"]), ref)
        if later:
            out.append((relative(v), (sum(later) / len(later) - v["baseline_mean"]) / base))
    return out


def after_trial(trial: list[float], ref: list[float]) -> list[float]:
    """The episodes of ``ref`` (a kept version's recent returns) after its trial's, which lead it until they age
    out from the front: by position, since equal returns repeat (a deterministic stand-in replays episodes)."""
    for k in range(len(trial) + 1):  # the first k trial episodes aged out
        if ref[:len(trial) - k] == trial[k:]:
            return ref[len(trial) - k:]
    return ref


def beyond(result: dict[str, Any]) -> dict[str, list[str]]:
    """The units beyond the tolerance at the run's end, on mean actions and as the robots act."""
    f = result["fleet"]
    return {"mean actions": f["units_beyond_tolerance"],
            "exploring": f.get("exploring", {}).get("units_beyond_tolerance", [])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--commits", nargs="*", default=None, help="measured commits (7 hex digits) to keep")
    ap.add_argument("--tolerance", type=float, default=0.10,
                    help="as fleet_round's: a kept update measuring more than this fraction below its reference counts")
    ap.add_argument("--pretrain-iterations", type=int, nargs="*", default=[PRETRAIN_ITERATIONS, 160])
    ap.add_argument("--out", default="benchmarks/results/fleet_guard_verdicts.json")
    args = ap.parse_args()
    runs = {}
    for name, result in named_runs(args.pretrain_iterations, args.commits):
        if not any("guard_verdicts" in r for r in result.get("rounds", [])):
            continue  # measured before the rounds kept the verdicts
        t = run_tally(result, args.tolerance)
        ends = beyond(result)
        runs[name] = {k: v for k, v in t.items() if k != "by_unit"} | {"beyond": ends}
        print(f"run {name}: {t['decisions']} decisions, {t['kept']} kept ({t['kept_measured_below']} measuring more than "
              f"{args.tolerance:.0%} below their reference), {t['rolled_back']} rolled back ({t['by_floor']} by the floor alone)", flush=True)
        for robot in sorted(set(ends["mean actions"]) | set(ends["exploring"])):
            where = " and ".join(k for k, units in ends.items() if robot in units)
            steps = ", ".join(f"r{k} t{v.get('trunk_version', '?')} v{v['version']} {'kept' if v['kept'] else 'back'} "
                              f"{relative(v):+.0%}{' (floor)' if v.get('by_floor') else ''}"
                              for k, v in t["by_unit"].get(robot, []))
            print(f"  {robot} beyond on {where}: {steps or 'no decisions'}", flush=True)
    if not runs:
        raise SystemExit("no committed fleet_round run keeps guard verdicts (see --commits)")
    total = {k: sum(r[k] for r in runs.values()) for k in ("decisions", "kept", "rolled_back", "by_floor",
                                                          "kept_measured_below")}
    pairs = [p for r in runs.values() for p in r["kept_then_later"]]
    if pairs:
        trial, later = t_interval([a for a, _ in pairs]), t_interval([b for _, b in pairs])
        gap = t_interval([b - a for a, b in pairs])
        print(f"kept updates measured again later ({len(pairs)}): on trial {trial[0]:+.1%} +- {trial[1]:.1%} against "
              f"their reference, on their later episodes {later[0]:+.1%} +- {later[1]:.1%} (later minus trial "
              f"{gap[0]:+.1%} +- {gap[1]:.1%}, 95% t)", flush=True)
        total |= {"remeasured": len(pairs), "trial_change": round(trial[0], 3), "later_change": round(later[0], 3)}
    write_result(args.out, f"fleet_guard_verdicts runs={len(runs)} " + " ".join(f"{k}={v}" for k, v in total.items()),
                 {"tolerance": args.tolerance, "total": total, "runs": runs})


if __name__ == "__main__":
    main()
