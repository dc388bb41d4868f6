"""The fleet-round benchmark's figures, from its per-unit replica returns (definitions in fleet_round.py's docstring).

Every gain is *relative*: an absolute difference of returns divided by the baseline's mean return (stated per
figure below), so 0.10 means 10% of the baseline's return. The absolute figures are kept beside them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from seed_stats import t_interval  # beside this script


def stats(returns: np.ndarray) -> dict[str, float]:
    """Mean of a unit's replica returns with its standard error."""
    r = np.asarray(returns, dtype=float)
    return {"mean": float(r.mean()), "se": float(r.std(ddof=1) / math.sqrt(len(r))) if len(r) > 1 else float("nan"),
            "episodes": len(r)}


MEAN_ACTIONS = ("old", "after")  # a round's arms: what the unit ran before it, and after it
EXPLORING = ("old_explore", "after_explore")  # the same, acting as a learning robot does (sampled actions)


def set_after(row: dict[str, Any], swapped: bool) -> None:
    """A round's "after" arms for one unit: the new trunk with its rebased adapter if the unit swapped (a promoted
    candidate, the unit not held back), else what it ran before, both on mean actions and exploring."""
    row["after"], row["after_explore"] = ((row["rebased"], row["rebased_explore"]) if swapped
                                          else (row["old"], row["old_explore"]))


def fleet_returns(rounds: list[dict[str, Any]], tolerance: float,
                  arms: tuple[str, str] = MEAN_ACTIONS) -> dict[str, Any]:
    """Result 1: each unit's return with its adapter before the rounds, after round 1 and after the last; the
    fleet's means; each unit's change after the last round relative to its own return before. ``arms``: the
    rounds' (before, after) arms to read."""
    first, last = rounds[0]["units"], rounds[-1]["units"]
    was, now = arms
    units = {}
    for robot, row in first.items():
        before, after1, after = row[was], row[now], last[robot][now]
        delta = after["mean"] - before["mean"]
        units[robot] = {"before": before["mean"], "after_round_1": after1["mean"], "after_last_round": after["mean"],
                        "delta": delta, "delta_ci95": 1.96 * math.hypot(before["se"], after["se"]),
                        "relative_delta": delta / abs(before["mean"]) if before["mean"] else float("nan")}
    mean = {k: float(np.mean([u[k] for u in units.values()])) for k in ("before", "after_round_1", "after_last_round")}
    worst = min(units, key=lambda r: units[r]["relative_delta"])
    return {"units": units, "fleet_mean": mean,
            "mean_gain": (mean["after_last_round"] - mean["before"]) / abs(mean["before"]),
            "mean_gain_round_1": (mean["after_round_1"] - mean["before"]) / abs(mean["before"]),
            "worst_unit": worst, "worst_unit_delta": units[worst]["relative_delta"], "tolerance": tolerance,
            "units_beyond_tolerance": sorted(r for r, u in units.items() if u["relative_delta"] < -tolerance),
            # the replicas' own noise (32 episodes a side: +-10-25% of a unit's return) decides many units; these
            # are the ones whose whole 95% interval lies past the tolerance, or short of it
            "units_surely_beyond": sorted(r for r, u in units.items() if _bounds(u)[1] < -tolerance),
            "units_surely_within": sorted(r for r, u in units.items() if _bounds(u)[0] > -tolerance)}


def _bounds(unit: dict[str, float]) -> tuple[float, float]:
    """The 95% interval of a unit's change, relative to its return before."""
    scale = abs(unit["before"]) or float("nan")
    return ((unit["delta"] - unit["delta_ci95"]) / scale, (unit["delta"] + unit["delta_ci95"]) / scale)


def paired(rows: dict[str, dict[str, Any]], arm: str, baseline: str) -> dict[str, Any]:
    """Mean over units of ``arm - baseline`` (each a unit's mean replica return), its 95% paired t-interval,
    and the same relative to the baseline's mean return over the units."""
    diffs = [r[arm]["mean"] - r[baseline]["mean"] for r in rows.values()]
    base = float(np.mean([r[baseline]["mean"] for r in rows.values()]))
    m, h = t_interval(diffs)
    return {"mean_difference": m, "ci95": h, "interval": [m - h, m + h], "baseline_mean": base,
            "arm_mean": float(np.mean([r[arm]["mean"] for r in rows.values()])), "relative": m / abs(base),
            "relative_interval": [(m - h) / abs(base), (m + h) / abs(base)], "units": len(diffs),
            "units_better": sum(d > 0 for d in diffs)}


def rebase_effect(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Result 3: per unit (averaged over the rounds whose candidate passed the gate), the return right after the
    trunk update with the rebased adapter against the old adapter applied unchanged to the new trunk."""
    per_unit: dict[str, dict[str, list[float]]] = {}
    for rnd in rounds:
        for robot, row in rnd["units"].items():
            if "rebased" in row:
                u = per_unit.setdefault(robot, {})
                for k in ("rebased", "naive", "old", "other_rebase"):  # a held unit has no other_rebase that round
                    if k in row:
                        u.setdefault(k, []).append(row[k]["mean"])
    rows = {r: {k: {"mean": float(np.mean(v))} for k, v in u.items()} for r, u in per_unit.items()}
    if not rows:
        return {"rounds": 0}
    other = {r: v for r, v in rows.items() if "other_rebase" in v}  # a held unit has no other target measured
    return {"rounds": sum("rebased" in next(iter(r["units"].values())) for r in rounds),
            "rebased_vs_unchanged": paired(rows, "rebased", "naive"),
            "rebased_vs_before_update": paired(rows, "rebased", "old"),
            "unchanged_vs_before_update": paired(rows, "naive", "old"), "per_unit": rows,
            **({"other_rebase_vs_unchanged": paired(other, "other_rebase", "naive"),
                "other_rebase_vs_before_update": paired(other, "other_rebase", "old")} if other else {})}


def summary_line(fleet: dict[str, Any], fresh: dict[str, Any], rebase: dict[str, Any],
                 throughput: dict[str, Any], rounds: list[dict[str, Any]]) -> str:
    """The benchmark's last line."""
    rb = rebase.get("rebased_vs_unchanged", {}).get("relative", float("nan"))
    other = rebase.get("other_rebase_vs_unchanged", {}).get("relative", float("nan"))
    promoted = sum(r["outcome"] == "promoted" for r in rounds)
    held = sum(len(r.get("held_back", [])) for r in rounds)
    return (f"fleet_round mean_gain={fleet['mean_gain']:.3f} worst_unit_delta={fleet['worst_unit_delta']:.3f} "
            f"fresh_zero_shot_gain={fresh['fleet_vs_sim_only']['relative']:.3f} "
            f"fresh_vs_sim_control={fresh['fleet_vs_sim_control']['relative']:.3f} rebase_gain={rb:.3f} "
            f"other_rebase_gain={other:.3f} "
            f"vtrace_vs_ppo={throughput['ratio']:.2f} units={len(fleet['units'])} "
            f"fresh_units={fresh['fleet_vs_sim_only']['units']} rounds={len(rounds)} promoted={promoted} held_back={held}"
            + (f" worst_unit_delta_exploring={fleet['exploring']['worst_unit_delta']:.3f}" if "exploring" in fleet else ""))
