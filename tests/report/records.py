"""Demo records as fleet-demo writes them: units of two hardware types drawn from sim/unit_gaps.py, episodes
zero-shot on the pretrained trunk, then with adapters, then on the promoted trunk; pretraining and learner
curves; a roll-out that canaries and promotes v2; a hub and an agent killed. Values are drawn at random around
realistic cart-pole returns, so tests compute what the report must say instead of knowing it."""

from __future__ import annotations

import numpy as np

from fleet.demo.record import DemoRecord, EpisodeRow, RolloutStep, SimReturn, UnitRecord
from sim.unit_gaps import UNIT_SETUPS

HARDWARE = ("cartpole", "cartpole_long")
PRETRAINED, FINAL = 1, 2


def _unit_gap(rng: np.random.Generator, hardware: str) -> tuple[dict, list[str]]:
    gap = UNIT_SETUPS[hardware]["gap"]
    drawn = {k: (int(rng.integers(v[0], v[1] + 1)) if k == "latency_steps" else round(float(rng.uniform(*v)), 3))
             for k, v in gap["physics"].items()}
    outside = [k for k in ("motor_strength", "damping_scale") if k == "motor_strength" or drawn[k] > 1.5]
    return {"physics": drawn, "joint_pos_noise": gap["joint_pos_noise"], "joint_vel_noise": gap["joint_vel_noise"]}, outside


def _episodes(rng: np.random.Generator, t: float, zero: int, adapted: int, fleet: int) -> list[EpisodeRow]:
    eps, base = [], float(rng.uniform(20, 60))
    for i in range(zero):
        eps.append(EpisodeRow(PRETRAINED, 0, base + float(rng.normal(0, 5)), 500, t + i))
    for i in range(adapted):  # the adapter improves as it is retrained (a new version every 2 episodes)
        eps.append(EpisodeRow(PRETRAINED, 1 + i // 2, base + 8 * (i + 1) + float(rng.normal(0, 5)), 500, t + zero + i))
    for i in range(fleet):
        eps.append(EpisodeRow(FINAL, 1 + adapted // 2 + i // 2, base + 60 + float(rng.normal(0, 5)), 500,
                              t + zero + adapted + i))
    return eps


def demo_record(seed: int = 0, units_per_type: int = 2, data_dir: str = "hub") -> DemoRecord:
    """A realistic record of a finished demo run (see the module docstring)."""
    rng = np.random.default_rng(seed)
    t0 = 1_764_600_000.0
    units = []
    for hw in HARDWARE:
        for k in range(units_per_type):
            robot = f"{hw}-{k}"
            gap, outside = _unit_gap(rng, hw)
            sent = int(rng.integers(40, 80))
            units.append(UnitRecord(
                robot, hw, gap, outside, canary=k == 0, restarted=(hw, k) == (HARDWARE[0], 1),
                episodes=_episodes(rng, t0 + 30, int(rng.integers(2, 5)), int(rng.integers(4, 8)), int(rng.integers(2, 4))),
                chunks_sent=sent, chunks_acked=sent, chunks_stored=sent, chunks_lost=0,
                final_trunk_version=FINAL, final_adapter_version=4))
    pretrain = {hw: [[i, 4096.0 * 24 * (i + 1), 10.0 + 25 * np.log1p(i) + float(rng.normal(0, 2))] for i in range(20)]
                for hw in HARDWARE}
    learner = [{"update": i + 1, "round": 1 + i // 6, "cartpole/policy_loss": float(rng.normal(0, 0.1)),
                "cartpole_long/policy_loss": float(rng.normal(0, 0.1)), "cartpole_long/value_loss": float(3.0 / (i + 1)),
                "cartpole/value_loss": float(2.0 / (i + 1)), "sim/loss/policy": float(rng.normal(0, 0.1))}
               for i in range(12)]
    rollout = [RolloutStep(t0 + 200, "published_candidate", FINAL, {"by": "hand", "sha256": "ab" * 32}),
               RolloutStep(t0 + 201, "sent_to_canaries", FINAL, {"by": "hub", "canaries": ["cartpole-0", "cartpole_long-0"],
                                                               "previous": PRETRAINED}),
               RolloutStep(t0 + 230, "canary_verdict", FINAL, {"by": "hub", "robot": "cartpole-0", "passed": True}),
               RolloutStep(t0 + 235, "canary_verdict", FINAL, {"by": "hub", "robot": "cartpole_long-0", "passed": True}),
               RolloutStep(t0 + 236, "promoted", FINAL, {"by": "hub", "previous": PRETRAINED, "why": "verdicts"})]
    return DemoRecord(
        task="cartpole_swingup", hardware=list(HARDWARE), started=t0, finished=t0 + 400, units=units,
        sim_oracle={hw: SimReturn(float(rng.uniform(120, 160)), float(rng.uniform(3, 8)), 16) for hw in HARDWARE},
        pretrain_curve={hw: [[float(x) for x in row] for row in rows] for hw, rows in pretrain.items()},
        learner_curve=learner, rollout=rollout,
        faults=[{"what": "hub SIGKILL", "at_s": 150.0, "back_after_s": 2.5},
                {"what": f"agent {HARDWARE[0]}-1 SIGKILL", "at_s": 170.0, "back_after_s": 4.0}],
        trunk_versions={"pretrained": PRETRAINED, "final": FINAL}, data_dir=data_dir,
        wandb_dirs=["wandb/offline-run-20261201_180000-pretrain"],
        summary_line=f"demo robots={len(units)} chunks_acked=1 chunks_stored=1 lost=0 trunk=v{FINAL} report=report")
