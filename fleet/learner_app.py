"""fleet-learn: fleet learning rounds end to end, from the hub's stored experience to a published trunk.

    fleet-learn storage_dir=fleet_data updates=200 sim_fraction=0.25 gate.episodes=64
    torchrun --standalone --nproc_per_node=2 $(which fleet-learn) storage_dir=fleet_data ...

A round: fill the replay from the store (or ``replay.source=parquet``), dropping chunks too stale to correct and
respecting the rate limiter; run ``updates`` slots of V-trace updates with each robot's latest adapter applied
to its columns, ``sim_fraction`` of them sim PPO iterations on every hardware type (``fleet.learner_round``);
then, on rank 0, save the candidate (trunk version current + 1), gate it in sim against the current trunk,
and if it passes rebase every robot's adapter onto it and publish it (``fleet.learner_release``).

This app is the one place ``fleet`` imports ``sim``: the gate and the sim mix run simulated worlds.

Exit codes: 0 every round published (or passed, with publish=false); 3 the gate refused a candidate (nothing
published, the reasons printed); 2 bad config or inputs (the message names the key); 1 any other error.
"""

from __future__ import annotations

import copy
import hashlib
import json
import sys
import tempfile
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

import sim
from configs import CONFIG_DIR
from fleet.adapter_store import StoredAdapter
from fleet.learner_config import LearnConfig, register_configs
from fleet.learner_inputs import (
    FreshChunks,
    decode_running,
    encode_running,
    experience_reader,
    robot_adapters,
    running_adapters,
    trunk_checkpoint,
    trunk_tasks,
)
from fleet.learner_release import release_candidate
from fleet.learner_round import FleetRoundLoop, NoFleetData, curve_columns
from fleet.rank_broadcast import OtherRankFailed, from_rank0, on_every_rank
from fleet.rank_gradients import average_present_gradients
from fleet.replay.feed import ReplayFeeder
from fleet.replay.replay import FleetReplay
from fleet.store import StoreError
from fleet.trunk_store import TrunkStoreError
from shared_policy.adapter import Adapter, load_adapter
from shared_policy.checkpoint import CheckpointError, load_checkpoint
from shared_policy.policy import FleetPolicy
from shared_policy.tracking import CurveFile, NullLogger, RunLogger, open_logger
from shared_policy.vtrace_learner import VTraceLearner
from sim.pretrain import DistributedContext, PretrainRunner, hardware_spec

register_configs()
EXIT_OK, EXIT_ERROR, EXIT_CONFIG, EXIT_REFUSED = 0, 1, 2, 3
CURVE_FILE = "curve.csv"  # in output_dir: one row per update slot (fleet.learner_round.curve_columns)


def weights_digest(policy: FleetPolicy) -> str:
    """sha256 of every weight and normaliser statistic, in state-dict order (equal on ranks in sync)."""
    h = hashlib.sha256()
    for name, t in policy.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def rebased_adapters(adapters_dir: Path, policy: FleetPolicy,
                     stored: dict[str, StoredAdapter]) -> tuple[dict[str, Adapter], dict[str, int]]:
    """The adapters a release wrote, loaded for the next round (a robot whose adapter was not rebased has none),
    and the version each was numbered."""
    out, versions = {}, {}
    for robot, rec in stored.items():
        path = adapters_dir / f"{robot}.safetensors"
        if path.is_file():
            out[robot], meta = load_adapter(path, policy, rec.hardware)
            versions[robot] = int(meta["version"])
    return out, versions


def _released(logger: RunLogger, step: int, *args: Any) -> bytes:
    """``release_candidate(*args)``, logged, as what every rank needs of it (JSON: passed, version)."""
    rel = release_candidate(*args)
    logger.log({"gate/passed": float(rel.passed), "trunk_version": float(rel.version)}, step=step)
    return json.dumps({"passed": rel.passed, "version": rel.version}).encode()


def run_learn(cfg: LearnConfig, plain: dict | None = None) -> int:
    """Run ``cfg.rounds`` rounds; returns the exit code (module docstring). ValueError names a bad key."""
    cfg.validate()
    ctx = DistributedContext("cpu")
    logger: RunLogger = NullLogger()
    envs: list[sim.BatchedEnv] = []
    failed = False
    try:
        out = Path(cfg.output_dir)
        torch.manual_seed(cfg.sim.seed + ctx.rank)
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = trunk_checkpoint(cfg, Path(tmp))
            cfg.gate.tasks = trunk_tasks(cfg, checkpoint)
            envs = [sim.make_env(task, hw, cfg.sim.num_envs if cfg.sim_fraction > 0 else 1,
                                 seed=cfg.sim.seed + 1000 * ctx.rank) for hw, task in cfg.gate.tasks.items()]
            # the trunk's layouts and hardware profiles must be the sim's, or neither gate nor sim mix means much
            current, manifest = load_checkpoint(checkpoint, expected={e.profile.name: hardware_spec(e) for e in envs})
        version = int(manifest["trunk_version"])
        runner = None
        if cfg.sim_fraction > 0:
            runner = PretrainRunner(envs, current.cfg, cfg.sim.ppo, out, NullLogger(), ctx=ctx,
                                    checkpoint_every=10**9, seed=cfg.sim.seed)
            runner.policy.load_state_dict(current.state_dict())
            policy = runner.policy
        else:
            policy = copy.deepcopy(current)
        # robots held back on an older trunk are rebased from it at release (rank 0 loads those trunks), never
        # applied in learning; every rank holds their records, so after the release every rank loads the same files
        # rank 0 reads which adapter each robot runs, once for every rank: the hub may store an upload meanwhile
        running = decode_running(from_rank0(lambda: encode_running(*running_adapters(cfg.storage_dir, policy,
                                                                                     version)),
                                            "to read the robots' adapters"))
        found = robot_adapters(cfg.storage_dir, policy, version, load_held=ctx.is_main, running=running)
        adapters, stored, others, newest = found.adapters, found.stored, found.held, found.newest
        reader = FreshChunks(experience_reader(cfg), version, cfg.learner.vtrace.max_trunk_staleness)
        replay = FleetReplay(replace(cfg.replay, seed=cfg.replay.seed + ctx.rank))
        feeder = ReplayFeeder(reader, replay, ctx.rank, ctx.world_size)
        learner = VTraceLearner(policy, cfg.learner, version, grad_hook=average_present_gradients)
        if ctx.is_main:
            logger = open_logger(cfg.logger, job="learn", config=plain or {})
            print(f"[learn] trunk v{version} ({', '.join(sorted(policy.specs))}); {len(adapters)} robot adapter(s)"
                  + (f" and {len(others)} held back on older trunks ({', '.join(sorted(others))}: rebased from theirs)"
                     if others else "") + "; "
                  f"{ctx.world_size} process(es); {cfg.rounds} round(s) of {cfg.updates} updates, sim fraction "
                  f"{cfg.sim_fraction:g}", flush=True)
        loop = FleetRoundLoop(learner, replay, feeder, list(policy.specs), adapters, cfg.batch_size,
                              cfg.replay.sample_timeout_s, runner, logger, ctx.is_main)
        loop.curve = CurveFile(out / CURVE_FILE, curve_columns(list(policy.specs)))
        for r in range(1, cfg.rounds + 1):
            label = f"round {r}/{cfg.rounds}"
            inserted = loop.fill()
            print(f"[learn] {label} rank {ctx.rank}: {inserted} sequences in the replay "
                  f"({ {hw: len(replay.table(hw)) for hw in replay.hardware} }); {reader.stale_chunks} stale "
                  f"chunk(s) ({reader.stale_steps} steps) acted more than {cfg.learner.vtrace.max_trunk_staleness} "
                  f"trunk versions before v{version} dropped", flush=True)
            loop.run(cfg.updates, cfg.sim_fraction, cfg.log_every, label, r)
            digest = weights_digest(policy)
            print(f"[learn] rank {ctx.rank}/{ctx.world_size} weights sha256 {digest}", flush=True)
            synced = ctx.in_sync(policy)  # the same answer on every rank
            if ctx.enabled and ctx.is_main:
                print(f"[learn] {ctx.world_size} ranks hold identical weights: {synced}", flush=True)
            if not synced:  # a candidate no single rank holds must not be gated or published
                raise RuntimeError(f"{label}: the ranks' weights differ after the round; nothing is published")
            # rank 0 alone releases; its failure is every rank's, so no rank waits on one that has left
            release = partial(_released, logger, loop.global_step, cfg, current, version, policy, adapters, stored,
                              out / f"round_{r}", plain or {}, others, newest)
            outcome = json.loads(from_rank0(release, f"the release of {label}"))
            if not outcome["passed"]:
                return EXIT_REFUSED
            version = outcome["version"]  # the store's next free number, not always + 1
            current = copy.deepcopy(policy)
            learner.trunk_version = reader.trunk_version = version
            # robots run the rebased adapters on the new trunk; every rank reads rank 0's files
            others = {}  # rebased onto this round's trunk (the old trunks are let go): now on the current one
            adapters, versions = on_every_rank(partial(rebased_adapters, out / f"round_{r}" / "adapters", policy,
                                                       stored), f"loading the rebased adapters of {label}")
            stored = {robot: replace(stored[robot], adapter_version=versions[robot]) for robot in adapters}
            newest = {**newest, **versions}
            loop.adapters = adapters
        return EXIT_OK
    except BaseException:
        failed = True
        raise
    finally:
        for e in envs:
            e.close()
        logger.close()
        ctx.close(together=not failed)  # every return is every rank's (the release's outcome is shared)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="learn")
def learn_main(dcfg: DictConfig) -> None:
    """fleet-learn: fleet learning rounds (module docstring)."""
    try:
        plain = OmegaConf.to_container(dcfg, resolve=True)
        cfg = OmegaConf.to_object(dcfg)
        assert isinstance(cfg, LearnConfig)
        code = run_learn(cfg, plain)
    except (ValueError, CheckpointError, TrunkStoreError, StoreError, FileNotFoundError, NoFleetData) as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = EXIT_CONFIG
    except OtherRankFailed as exc:  # the rank that failed printed the cause and exits with its own code
        print(f"error: {exc}", file=sys.stderr)
        code = EXIT_ERROR
    sys.exit(code)


if __name__ == "__main__":  # `torchrun ... -m fleet.learner_app` where the console script is not installed
    learn_main()
