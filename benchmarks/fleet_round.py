"""Fleet rounds end to end: does the fleet's real experience make a better trunk, for its own units and new ones?

Stand-in units of every ``--types`` hardware type (``--units-per-type`` each, every unit its own reality gap
draw from ``sim/unit_gaps.py``, partly outside the training ranges) run as real robot agents
(``fleet_units.py``: simulated clocks, adapter learning on, uplink on over CURVE) against a real ``fleet-hub``
process. A trunk is pretrained in sim only (``--pretrain-iterations`` x ``--num-envs`` worlds per type, cached
by its settings in the workdir) and published as v1. Then ``--rounds`` fleet rounds, each:

1. every unit runs ``--episodes`` episodes on the current trunk (learning its adapter on-robot, uploading
   experience and kept adapters);
2. ``fleet.learner_app.run_learn`` (one round, Hydra-composed as ``fleet-learn`` is: V-trace on the fleet's
   experience with each unit's adapter applied, the sim mix, the gate, adapter rebasing) publishes a
   candidate with the rebased adapters as the hub's canary candidate;
3. the units run again until the hub's canary trial (one canary per type) has promoted or rolled back the
   candidate and every unit runs the hub's current trunk; the trial's steps come from the roll-out log.

Returns are measured on exact unit replicas (``replica_returns.py``: ``--eval-episodes`` episodes per policy
in one batched pass, deterministic mean actions), not from the robots' own noisy, exploring episodes:

1. **Fleet units**: each unit's return with its adapter before the rounds (v1 with the adapter it learned in
   round 1's episodes), after round 1 and after the last round. "After round k" is what the unit runs at the
   round's end: a promoted candidate with the rebased adapter the unit got at the swap; after a refused or
   rolled-back candidate, the old trunk with the adapter the unit uploaded in that round (its on-robot
   learning of the round included).
   ``mean_gain`` = (fleet mean after the last round - fleet mean before) / fleet mean before.
   ``worst_unit_delta`` = min over units of (after - before) / that unit's before, on mean actions.
   ``worst_unit_delta_exploring``: the same with the units acting as they do on-robot, sampling their actions
   (exploring arms, other replica worlds): what the robots' own returns, the on-robot adapter guard and the
   hub's canary verdicts see. ``--tolerance`` is the stated limit, judged since 2026-12-05 on this one (no unit
   may lose more than that fraction of its own return as a learning robot acts; ``fleet.exploring`` in the
   record); the mean-action figures (``fleet``, ``worst_unit_delta``) are reported beside it, for robots that
   act on mean actions (learning off, exported actors). The units run ``--adapter-preset`` (default ``fleet``);
   the record's ``adapter`` block says what they ran.
2. **Fresh units** (``--fresh-per-type`` per type, never in the fleet, same gap distribution, other seeds),
   zero-shot (no adapter): ``fresh_zero_shot_gain`` = mean over units of (last trunk - v1) / mean v1 return,
   with a 95% paired t-interval over units. ``fresh_vs_sim_control`` is the same against the *sim-only
   control*: v1 given exactly the sim PPO iterations that the last trunk's lineage got from the sim mix (one
   round's worth per promoted round: a refused or rolled-back candidate's training is dropped with it), and
   no fleet data (``fleet_trunks.sim_only_control``): what the fleet's experience added beyond more sim
   training.
3. **Rebasing**: after each trunk update, each unit's return on the new trunk with its rebased adapter
   against its old adapter applied unchanged ("as if nothing changed"), both the first episodes after the
   update (frozen adapters on the replica). ``rebase_gain`` = mean over units of (rebased - unchanged) /
   mean unchanged return (each unit averaged over the rounds whose candidate passed the gate).
   ``other_rebase_gain``: the same for the rebase target the learner did not use (``rebase.target``: merged
   reproduces the old merged policy, residual keeps the new trunk's change plus the unit's own correction),
   rebased on the same observations and measured beside it (never sent to the units).
4. **Learner throughput**: ``vtrace_vs_ppo`` = V-trace transitions/s / PPO transitions/s on the last trunk
   with the learner's batch (``shared_policy/learner_throughput.py``), mean over the types.

    python benchmarks/fleet_round.py                                  # cartpole + cartpole_pivot
    python benchmarks/fleet_round.py --types cartpole cartpole_long   # a pair with the same sizes
    python benchmarks/fleet_round.py --quick                          # a smoke run of the whole loop
    python benchmarks/fleet_round.py --seed 1 --workdir /tmp/fleet_round_s1   # another draw (see --seed)

Each round's record keeps every unit's adapter guard verdicts of the round (``guard_verdicts``: kept or rolled
back, by the floor alone or not, the means compared, the trunk), so a unit's own-learning loss can be traced to
the decisions that let it through. A workdir is locked for the run: a second run there exits naming it.

``--seed s`` draws other units (fleet seeds from ``--first-unit + 1000 s``, fresh from ``--first-fresh + 1000 s``)
and seeds the learner's sim mix (the sim-only control's too) and replay sampling with ``s``, its gate worlds with
``1234 + s``. The v1 trunk stays the one ``--pretrain-seed`` trains (cached): seeds differ in units and learning,
not in v1. A seed other than 0 writes ``fleet_round_seed<s>.json``.

Last line, e.g. ``fleet_round mean_gain=0.120 worst_unit_delta=-0.010 fresh_zero_shot_gain=0.080
fresh_vs_sim_control=0.010 rebase_gain=0.200 other_rebase_gain=0.100 vtrace_vs_ppo=1.10 units=8 fresh_units=8 rounds=3 promoted=3
held_back=0 worst_unit_delta_exploring=-0.020``.
"""

from __future__ import annotations

import argparse
import fcntl
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
from fleet_round_summary import (  # beside this script
    EXPLORING,
    fleet_returns,
    paired,
    rebase_effect,
    set_after,
    stats,
    summary_line,
)
from fleet_trunks import learn_config, pretrain_record, pretrain_trunk, sim_only_control  # beside this script
from fleet_units import (  # beside this script
    AgentSettings,
    Fleet,
    Unit,
    agent_config,
    make_units,
    rollout_settled,
    rollout_steps,
)
from hub_processes import HubProcess, free_port, make_keys  # beside this script
from replica_returns import Arm, replica_returns  # beside this script
from result_record import write_result  # beside this script

from configs import group_options
from fleet.episode_log import stored_episodes
from fleet.learner_app import EXIT_OK, EXIT_REFUSED, rebased_adapters, run_learn, weights_digest
from fleet.learner_config import LearnConfig
from fleet.learner_inputs import experience_reader, fleet_adapters, robot_observations
from fleet.trunk_store import TrunkStore
from fleet.unit_watch import read_holds
from robot_agent.config import adapter_preset
from shared_policy.adapter import Adapter
from shared_policy.checkpoint import load_checkpoint
from shared_policy.learner_throughput import measure_throughput
from shared_policy.policy import FleetPolicy
from shared_policy.rebase import rebase_adapter
from sim.unit_gaps import UNIT_SETUPS

# a smoke run: tiny everything, and learning rates so small that the gate passes its candidate (the roll-out runs)
QUICK = {"units_per_type": 1, "fresh_per_type": 1, "rounds": 1, "episodes": 2, "eval_episodes": 4,
         "pretrain_iterations": 2, "num_envs": 32, "updates": 4, "canary_episodes": 1, "history_episodes": 2,
         "learn": ["sim_fraction=0.25", "sim.num_envs=8", "gate.episodes=8", "gate.tolerance=0.99", "rebase.steps=20",
                   "max_rebase_observations=1024", "learner.learning_rate=1e-6", "sim.ppo.learning_rate=1e-6",
                   "sim.ppo.schedule=fixed"],
         "throughput_updates": 1, "workdir": "/tmp/fleet_round_quick",
         "canary_tolerance": 0.99}  # like the gate's: one canary episode judges nothing; the smoke run promotes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The benchmark's settings from ``argv`` (default: the command line), with ``--quick``'s and the seed's applied."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--types", nargs="+", default=["cartpole", "cartpole_pivot"], choices=sorted(UNIT_SETUPS))
    ap.add_argument("--units-per-type", type=int, default=4, help="fleet units per type")
    ap.add_argument("--fresh-per-type", type=int, default=4, help="fresh units per type (never in the fleet)")
    ap.add_argument("--first-unit", type=int, default=300, help="fleet unit seeds count up from here")
    ap.add_argument("--first-fresh", type=int, default=400, help="fresh unit seeds count up from here")
    ap.add_argument("--seed", type=int, default=0, help="units drawn and learner seeds (module docstring)")
    ap.add_argument("--pretrain-seed", type=int, default=0, help="the sim-only v1 trunk's training seed")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--episodes", type=int, default=6, help="episodes per unit per round before its learn")
    ap.add_argument("--eval-episodes", type=int, default=32, help="replica episodes per policy and unit")
    ap.add_argument("--pretrain-iterations", type=int, default=40)
    ap.add_argument("--num-envs", type=int, default=128, help="worlds per type in pretraining")
    # 15 sim PPO iterations per round (as 60 x 0.25 before) and 105 fleet updates: with APPO's clip (the default
    # loss) replaying the round's fleet data ~4 times stays near the policy that acted
    ap.add_argument("--updates", type=int, default=120, help="fleet-learn update slots per round")
    ap.add_argument("--learn", nargs="*", default=["sim_fraction=0.125", "sim.num_envs=64", "gate.episodes=64",
                                                   "batch_size=32", "learner.learning_rate=3e-4"],
                    help="further fleet-learn overrides (configs/learn.yaml keys)")
    ap.add_argument("--canary-episodes", type=int, default=4, help="rollout.min_episodes: canary episodes")
    ap.add_argument("--history-episodes", type=int, default=6, help="rollout.history_episodes: the baseline")
    # the hub judges canaries and watched units on the robots' own (exploring) episodes; set to the stated
    # --tolerance it refuses what they see past it (0.25 until 2026-12-04 let 10-25% drops through)
    ap.add_argument("--canary-tolerance", type=float, default=None,
                    help="rollout.tolerance (relative; default: --tolerance; --quick sets 0.99, as it sets all it names)")
    ap.add_argument("--guard-episodes", type=int, default=3,
                    help="adapter guard episodes per side: a first kept adapter needs 2x this many episodes")
    # 0.05 in 14 runs (4f58fb4) against the same 14 without (758f60e, 887fdb7): no fewer units beyond the tolerance
    ap.add_argument("--drift-kl", type=float, default=0.0,
                    help="adapter.drift_kl of every unit: on-robot learning held within this mean KL of the first "
                         "adapter the unit ran on its trunk (0: no limit, the agent's default)")
    # before 2026-12-05 (seventeenth session) the units ran the solo preset's settings unless told otherwise
    ap.add_argument("--adapter-preset", default="fleet", choices=group_options("adapter_preset"),
                    help="adapter_preset of every unit (configs/adapter_preset/): fleet, as the daemon in a fleet runs")
    ap.add_argument("--guard-floor", type=float, default=None,
                    help="adapter.guard_floor of every unit: the guard also rolls back an update measuring more than "
                         "this fraction below the best kept version (default: the preset's; 0: off)")
    ap.add_argument("--hold-log-std", action="store_true",
                    help="adapter.learn_log_std=false on every unit (default: the preset's): on-robot learning moves "
                         "the mean actions only, the exploration noise stays as the trunk's (rebased) adapter set it")
    ap.add_argument("--tolerance", type=float, default=0.10,
                    help="no fleet unit may lose more than this fraction of its own return (result 1)")
    ap.add_argument("--plaintext", action="store_true", help="hub and robots without CURVE")
    ap.add_argument("--throughput-updates", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help=f"a smoke run of the whole loop: {QUICK}")
    ap.add_argument("--workdir", default="/tmp/fleet_round")
    ap.add_argument("--out", default="", help="default: benchmarks/results/fleet_round.json (--quick: the workdir)")
    args = ap.parse_args(argv)
    if args.quick:
        for k, v in QUICK.items():
            setattr(args, k, v)
    if args.canary_tolerance is None:
        args.canary_tolerance = args.tolerance
    name = "fleet_round.json" if args.seed == 0 else f"fleet_round_seed{args.seed}.json"
    args.out = args.out or str(Path(args.workdir if args.quick else "benchmarks/results") / name)
    args.first_unit += 1000 * args.seed
    args.first_fresh += 1000 * args.seed
    args.learn = [f"sim.seed={args.seed}", f"replay.seed={args.seed}", f"gate.seed={1234 + args.seed}", *args.learn]
    return args


class Stages:
    """Wall-clock and this process's CPU seconds of each stage (children, e.g. adapter trainers, not counted)."""

    def __init__(self) -> None:
        self.seconds: dict[str, dict[str, float]] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        """Time the block as stage ``name``, and print it."""
        t0, c0 = time.perf_counter(), time.process_time()
        yield
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        self.seconds[name] = {"wall": wall, "cpu": cpu}
        print(f"[fleet_round] {name}: {wall:.0f} s ({cpu:.0f} s CPU in this process)", flush=True)


def measure_units(units: list[Unit], arms_of: Any, episodes: int) -> dict[str, dict[str, Any]]:
    """Each unit's replica returns for the arms ``arms_of(unit)`` gives, as mean and standard error per arm."""
    out = {}
    for u in units:
        arms = arms_of(u)
        got = replica_returns(u.task, u.hardware, u.gap, u.seed, arms, episodes)
        out[u.robot_id] = {name: stats(r) for name, r in got.items()}
        print(f"[fleet_round]   {u.robot_id}: " + ", ".join(f"{k} {v['mean']:.1f} +- {1.96 * v['se']:.1f}"
                                                         for k, v in out[u.robot_id].items()), flush=True)
    return out


def rollout_phase(fleet: Fleet, storage: Path, candidate: int, timeout_s: float) -> dict[str, Any]:
    """The units run until the hub's canary trial of ``candidate`` has ended (after a promotion, its watch of every
    other unit too: fleet/unit_watch.py) and each unit runs what the hub wants for it: the current trunk, or the
    one the watch holds it back on."""
    def wanted() -> dict[str, int] | None:
        cur, step = TrunkStore(storage).current(), rollout_settled(storage, candidate)
        if cur is None or step is None or (step["event"] == "promoted" and not any(
                s["event"] == "watch_ended" for s in rollout_steps(storage, candidate))):
            return None
        holds = read_holds(storage)
        return {r: holds.get(r, cur.version) for r in fleet.trunk_versions()}

    ok = fleet.run_until(lambda: wanted() == fleet.trunk_versions(), timeout_s)
    step, steps = rollout_settled(storage, candidate), rollout_steps(storage, candidate)
    return {"outcome": step["event"] if step else "not_settled", "rollout": steps,
            "held_back": sorted(s["robot"] for s in steps if s["event"] == "unit_held_back"),
            "every_unit_where_the_hub_wants": ok, "unit_trunks": fleet.trunk_versions(),
            "unit_adapter_sources": fleet.adapter_sources()}


def unit_adapters(storage: Path, trunks: dict[int, FleetPolicy],
                  runs: dict[str, int]) -> tuple[dict[str, Adapter], dict[str, Any]]:
    """Each unit's newest uploaded adapter for the trunk it runs (``runs``: the current one, or the one the unit
    watch holds it back on), and their stored records."""
    adapters: dict[str, Adapter] = {}
    records: dict[str, Any] = {}
    for v in sorted(set(runs.values())):
        got, recs = fleet_adapters(storage, trunks[v], v)
        adapters.update({r: a for r, a in got.items() if runs.get(r) == v})
        records.update({r: rec for r, rec in recs.items() if runs.get(r) == v})
    return adapters, records


def fleet_round(k: int, fleet: Fleet, storage: Path, current: tuple[Path, FleetPolicy, int], args: argparse.Namespace,
                run: Path, stage: Stages, trunks: dict[int, FleetPolicy],
                runs: dict[str, int]) -> tuple[dict[str, Any], tuple[Path, FleetPolicy, int]]:
    """One round (module docstring): its record and the fleet's current trunk after it. ``trunks``: every version's
    policy; ``runs``: the version each unit runs, updated here (a unit held back by the hub's watch runs an older
    one)."""
    _, policy, version = current
    with stage(f"round {k}: units' episodes"):
        fleet.run_episodes(args.episodes)
    stored = {r: len(eps) for r, eps in stored_episodes(storage).items()}
    old, all_records = unit_adapters(storage, trunks, runs)
    # the learner rebases every unit's adapter (a held unit's from the trunk it runs); the other target is measured
    # for units on the current trunk only
    records = {r: rec for r, rec in all_records.items() if runs[r] == version}
    print(f"[fleet_round] round {k}: units ran {args.episodes} episodes on v{version}; stored episodes {stored}; "
          f"{len(old)} adapters uploaded for v{version}", flush=True)
    out = run / "learn" / f"round_{k}"
    cfg = learn_config(storage, out, args.types, [f"updates={args.updates}", *args.learn])
    with stage(f"round {k}: fleet-learn"):
        code = run_learn(cfg)
    if code not in (EXIT_OK, EXIT_REFUSED):
        raise RuntimeError(f"round {k}: fleet-learn exited {code}")
    cand_path = out / "round_1" / "candidate"
    cand, manifest = load_checkpoint(cand_path)
    cand_version = int(manifest["trunk_version"])
    row: dict[str, Any] = {"round": k, "trunk": version, "candidate": cand_version, "stored_episodes": stored,
                           "adapters_uploaded": sorted(old),
                           "adapter_versions": {r: [all_records[r].adapter_version, all_records[r].trunk_version]
                                                for r in sorted(old)},  # [adapter, the trunk it was trained on]
                           "learn_exit": code,
                           "outcome": "gate_refused", "rollout": []}
    if code == EXIT_OK:
        with stage(f"round {k}: canary roll-out"):
            row.update(rollout_phase(fleet, storage, cand_version, args.rollout_timeout_s))
    row["guard_verdicts"] = fleet.take_verdicts()  # the round's on-robot learning, as each unit's guard judged it
    rebased, _ = rebased_adapters(out / "round_1" / "adapters", cand, all_records) if code == EXIT_OK else ({}, {})
    # the other rebase target, measured beside what the units got (never sent to them)
    other = residual_adapters(cfg, policy, cand, {r: a for r, a in old.items() if r in records}) \
        if code == EXIT_OK else {}

    def arms_of(u: Unit) -> list[Arm]:
        a = old.get(u.robot_id)
        # what the unit ran, also as it ran it: exploring (the robots learn on-robot, so they sample their actions)
        ran = [Arm("old", trunks[runs[u.robot_id]], a), Arm("old_explore", trunks[runs[u.robot_id]], a, explore=True)]
        if code != EXIT_OK:
            return ran
        # the other target is computed for units on the current trunk only: a held unit gets no such arm
        extra = [Arm("other_rebase", cand, other[u.robot_id])] if u.robot_id in other else []
        return [*ran, Arm("naive", cand, a), Arm("rebased", cand, rebased.get(u.robot_id)),
                Arm("rebased_explore", cand, rebased.get(u.robot_id), explore=True), *extra]

    print(f"[fleet_round] round {k}: candidate v{cand_version} {row['outcome']}; replica returns (old: v{version} + "
          f"its adapter; naive / rebased: v{cand_version} + the old / the rebased adapter)", flush=True)
    with stage(f"round {k}: replica returns"):
        row["units"] = measure_units(fleet.units, arms_of, args.eval_episodes)
    promoted, held = row["outcome"] == "promoted", set(row.get("held_back", []))
    for robot, r in row["units"].items():  # a unit the watch held back runs what it ran before, as before
        set_after(r, promoted and robot not in held)
    if promoted:
        trunks[cand_version] = cand
        runs.update({r: cand_version for r in runs if r not in held})
    return row, ((cand_path, cand, cand_version) if promoted else current)


def residual_adapters(cfg: LearnConfig, policy: FleetPolicy, cand: FleetPolicy,
                      old: dict[str, Adapter]) -> dict[str, Adapter]:
    """Each unit's adapter rebased onto ``cand`` with the rebase target the learner did not use (merged <->
    residual, ``shared_policy.rebase``), on the same stored observations and settings."""
    target = "merged" if cfg.rebase.target == "residual" else "residual"
    observations = robot_observations(experience_reader(cfg), set(old), cfg.max_rebase_observations)
    return {robot: rebase_adapter(policy, a, cand, a.hardware, observations[robot],
                                  replace(cfg.rebase, target=target))[0]
            for robot, a in old.items() if len(observations.get(robot, ())) >= 2}


def fresh_units(units: list[Unit], v1: FleetPolicy, last: FleetPolicy, control: FleetPolicy,
                episodes: int) -> dict[str, Any]:
    """Result 2: fresh units zero-shot (no adapter) on v1, on the last trunk and on the sim-only control."""
    rows = measure_units(units, lambda u: [Arm("sim_only", v1), Arm("fleet", last), Arm("sim_control", control)],
                         episodes)
    return {"units": rows, "fleet_vs_sim_only": paired(rows, "fleet", "sim_only"),
            "fleet_vs_sim_control": paired(rows, "fleet", "sim_control"),
            "sim_control_vs_sim_only": paired(rows, "sim_control", "sim_only")}


def learner_throughput(policy: FleetPolicy, cfg: LearnConfig, args: argparse.Namespace) -> dict[str, Any]:
    """Result 4: V-trace against PPO transitions/s per type, on the learner's batch (sequences x length)."""
    out: dict[str, Any] = {"batch_size": cfg.batch_size, "sequence_length": cfg.replay.sequence_length}
    for hw in args.types:
        t = measure_throughput(policy, hw, steps=cfg.replay.sequence_length, batch=cfg.batch_size,
                               updates=args.throughput_updates, learner_cfg=cfg.learner)
        print(f"[fleet_round] {hw} {t.summary()}", flush=True)
        out[hw] = {"vtrace_transitions_per_s": t.vtrace_transitions_per_s,
                   "ppo_transitions_per_s": t.ppo_transitions_per_s, "transitions_per_update": t.transitions_per_update,
                   "ratio": t.vtrace_transitions_per_s / t.ppo_transitions_per_s}
    out["ratio"] = float(np.mean([out[hw]["ratio"] for hw in args.types]))
    return out


def start_hub(run: Path, units: list[Unit], args: argparse.Namespace) -> tuple[HubProcess, Path | None]:
    """The real fleet-hub process with a canary per type (the first unit of each) and its keys (None: plain)."""
    keys = None if args.plaintext else make_keys(run / "keys", [u.robot_id for u in units])
    canaries = [next(u.robot_id for u in units if u.hardware == hw) for hw in args.types]
    hub = HubProcess(run, free_port(), run / "hub", keys, f"rollout.canary_robots=[{','.join(canaries)}]",
                     f"rollout.min_episodes={args.canary_episodes}", f"rollout.history_episodes={args.history_episodes}",
                     f"rollout.tolerance={args.canary_tolerance}", f"rollout.max_wait_s={args.rollout_timeout_s}",
                     "parquet_export=false", "metrics.wandb=false", "heartbeat_ms=500")
    return hub, keys


def lock_workdir(work: Path) -> TextIO:
    """An exclusive lock on ``work``, or exit naming it: a second run in the same workdir would delete the first
    one's fleet and share its hub store (the trunk store refuses the second publisher mid-run)."""
    work.mkdir(parents=True, exist_ok=True)
    f = open(work / ".fleet_round.lock", "w")  # held open for the run: closing it releases the lock
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise SystemExit(f"fleet_round: another run holds the workdir {work}: give this one its own --workdir") from None
    return f


def main() -> None:
    args = parse_args()
    args.rollout_timeout_s = 900.0
    torch.set_num_threads(1)  # the agents set it for the whole process anyway; a shared 2-core machine
    stage, t_start = Stages(), time.perf_counter()
    work = Path(args.workdir)
    lock = lock_workdir(work)  # held to the end: two runs in one workdir would share one hub store and fleet
    run = work / "run"
    shutil.rmtree(run, ignore_errors=True)  # agents resume from their state dirs: a rerun starts a new fleet
    run.mkdir(parents=True)
    units = make_units(args.types, args.units_per_type, args.first_unit)
    fresh = make_units(args.types, args.fresh_per_type, args.first_fresh)
    with stage("pretrain (or cached)"):
        v1_path = pretrain_trunk(args.types, args.pretrain_iterations, args.num_envs, work, args.pretrain_seed)
    v1, _ = load_checkpoint(v1_path)
    v1_digest = weights_digest(v1)  # as loaded, before anything runs it
    TrunkStore(run / "hub").publish(v1_path)
    hub, keys = start_hub(run, units, args)
    fleet = Fleet(units, run, AgentSettings(v1_path, hub.endpoint, keys, guard_episodes=args.guard_episodes,
                                             drift_kl=args.drift_kl, adapter_preset=args.adapter_preset,
                                             guard_floor=args.guard_floor,
                                             learn_log_std=False if args.hold_log_std else None))
    rounds, current = [], (v1_path, v1, 1)
    trunks, runs = {1: v1}, {u.robot_id: 1 for u in units}
    try:
        for k in range(1, args.rounds + 1):
            row, current = fleet_round(k, fleet, run / "hub", current, args, run, stage, trunks, runs)
            rounds.append(row)
    finally:
        hub.stop()
    cfg = learn_config(run / "hub", run / "control", args.types, [f"updates={args.updates}", *args.learn])
    promoted = sum(r["outcome"] == "promoted" for r in rounds)  # the rounds the last trunk builds on
    with stage("sim-only control"):
        control = sim_only_control(v1_path, cfg, promoted, run / "control")
    print("[fleet_round] fresh units, zero-shot: v1 | the last trunk | the sim-only control", flush=True)
    with stage("fresh units"):
        fresh_result = fresh_units(fresh, v1, current[1], control, args.eval_episodes)
    with stage("learner throughput"):
        throughput = learner_throughput(current[1], cfg, args)
    fleet_result, rebase = fleet_returns(rounds, args.tolerance), rebase_effect(rounds)
    fleet_result["exploring"] = fleet_returns(rounds, args.tolerance, EXPLORING)
    report(fleet_result, fresh_result, rebase, rounds)
    line = summary_line(fleet_result, fresh_result, rebase, throughput, rounds)
    unit_adapter = agent_config(units[0], run, fleet.settings, max_episodes=0).adapter  # as every unit ran it
    adapter = {"preset": args.adapter_preset, **{k: getattr(unit_adapter, k) for k in adapter_preset(args.adapter_preset)}}
    write_result(args.out, line, {"args": vars(args), "adapter": adapter, "setups": {hw: UNIT_SETUPS[hw] for hw in args.types},
                                  "fleet_units": [u.robot_id for u in units], "fresh_units": [u.robot_id for u in fresh],
                                  "pretrain": {**pretrain_record(v1_path), "weights_sha256": v1_digest},
                                  "agent_faults": fleet.faults, "rounds": rounds, "fleet": fleet_result,
                                  "fresh": fresh_result, "rebase": rebase, "throughput": throughput,
                                  "seconds": stage.seconds, "minutes": (time.perf_counter() - t_start) / 60})
    lock.close()


def report(fleet: dict[str, Any], fresh: dict[str, Any], rebase: dict[str, Any], rounds: list[dict[str, Any]]) -> None:
    """The figures, in words, before the summary line."""
    for r in rounds:
        verdicts = [f"{s['robot']} {'pass' if s.get('passed') else 'FAIL'} ({s.get('mean_candidate', float('nan')):.1f} "
                    f"vs {s.get('mean_previous', float('nan')):.1f})" for s in r["rollout"] if s["event"] == "canary_verdict"]
        print(f"round {r['round']}: v{r['trunk']} -> candidate v{r['candidate']}: {r['outcome']}; canaries: "
              f"{', '.join(verdicts) or 'none'}; held back after it: {', '.join(r.get('held_back', [])) or 'none'}; "
              f"steps: {' > '.join(s['event'] for s in r['rollout'])}")
    m = fleet["fleet_mean"]
    print(f"fleet units: mean return {m['before']:.1f} before, {m['after_round_1']:.1f} after round 1, "
          f"{m['after_last_round']:.1f} after round {len(rounds)} (gain {fleet['mean_gain']:+.3f} relative); worst unit "
          f"{fleet['worst_unit']} {fleet['worst_unit_delta']:+.3f} of its own return (tolerance -{fleet['tolerance']:.2f}: "
          f"{len(fleet['units_beyond_tolerance'])} units beyond it, {len(fleet['units_surely_beyond'])} with their "
          f"95% interval beyond, {len(fleet['units_surely_within'])} within)")
    if "exploring" in fleet:
        e = fleet["exploring"]
        print(f"fleet units acting as on-robot (sampled actions): mean return {e['fleet_mean']['before']:.1f} before, "
              f"{e['fleet_mean']['after_last_round']:.1f} after round {len(rounds)}; worst unit {e['worst_unit']} "
              f"{e['worst_unit_delta']:+.3f} ({len(e['units_beyond_tolerance'])} units beyond the tolerance, "
              f"{len(e['units_surely_beyond'])} with their 95% interval beyond, {len(e['units_surely_within'])} within)")
    for name, p in (("last trunk vs v1", fresh["fleet_vs_sim_only"]),
                    ("last trunk vs sim-only control", fresh["fleet_vs_sim_control"]),
                    ("sim-only control vs v1", fresh["sim_control_vs_sim_only"])):
        lo, hi = p["interval"]
        verdict = "helps" if lo > 0 else "hurts" if hi < 0 else "no difference the units can resolve"
        print(f"fresh units zero-shot, {name}: {p['mean_difference']:+.1f} [{lo:+.1f}, {hi:+.1f}] (95% paired t, "
              f"{p['units']} units; {p['relative']:+.3f} relative): {verdict}")
    if rebase.get("rounds"):
        for name in ("rebased_vs_unchanged", "rebased_vs_before_update", "unchanged_vs_before_update",
                     "other_rebase_vs_unchanged", "other_rebase_vs_before_update"):
            if name not in rebase:  # no unit had the observations to rebase on with the other target
                continue
            p = rebase[name]
            print(f"after a trunk update, {name.replace('_', ' ')}: {p['mean_difference']:+.1f} "
                  f"[{p['interval'][0]:+.1f}, {p['interval'][1]:+.1f}] ({p['relative']:+.3f} relative)")


if __name__ == "__main__":
    main()
