"""Do the robots' own episodes tell the hub what a new trunk does to them? Roll-out verdicts against the replicas.

The hub judges a candidate trunk on its canaries, and after a promotion every other robot (the unit watch), by
the mean return of a robot's own episodes on the new trunk against its recent episodes on the one before
(``fleet/rollout.py``, ``fleet/unit_watch.py``). Those episodes explore (actions drawn from the policy) and the
robot's adapter goes on learning during them. ``fleet_round`` also measures each unit on its exact replica with
deterministic mean actions, 32 episodes a policy, before and after each trunk update: the old trunk with the
unit's adapter, and the new trunk with the rebased adapter the unit got with it (what a canary and a watched
robot run). Every committed ``fleet_round`` run records both for each round, so each verdict can be set beside
what the replicas say the same swap did:

- the robot's change: ``(mean_candidate - mean_previous) / mean_previous``, from the verdict in the round's log;
- the replica's change: ``(rebased - old) / old``; with ``--exploring`` the same from the replicas acting as the
  robots do (actions sampled, the ``old_explore`` and ``rebased_explore`` arms, recorded from ddfee24 on), which
  is what the robots' own episodes measure.

Only verdicts whose baseline is the round's trunk are taken (a robot held on an older trunk has no replica of its
baseline), with both means positive (a verdict with no episode on its baseline compared nothing). The runs are
``fleet_round_pool``'s (one per commit, seed and pretrain seed, with a sim-only control), for v1s pretrained
40 and 160 iterations (``--pretrain-iterations``). Printed: the
correlation of the two changes (Pearson, 95% interval by Fisher's z), how often their signs agree; of the swaps
the replicas put below ``--tolerance`` (default the benchmark's -10%), how many the robots' own episodes also put
below it (what a hub set to that tolerance could have refused) and how many the hub refused (it judged with its
own ``rollout.tolerance``: 0.25 in fleet_round runs before 758f60e, the stated 0.10 since; a pool over both
says so in its text line, the summary line counts their refusals together); and how many refusals (a unit held back, a canary failed) were
swaps the replicas put above zero (false alarms).

    python benchmarks/fleet_verdict_agreement.py                   # every committed fleet_round run with a watch
    python benchmarks/fleet_verdict_agreement.py --commits cff8a8c 4d1143e
    python benchmarks/fleet_verdict_agreement.py --exploring      # the replicas acting as the robots do

Last line, e.g. ``fleet_verdict_agreement runs=12 verdicts=170 corr=0.36 low=0.22 high=0.48 sign_agree=0.67
replica_drops=9 robots_saw_of_drops=3 refused_of_drops=2 refused=14 false_alarms=9``.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from fleet_round_pool import PRETRAIN_ITERATIONS, named_runs  # beside this script
from result_record import write_result

VERDICTS = ("canary_verdict", "unit_kept", "unit_held_back")  # the hub's per-robot judgements of a candidate


SWAP_MEAN_ACTIONS = ("old", "rebased")  # a swap's replica arms on mean actions: before it, after it
SWAP_EXPLORING = ("old_explore", "rebased_explore")  # the same acting as the robots do (runs from ddfee24 on)


def measure(exploring: bool) -> tuple[tuple[str, str], str]:
    """The replica arms a swap is read from and the result's name (summary-line prefix and file stem)."""
    return (SWAP_EXPLORING, "fleet_verdict_agreement_exploring") if exploring else (
        SWAP_MEAN_ACTIONS, "fleet_verdict_agreement")


def verdict_pairs(result: dict[str, Any], arms: tuple[str, str] = SWAP_MEAN_ACTIONS) -> list[dict[str, Any]]:
    """Each per-robot verdict of a run beside its replicas' change: robot, round, event, the robot's change, the
    replica's change, whether the verdict passed. ``arms``: the replica arms (before, after) of a swap."""
    was, now = arms
    pairs = []
    for rnd in result.get("rounds", []):
        units = rnd.get("units") or {}
        for step in rnd.get("rollout", []):
            if step.get("event") not in VERDICTS or step.get("version") != rnd.get("candidate"):
                continue
            replica = units.get(step.get("robot"), {})
            if step.get("baseline") != rnd.get("trunk") or was not in replica or now not in replica:
                continue
            before = step.get("mean_previous")  # absent: no episode on the baseline, nothing was compared
            old, new = replica[was]["mean"], replica[now]["mean"]
            if before is None or "mean_candidate" not in step or old <= 0 or before <= 0:
                continue  # no relative change to speak of
            pairs.append({"robot": step["robot"], "round": rnd["round"], "event": step["event"],
                          "robot_change": (step["mean_candidate"] - before) / before,
                          "replica_change": (new - old) / old, "refused": refused(step),
                          "tolerance": float(step.get("tolerance", math.nan))})
    return pairs


def refused(step: dict[str, Any]) -> bool:
    """Whether the verdict took the candidate away from the robot: a unit held back, or a canary that failed (which
    rolls the candidate back). A ``unit_kept`` never did, whatever its ``passed`` says (a robot with no episode
    on its baseline is kept unjudged)."""
    return step["event"] == "unit_held_back" or (step["event"] == "canary_verdict" and not step.get("passed", True))


def correlation(x: list[float], y: list[float]) -> tuple[float, float, float]:
    """Pearson's r with its 95% interval (Fisher's z); NaNs when fewer than 4 pairs or no spread."""
    n = len(x)
    if n < 4:
        return math.nan, math.nan, math.nan
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    sxx, syy = sum((a - mx) ** 2 for a in x), sum((b - my) ** 2 for b in y)
    if sxx == 0 or syy == 0:
        return math.nan, math.nan, math.nan
    r = max(-0.999999, min(0.999999, sxy / math.sqrt(sxx * syy)))
    z, half = math.atanh(r), 1.96 / math.sqrt(n - 3)
    return r, math.tanh(z - half), math.tanh(z + half)


def agreement(pairs: list[dict[str, Any]], tolerance: float) -> dict[str, Any]:
    """What the verdicts say against the replicas (module docstring)."""
    robot = [p["robot_change"] for p in pairs]
    replica = [p["replica_change"] for p in pairs]
    r, low, high = correlation(robot, replica)
    drops = [p for p in pairs if p["replica_change"] < tolerance]
    refusals = [p for p in pairs if p["refused"]]
    signed = [p for p in pairs if p["robot_change"] != 0 and p["replica_change"] != 0]
    return {"verdicts": len(pairs), "corr": r, "corr_low": low, "corr_high": high,
            "sign_agree": (sum((p["robot_change"] > 0) == (p["replica_change"] > 0) for p in signed) / len(signed)
                           if signed else math.nan),
            "replica_drops": len(drops), "refused_of_drops": sum(p["refused"] for p in drops),
            # the hub judged with its own tolerance (0.25 in older fleet_round runs): how many drops the robots' episodes even
            # saw past ``tolerance``, which a hub set to it would have refused
            "robots_saw_of_drops": sum(p["robot_change"] < tolerance for p in drops),
            "robots_saw": sum(p["robot_change"] < tolerance for p in pairs),
            "refused": len(refusals), "false_alarms": sum(p["replica_change"] > 0 for p in refusals),
            "hub_tolerances": sorted({p["tolerance"] for p in pairs if math.isfinite(p["tolerance"])})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--commits", nargs="*", default=None, help="measured commits (7 hex digits) to keep")
    ap.add_argument("--tolerance", type=float, default=-0.10, help="a replica change below this is a drop")
    ap.add_argument("--pretrain-iterations", type=int, nargs="*", default=[PRETRAIN_ITERATIONS, 160],
                    help="take runs whose v1 was pretrained this long (each length's runs as fleet_round_pool takes them)")
    ap.add_argument("--exploring", action="store_true",
                    help="set the verdicts beside the replicas acting as the robots do (sampled actions; the runs "
                         "that measured it) instead of on mean actions")
    ap.add_argument("--out", default=None, help="default benchmarks/results/fleet_verdict_agreement[_exploring].json")
    args = ap.parse_args()
    arms, result_name = measure(args.exploring)
    out = args.out or f"benchmarks/results/{result_name}.json"
    per_run, pairs = {}, []
    for name, result in named_runs(args.pretrain_iterations, args.commits):
        mine = verdict_pairs(result, arms)
        if not mine:
            continue  # before the rounds recorded their verdicts and replicas side by side
        pairs += mine
        per_run[name] = mine
        a = agreement(mine, args.tolerance)
        print(f"run {name}: {a['verdicts']} verdicts, corr {a['corr']:+.2f}, "
              f"signs agree {a['sign_agree']:.0%}, replica drops past {args.tolerance:+.0%}: {a['replica_drops']} "
              f"({a['robots_saw_of_drops']} seen so by the robots, {a['refused_of_drops']} refused)", flush=True)
    if not pairs:
        raise SystemExit("no committed fleet_round run records its verdicts beside its replicas (see --commits"
                         + ("; the exploring arms exist from ddfee24 on)" if args.exploring else ")"))
    a = agreement(pairs, args.tolerance)
    print(f"all: {a['verdicts']} verdicts in {len(per_run)} runs; the robots' change against the replicas' change: "
          f"r = {a['corr']:+.2f} [{a['corr_low']:+.2f}, {a['corr_high']:+.2f}] (95%), signs agree "
          f"{a['sign_agree']:.0%}; {a['replica_drops']} swaps the replicas put below {args.tolerance:+.0%}: the "
          f"robots' own episodes put {a['robots_saw_of_drops']} of them below it too ({a['robots_saw']} verdicts in "
          f"all), and the hub (tolerance {', '.join(f'{t:g}' for t in a['hub_tolerances'])}) refused "
          f"{a['refused_of_drops']}; {a['refused']} refusals, {a['false_alarms']} of them swaps the replicas put above "
          "zero", flush=True)
    write_result(out, f"{result_name} runs={len(per_run)} verdicts={a['verdicts']} corr={a['corr']:.2f} "
                 f"low={a['corr_low']:.2f} high={a['corr_high']:.2f} sign_agree={a['sign_agree']:.2f} "
                 f"replica_drops={a['replica_drops']} robots_saw_of_drops={a['robots_saw_of_drops']} "
                 f"refused_of_drops={a['refused_of_drops']} refused={a['refused']} false_alarms={a['false_alarms']}",
                 {"tolerance": args.tolerance, "arms": list(arms), "all": a, "runs": per_run})


if __name__ == "__main__":
    main()
