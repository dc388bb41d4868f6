"""Which part of a fleet-learn round costs the trunk what sim taught it? An offline ablation of round 1.

On some v1 trunks the fleet round's trunk loses to the *sim-only control* (v1 given the same sim PPO iterations
and no fleet data) on fresh units zero-shot (BENCHMARKS.md, fleet rounds). This study replays round 1 of one
``fleet_round.py`` run offline, on exactly the experience that round learned from (each robot's first
``stored_episodes`` episodes, on a copy of the hub's store), and changes one thing per arm:

- ``round_1``: the round as ``fleet_round.py`` ran it (its ``--updates`` and ``--learn`` overrides);
- ``fleet_only``: no sim mix (``sim_fraction=0``), the same 105 fleet updates;
- ``sim_half``: the same 15 sim iterations with 15 fleet updates, not 105 (``sim_fraction=0.5 updates=30``);
- ``lr_1e-4``: the fleet updates' learning rate 1e-4, not 3e-4;
- ``clip_0.02``: APPO's clip 0.02, not 0.2 (each update stays closer to the policy that acted);
- ``no_value_loss``: no critic loss on fleet data (its targets cannot move the shared trunk);
- ``bare``: every step learned with no adapter applied, the units' adapters left out of the store copy (the
  trunk learns what serves a unit without one, as a fresh unit runs it; V-trace corrects for the adapters that
  acted);
- ``sim_control``: v1 with the round's sim iterations alone (``fleet_trunks.sim_only_control``).

Each arm learns once per ``--seeds`` seed (the sim mix's worlds and the replay's sampling); the gate is
opened wide and the adapters rebased minimally (neither changes the candidate trunk). Every trunk is measured
zero-shot on the run's fresh units (``replica_returns.py``, deterministic mean actions). Per arm: the mean over
units of (arm - sim_control) and (arm - v1), each arm and the control averaged over the seeds first, with a
95% paired t-interval over units.

    python benchmarks/fleet_mix_study.py --result benchmarks/results/fleet_round_v1seed2.json

The run's workdir (its ``args.workdir``: hub store and cached v1) must still exist. Last line, e.g.
``fleet_mix_study v1=1a2b3c round_1=-0.080 fleet_only=-0.120 sim_half=-0.010 ... (vs sim_control)``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fleet_round import measure_units  # beside this script
from fleet_round_summary import paired  # beside this script
from fleet_trunks import learn_config, pretrain_trunk, sim_iterations, sim_only_control  # beside this script
from fleet_units import make_units  # beside this script
from replica_returns import Arm  # beside this script
from result_record import write_result  # beside this script

from fleet.episode_log import stored_episodes
from fleet.learner_app import EXIT_OK, run_learn, weights_digest
from fleet.learner_inputs import fleet_adapters
from fleet.segments import LOCK_FILE as SEGMENT_LOCK
from fleet.segments import take_writer_lock
from fleet.store import STORE_FILE, segments_dir
from shared_policy.checkpoint import load_checkpoint
from shared_policy.policy import FleetPolicy

ARMS: dict[str, list[str]] = {
    "round_1": [],
    "fleet_only": ["sim_fraction=0", "updates=105"],
    "sim_half": ["sim_fraction=0.5", "updates=30"],
    "lr_1e-4": ["learner.learning_rate=1e-4"],
    "clip_0.02": ["learner.vtrace.clip_param=0.02"],
    "no_value_loss": ["learner.value_loss_coef=0"],
    "bare": [],  # on a store without the units' adapters (BARE)
}
BARE = {"bare"}  # arms that learn the trunk with no unit's adapter applied (V-trace corrects for what ran)
# the gate and rebasing do not change the candidate trunk: open the gate, rebase as little as the learner allows
FAST = ["gate.episodes=8", "gate.tolerance=0.99", "publish=false", "rebase.steps=1", "max_rebase_observations=64"]
CONTROL = "sim_control"


def round_one_storage(src: Path, dst: Path, stored_episodes_of: dict[str, int]) -> dict[str, int]:
    """A copy of the hub's storage ``src`` at ``dst`` holding only round 1's experience: each robot's first
    ``stored_episodes_of[robot]`` complete episodes (by arrival, as the round counted them), the adapters uploaded
    before any later complete episode began (the units idle while the round learns), and no unit holds. The copy
    is taken under the store's writer lock: a hub still running on ``src`` is refused, not copied torn. Returns
    the chunks kept per robot."""
    refuse_nested(src, dst)
    segments = segments_dir(src / STORE_FILE)
    if not segments.is_dir():
        raise RuntimeError(f"{src} holds no hub store with segments ({segments} is missing)")
    shutil.rmtree(dst, ignore_errors=True)
    lock = take_writer_lock(segments)
    try:
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns(SEGMENT_LOCK, "parquet"))
    finally:
        os.close(lock)
    (dst / "trunks" / "unit_holds.json").unlink(missing_ok=True)
    episodes = stored_episodes(dst, complete_only=False)
    firsts = {r: [x for x in eps if x.complete][:stored_episodes_of.get(r, 0)] for r, eps in episodes.items()}
    keep = {(e.robot_id, e.spool_epoch, e.episode) for eps in firsts.values() for e in eps}
    # an incomplete episode (one the agent cut, or still arriving) never moves the cutoff: only the next complete one
    later = [e.first_received for r, eps in episodes.items() for e in [x for x in eps if x.complete][len(firsts[r]):]]
    db = sqlite3.connect(dst / STORE_FILE)
    with db:
        db.execute("create temp table kept (robot_id text, spool_epoch text, episode integer)")
        db.executemany("insert into kept values (?, ?, ?)", sorted(keep))
        db.execute("delete from chunks where (robot_id, spool_epoch, episode) not in (select * from kept)")
        if _has_adapters(db):
            db.execute("delete from adapters where received >= ?", (min(later, default=float("inf")),))
        kept = dict(db.execute("select robot_id, count(*) from chunks group by robot_id").fetchall())
        found = dict(db.execute("select robot_id, count(distinct spool_epoch || '/' || episode) from chunks "
                                "group by robot_id").fetchall())
    db.close()
    short = {r: n for r, n in stored_episodes_of.items() if found.get(r, 0) < n}
    if short:
        raise RuntimeError(f"the store holds fewer episodes than round 1 learned from: {short}")
    return kept


def refuse_nested(src: Path, dst: Path) -> None:
    """Refuse a study directory ``dst`` inside the run's storage ``src``, or containing it (it is deleted)."""
    if dst.resolve().is_relative_to(src.resolve()) or src.resolve().is_relative_to(dst.resolve()):
        raise ValueError(f"the study's {dst} and the run's storage {src} must not contain one another")


def check_round_adapters(storage: Path, v1: FleetPolicy, trunk_version: int, adapters_uploaded: list[str],
                         adapter_versions: dict[str, list[int]] | None = None) -> None:
    """Refuse a copy whose adapters for ``trunk_version`` are not those round 1 learned with: the robots of the
    round's ``adapters_uploaded``, found as ``fleet_round.py`` found them (``fleet_adapters``), and, where the run
    recorded them (``adapter_versions``, since 2026-12-03), each robot's adapter version and the trunk version
    it was trained on too."""
    got, stored = fleet_adapters(storage, v1, trunk_version)
    if sorted(got) != sorted(adapters_uploaded):
        raise RuntimeError(f"the copy keeps adapters of {sorted(got)}, round 1 learned with those of "
                           f"{sorted(adapters_uploaded)}")
    if adapter_versions is not None:
        kept = {r: [rec.adapter_version, rec.trunk_version] for r, rec in stored.items()}
        if kept != adapter_versions:
            raise RuntimeError(f"the copy keeps adapter versions {dict(sorted(kept.items()))}, round 1 learned with "
                               f"{dict(sorted(adapter_versions.items()))}")


def _has_adapters(db: sqlite3.Connection) -> bool:
    """Whether the store has its adapters table (made at a first upload)."""
    return db.execute("select 1 from sqlite_master where name = 'adapters'").fetchone() is not None


def drop_adapters(storage: Path) -> None:
    """Delete every stored adapter from the store at ``storage`` (the learner then applies none)."""
    db = sqlite3.connect(storage / STORE_FILE)
    with db:
        if _has_adapters(db):
            db.execute("delete from adapters")
    db.close()


def arm_trunk(storage: Path, out: Path, types: list[str], overrides: list[str]) -> tuple[FleetPolicy, float]:
    """The candidate trunk one fleet-learn round with ``overrides`` makes from ``storage``, and its seconds."""
    cfg = learn_config(storage, out, types, overrides)
    t0 = time.perf_counter()
    code = run_learn(cfg)
    if code != EXIT_OK:
        raise RuntimeError(f"fleet-learn {overrides} exited {code}")
    policy, _ = load_checkpoint(out / "round_1" / "candidate")
    return policy, time.perf_counter() - t0


ROUND_SLOTS = (105, 15)  # fleet and sim slots of the round the ARMS' fixed sizes are cut from (updates=120 at 0.125)


def check_round_settings(run_args: dict[str, Any]) -> None:
    """Refuse a run whose round (its config composed as ``fleet-learn`` composed it, defaults included) did not
    have ``ROUND_SLOTS`` fleet and sim slots: ``fleet_only`` and ``sim_half`` would not keep them."""
    cfg = learn_config(Path("storage"), Path("out"), run_args["types"],
                       overrides([f"updates={run_args['updates']}"], run_args["learn"]))
    sims = sim_iterations(cfg)
    if (cfg.updates - sims, sims) != ROUND_SLOTS:
        raise ValueError(f"the run's round must have {ROUND_SLOTS[0]} fleet and {ROUND_SLOTS[1]} sim slots (the arms' "
                         f"sizes are cut from it); it had {cfg.updates - sims} and {sims} (updates={cfg.updates}, "
                         f"sim_fraction={cfg.sim_fraction})")


def overrides(*groups: list[str]) -> list[str]:
    """Hydra overrides from ``groups`` in order, a later value of a key replacing an earlier one."""
    out: dict[str, str] = {}
    for o in (o for g in groups for o in g):
        out[o.split("=", 1)[0]] = o
    return list(out.values())


def arm_means(rows: dict[str, dict[str, Any]], arm: str, seeds: list[int]) -> dict[str, dict[str, Any]]:
    """Per unit, ``arm``'s return averaged over the seeds, beside v1 and the control averaged the same way."""
    def mean(row: dict[str, Any], name: str, over: list[int] | None) -> dict[str, float]:
        keys = [f"{name}/{s}" for s in over] if over is not None else [name]
        return {"mean": float(np.mean([row[k]["mean"] for k in keys]))}
    return {u: {arm: mean(r, arm, seeds), CONTROL: mean(r, CONTROL, seeds), "v1": mean(r, "v1", None)}
            for u, r in rows.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--result", required=True, help="a fleet_round.py result file whose workdir still exists")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    ap.add_argument("--work", default="/tmp/fleet_mix_study")
    ap.add_argument("--out", default="", help="default: benchmarks/results/fleet_mix_study_<result name>.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    run = json.loads(Path(args.result).read_text())
    ra, work = run["args"], Path(args.work)
    check_round_settings(ra)
    v1_path = pretrain_trunk(ra["types"], ra["pretrain_iterations"], ra["num_envs"], Path(ra["workdir"]),
                             ra["pretrain_seed"])
    v1, _ = load_checkpoint(v1_path)
    digest = weights_digest(v1)
    if run["pretrain"].get("weights_sha256", digest) != digest:
        raise RuntimeError(f"{v1_path} is not the v1 {args.result} started from")
    storage, source, first = work / "store", Path(ra["workdir"]) / "run" / "hub", run["rounds"][0]
    refuse_nested(source, work)
    kept = round_one_storage(source, storage, first["stored_episodes"])
    check_round_adapters(storage, v1, first["trunk"], first["adapters_uploaded"], first.get("adapter_versions"))
    bare = work / "store_bare"
    shutil.rmtree(bare, ignore_errors=True)
    shutil.copytree(storage, bare)
    drop_adapters(bare)
    print(f"[study] round 1's experience: {sum(kept.values())} chunks from {len(kept)} robots; v1 {digest[:12]}",
          flush=True)
    trunks: dict[str, FleetPolicy] = {"v1": v1}
    seconds: dict[str, float] = {}
    for seed in args.seeds:
        base = overrides([f"updates={ra['updates']}"], ra["learn"], [f"sim.seed={seed}", f"replay.seed={seed}"], FAST,
                         [f"trunk={v1_path}"])
        for arm in args.arms:
            name = f"{arm}/{seed}"
            trunks[name], seconds[name] = arm_trunk(bare if arm in BARE else storage, work / "learn" / arm / str(seed), ra["types"],
                                                    overrides(base, ARMS[arm]))
            print(f"[study] {name}: learned in {seconds[name]:.0f} s", flush=True)
        cfg = learn_config(storage, work / "control", ra["types"], base)
        trunks[f"{CONTROL}/{seed}"] = sim_only_control(v1_path, cfg, 1, work / "control" / str(seed))
    fresh = make_units(ra["types"], ra["fresh_per_type"], ra["first_fresh"])
    print(f"[study] fresh units zero-shot: {len(trunks)} trunks x {len(fresh)} units", flush=True)
    rows = measure_units(fresh, lambda u: [Arm(n, p) for n, p in trunks.items()], ra["eval_episodes"])
    results = {}
    for arm in [*args.arms, CONTROL]:
        means = arm_means(rows, arm, args.seeds)
        results[arm] = {"vs_v1": paired(means, arm, "v1"),
                        **({} if arm == CONTROL else {"vs_sim_control": paired(means, arm, CONTROL)})}
        for k, p in results[arm].items():
            lo, hi = p["relative_interval"]
            print(f"{arm:14s} {k:15s} {p['relative']:+.3f} [{lo:+.3f}, {hi:+.3f}] relative "
                  f"({p['mean_difference']:+.1f} abs, {p['units_better']}/{p['units']} units better)")
    line = "fleet_mix_study v1=" + digest[:12] + " " + " ".join(
        f"{a}={results[a]['vs_sim_control']['relative']:.3f}" for a in args.arms) + \
        f" sim_control_vs_v1={results[CONTROL]['vs_v1']['relative']:.3f} seeds={len(args.seeds)} units={len(fresh)}"
    out = args.out or f"benchmarks/results/fleet_mix_study_{Path(args.result).stem}.json"
    write_result(out, line, {"args": vars(args), "run": {"result": args.result, "commit": run.get("commit"),
                                                         "args": ra, "v1_sha256": digest}, "kept_chunks": kept,
                             "arms": {a: ARMS.get(a, []) for a in args.arms}, "fast": FAST,
                             "learn_seconds": seconds, "units": rows, "results": results,
                             # two studies of one run can show they learned the same trunks
                             "trunk_sha256": {name: weights_digest(p) for name, p in trunks.items()}})


if __name__ == "__main__":
    main()
