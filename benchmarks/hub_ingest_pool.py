"""The hub's throughput target, pooled over hub_ingest runs: every paired round of the 64 KiB CURVE cells.

Each ``hub_ingest`` run (``benchmarks/results/hub_ingest*.json``: the full matrix, ``_64k`` and ``_sustained``)
measures each cell in a few rounds, hub and raw peer back to back, and quotes the median of the rounds' own
ratios. One file's median over 2-5 rounds moves by ~0.1 from run to run, and single rounds have read 0.40-0.50
where the file's median cleared 0.5. This pools the rounds of every committed version of those files measured
at the chosen commits (``git log``; one copy per file and date; runs with the default hub, budgets and client
processes only) and gives, per cell (named by placement whichever placement a run took as its own):

- the median of all rounds' ratios with its distribution-free 95% interval (order statistics);
- how many rounds read below the target (0.5 of raw);
- the one-sided sign-test p-value that the cell's median ratio is above the target;
- how many runs' own medians clear the target (a per-run view: rounds of one run share its host state).

A cell *meets* the target when its interval's lower end is above it. The interval takes rounds as independent;
rounds of one run are not quite, so read it with the per-run count. Runs are chosen by ``--commits`` (prefixes);
without it, every committed run whose measured code is unchanged at HEAD (``summary.py``'s "current": a run
measured before an unrelated later change to a measured path is left out; name its commit to keep it). Dirty
runs are always left out. Rounds of 3 s cells differ from rounds of 40 s ones (ramp and long-run effects): the
per-file rows below say which is which.

    python benchmarks/hub_ingest_pool.py                       # every run of the code at HEAD
    python benchmarks/hub_ingest_pool.py --commits 8f310eb cff8a8c

Last line, e.g. ``hub_ingest_pool runs=6 rounds=96 cells=6 target=0.5 worst_cell=64k_curve_128 worst_median=0.60
worst_low=0.47 worst_below=5 worst_p=0.0481 met=4`` (``rounds``: over all cells).
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path
from typing import Any

from result_record import committed_results, write_result  # beside this script
from seed_stats import median_interval, sign_test_above
from summary import freshness

POOL_FILE = "benchmarks/results/hub_ingest_pool.json"
CELL_PREFIX = "64k_curve_"  # the target's cells: 64 KiB chunks, CURVE and fsync on


def committed_runs() -> list[tuple[str, dict[str, Any]]]:
    """(file, result) for every committed hub_ingest run with per-round ratios, one per (file, date)."""
    runs: dict[tuple[str, str], dict[str, Any]] = {}
    for path, result in committed_results("benchmarks/results/hub_ingest*.json", exclude=POOL_FILE):
        try:
            result["round_ratios"].items()
            default = is_default_hub(result["args"])
        except (KeyError, TypeError, AttributeError):
            continue  # a run from before per-round ratios were recorded
        if result.get("commit") and not result.get("dirty") and default:
            runs.setdefault((path, str(result.get("date"))), result)
    return [(path, result) for (path, _), result in sorted(runs.items(), key=lambda kv: str(kv[1].get("date")))]


def host_of(result: dict[str, Any]) -> str:
    """The run's platform string (``result_record.machine_facts``; every result records it, and its kernel build
    changed between sessions with the raw peer's speed), or "unrecorded"."""
    return str((result.get("machine") or {}).get("platform") or "unrecorded")


def probe_of(result: dict[str, Any]) -> str:
    """The run's speed probe as printed (recorded since 2026-12-04), or ""."""
    probe = (result.get("machine") or {}).get("probe")
    return f", probe {probe['python_loop_ns']:g} ns/loop {probe['sha256_mb_s']:g} MB/s sha256" if probe else ""


def is_default_hub(args: dict[str, Any]) -> bool:
    """A run of the hub as shipped against the default load: no hub override, the default credit, window and client
    processes, the default work dir (the system temp dir: another file system's fsync is another target), not
    ``--quick`` (a run with other settings measures another thing and is not pooled)."""
    return (not args.get("quick") and not args.get("hub_override") and not args.get("dir") and args.get("procs", 2) == 2
            and args.get("inflight_budget_mb", 256.0) == 256.0 and args.get("inflight_budget_chunks", 8192) == 8192)


def target_cells(result: dict[str, Any]) -> dict[str, list[float]]:
    """A run's 64 KiB CURVE cells, named by placement: ``64k_curve_<n>`` split, ``64k_curve_<n>_shared`` shared
    (a run names its own placement's cells bare and suffixes the other's)."""
    own = result["args"].get("placement", "split")
    cells = {}
    for cell, ratios in result["round_ratios"].items():
        if not cell.startswith(CELL_PREFIX):
            continue
        agents, _, other = cell.removeprefix(CELL_PREFIX).partition("_")
        placement = other or own
        cells[f"{CELL_PREFIX}{agents}" + ("_shared" if placement == "shared" else "")] = [float(r) for r in ratios]
    return cells


def pool(runs: list[tuple[str, dict[str, Any]]], target: float) -> dict[str, dict[str, Any]]:
    """Per target cell: every round's ratio and what they say against ``target``."""
    rounds: dict[str, list[float]] = defaultdict(list)
    run_medians: dict[str, list[float]] = defaultdict(list)
    for _, result in runs:
        for cell, ratios in target_cells(result).items():
            rounds[cell].extend(ratios)
            if ratios:
                run_medians[cell].append(median_interval(ratios)[0])
    cells = {}
    for cell, ratios in sorted(rounds.items(), key=lambda kv: (kv[0].endswith("_shared"), int(kv[0].split("_")[2]))):
        median, low, high = median_interval(ratios)
        per_run = run_medians[cell]
        cells[cell] = {"rounds": len(ratios), "median": median, "low": low, "high": high,
                       "below_target": sum(r < target for r in ratios), "sign_p": sign_test_above(ratios, target),
                       "met": low > target, "ratios": ratios, "runs": len(per_run),
                       "runs_above": sum(m > target for m in per_run), "runs_sign_p": sign_test_above(per_run, target)}
    return cells


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--commits", nargs="*", default=None, help="measured commits to keep (any prefix)")
    ap.add_argument("--target", type=float, default=0.5, help="the issue's floor: hub / raw")
    ap.add_argument("--out", default=POOL_FILE)
    args = ap.parse_args()
    runs = [(path, r) for path, r in committed_runs()
            if (any(r["commit"].startswith(c) for c in args.commits) if args.commits else freshness(r) == "current")]
    if not runs:
        raise SystemExit("no committed hub_ingest run with per-round ratios matches (see --commits)")
    for path, r in runs:
        mine = target_cells(r)
        print(f"run {r['commit'][:7]} {r['date']} {Path(path).name} ({r['args']['seconds']:g} s cells, "
              f"{host_of(r)}{probe_of(r)}): "
              + "; ".join(f"{c} {' '.join(f'{x:.2f}' for x in v)}" for c, v in mine.items()), flush=True)
    hosts = sorted({host_of(r) for _, r in runs})
    if len(hosts) > 1:  # the raw peer's speed moved by up to a third between hosts: say the pool mixes platforms
        print(f"note: these runs come from {len(hosts)} platforms ({', '.join(hosts)}); each ratio is hub / raw on "
              "its own platform, but the margin over the target need not be the same on each", flush=True)
    cells = pool(runs, args.target)
    if not cells:
        raise SystemExit("the chosen runs measured no 64 KiB CURVE cell")
    for cell, c in cells.items():
        print(f"  {cell:24s} {c['rounds']:3d} rounds: median {c['median']:.2f} [{c['low']:.2f}, {c['high']:.2f}] "
              f"(95%, order statistics); {c['below_target']} below {args.target:g}; sign test p={c['sign_p']:.4f}; "
              f"runs' own medians above {args.target:g}: {c['runs_above']} of {c['runs']} (p={c['runs_sign_p']:.4f}) "
              f"-> {'met' if c['met'] else 'not resolved'}", flush=True)
    worst_cell, worst = min(cells.items(), key=lambda kv: kv[1]["low"])
    write_result(args.out, f"hub_ingest_pool runs={len(runs)} rounds={sum(c['rounds'] for c in cells.values())} "
                 f"cells={len(cells)} target={args.target:g} worst_cell={worst_cell} worst_median={worst['median']:.2f} "
                 f"worst_low={worst['low']:.2f} worst_below={worst['below_target']} worst_p={worst['sign_p']:.4f} "
                 f"met={sum(c['met'] for c in cells.values())}",
                 {"runs": [{"file": Path(p).name, "commit": r["commit"], "date": r["date"], "seconds": r["args"]["seconds"],
                            "host": host_of(r)} for p, r in runs], "hosts": hosts, "cells": cells})


if __name__ == "__main__":
    main()
