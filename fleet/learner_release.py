"""The end of a fleet learning round (rank 0 only): save the candidate, gate it, rebase the adapters, publish.

The candidate is saved as ``<round_dir>/candidate`` with trunk version current + 1 and judged by the sim gate
(``sim.gate.check_candidate``) against the current trunk. A refused candidate is kept for inspection and
nothing else happens. A passed one gets every robot's adapter rebased onto it on that robot's own stored
observations (``shared_policy.rebase``), from the trunk that adapter was trained on (the current one, or for a
robot the hub's unit watch holds back, the older version it runs), written as
``<round_dir>/adapters/<robot_id>.safetensors`` (numbered past the robot's highest adapter version, with the
candidate's trunk version), and is then published through the hub's trunk store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet.adapter_store import StoredAdapter
from fleet.learner_config import LearnConfig
from fleet.learner_inputs import AdapterOnOtherTrunk, experience_reader, robot_observations
from fleet.rollout_log import append_step
from fleet.trunk_store import TrunkStore
from shared_policy.adapter import Adapter, save_adapter
from shared_policy.checkpoint import save_checkpoint
from shared_policy.policy import FleetPolicy
from shared_policy.rebase import rebase_adapter
from sim.gate import check_candidate


@dataclass
class Release:
    """What became of a round's candidate."""

    passed: bool
    version: int  # the candidate's trunk version (the published one when it passed and was published)
    candidate: Path
    reasons: tuple[str, ...] = ()  # why the gate refused it
    adapters_dir: Path | None = None
    rebased: dict[str, Adapter] = field(default_factory=dict)
    published: bool = False


def release_candidate(cfg: LearnConfig, current: FleetPolicy, current_version: int, candidate: FleetPolicy,
                      adapters: dict[str, Adapter], stored: dict[str, StoredAdapter], round_dir: Path,
                      config: dict[str, Any], others: dict[str, AdapterOnOtherTrunk] | None = None,
                      newest: dict[str, int] | None = None) -> Release:
    """Save, gate, rebase and publish ``candidate`` (module docstring). ``adapters`` were trained on ``current``;
    ``others`` on another kept trunk (robots held back on it), each rebased from its own trunk. A rebased adapter
    is numbered past its robot's highest version (``newest``, else the adapter's own)."""
    # the next number the store has not used: a rolled-back candidate keeps its number, so current + 1 may be taken
    used = TrunkStore(cfg.storage_dir).versions() if cfg.publish else []
    version = max([current_version, *used]) + 1
    cand_dir = save_checkpoint(round_dir / "candidate", candidate, version, config=config)
    print(f"[learn] candidate v{version} -> {cand_dir}; gating against v{current_version} "
          f"({cfg.gate.episodes} sim episodes per type)", flush=True)
    verdict = check_candidate(current, candidate, cfg.gate)
    for hw in verdict.hardware:
        print(f"[learn] gate {hw.hardware}: candidate {hw.candidate_mean:.2f} vs current {hw.current_mean:.2f}, "
              f"difference [{hw.diff_low:.2f}, {hw.diff_high:.2f}] (95%), must stay above {hw.threshold:.2f}: "
              f"{'pass' if hw.passed else 'FAIL'}", flush=True)
    if not verdict.passed:
        print(f"[learn] gate refused candidate v{version}; nothing published: {'; '.join(verdict.reasons)}",
              flush=True)
        return Release(False, version, cand_dir, verdict.reasons)

    adapters_dir = round_dir / "adapters"
    # what each robot runs now: its adapter on the current trunk, or (held back) on the trunk it was trained on
    runs = {r: (current, current_version, a, stored[r]) for r, a in adapters.items()}
    runs.update({r: (o.trunk, o.stored.trunk_version, o.adapter, o.stored) for r, o in (others or {}).items()})
    observations = robot_observations(experience_reader(cfg), set(runs), cfg.max_rebase_observations)
    rebased = {}
    for robot, (old_trunk, old_version, adapter, rec) in sorted(runs.items()):
        obs = observations.get(robot)
        if obs is None or len(obs) < 2:
            print(f"[learn] warning: {robot} has no stored observations to rebase its adapter on; it gets none",
                  flush=True)
            continue
        try:
            new, report = rebase_adapter(old_trunk, adapter, candidate, adapter.hardware, obs, cfg.rebase)
        except (RuntimeError, ValueError) as exc:  # e.g. an older trunk of another shape: costs only this robot
            print(f"[learn] warning: {robot}'s adapter (trunk v{old_version}) cannot be rebased onto the candidate: "
                  f"{exc}; it gets none", flush=True)
            continue
        number = max(rec.adapter_version, (newest or {}).get(robot, 0)) + 1
        path = save_adapter(adapters_dir / f"{robot}.safetensors", new, number, version)
        rebased[robot] = new
        print(f"[learn] rebased {robot} ({adapter.hardware}, from trunk v{old_version}) on {report.observations} "
              f"observations: action gap {report.naive_mean_gap:.3f} unchanged -> {report.rebased_mean_gap:.3f} "
              f"rebased (std units) -> {path}", flush=True)
    release = Release(True, version, cand_dir, adapters_dir=adapters_dir, rebased=rebased)
    if cfg.publish:
        # the rebased adapters travel with the trunk, each to its robot; the store refuses the candidate (before
        # writing anything) if another publisher took the number the adapters name
        rec = TrunkStore(cfg.storage_dir).publish(cand_dir, candidate=cfg.publish_candidate,
                                                  adapters=adapters_dir if rebased else None,
                                                  expected_version=version)
        release.published = True
        # the roll-out log tells every step of getting a trunk onto the fleet: this one too, as fleet-hub publish does
        append_step(cfg.storage_dir, "published_candidate" if cfg.publish_candidate else "published", "learner",
                    rec.version, sha256=rec.sha256, rebased_adapters=sorted(rebased))
        how = "as the hub's candidate (its canaries decide)" if cfg.publish_candidate else "as current"
        print(f"[learn] published trunk v{rec.version} {how} (sha256 {rec.sha256[:12]}) to {cfg.storage_dir}, "
              f"with {len(rebased)} rebased adapter(s) from {adapters_dir}", flush=True)
    else:
        print(f"[learn] candidate v{version} passed; publish=false: not published", flush=True)
    return release
