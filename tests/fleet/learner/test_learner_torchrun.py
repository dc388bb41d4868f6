"""fleet-learn data-parallel under a real ``torchrun`` with 2 CPU processes (gloo): each rank feeds its own shard
of the replay, gradients are all-reduced, both ranks end the round with identical weights, and only rank 0
gates and publishes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fleet.replay.feed import robot_shard
from fleet.trunk_store import TrunkStore
from shared_policy.checkpoint import load_checkpoint
from tests.fleet.learner.experience import FAST, ROBOTS, make_hub

ROOT = Path(__file__).resolve().parents[3]
TORCHRUN = Path(sys.executable).parent / "torchrun"


def torchrun_round(tmp_path: Path, storage: Path, *overrides: str) -> str:
    """One fleet-learn round under torchrun with 2 CPU ranks; its output (exit 0 asserted)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    res = subprocess.run([str(TORCHRUN), "--standalone", "--nproc_per_node=2", "-m", "fleet.learner_app",
                          f"storage_dir={storage}", f"output_dir={tmp_path}/out", *FAST, "learner.learning_rate=1e-5",
                          "gate.tolerance=0.9", *overrides],
                         capture_output=True, text=True, timeout=170, env=env, cwd=tmp_path)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    digests = dict(re.findall(r"\[learn\] rank (\d)/2 weights sha256 ([0-9a-f]{64})", out))
    assert set(digests) == {"0", "1"} and digests["0"] == digests["1"], out
    assert "2 ranks hold identical weights: True" in out
    assert out.count("published trunk v2") == 1  # rank 0 alone publishes
    return out


def shard_fills(out: str) -> dict[int, int]:
    """Sequences each rank's replay took in."""
    return {int(r): int(n) for r, n in re.findall(r"round 1/1 rank (\d): (\d+) sequences", out)}


@pytest.mark.timeout(180)
def test_two_torchrun_ranks_learn_their_own_shards_into_identical_weights(tmp_path, trunk):
    assert {robot_shard(r, 2) for r in ROBOTS} == {0, 1}  # each rank has robots of its own
    storage = make_hub(tmp_path, trunk)
    out = torchrun_round(tmp_path, storage, "sim_fraction=0.25", "sim.ppo.learning_rate=1e-5",
                         "sim.ppo.schedule=fixed")
    fills = shard_fills(out)
    assert fills[0] > 0 and fills[1] > 0  # both shards had data
    assert TrunkStore(storage).versions() == [1, 2]
    candidate, _ = load_checkpoint(tmp_path / "out" / "round_1" / "candidate")
    assert not torch.equal(candidate.trunk[0].weight, trunk[0].trunk[0].weight)


@pytest.mark.timeout(180)
def test_a_rank_whose_shard_has_no_data_still_steps_in_step_with_the_others(tmp_path, trunk):
    robots = ["unit-a", "unit-b", "unit-c"]
    assert {robot_shard(r, 2) for r in robots} == {1}  # rank 0's shard is empty
    storage = make_hub(tmp_path, trunk, robots=robots)
    out = torchrun_round(tmp_path, storage, "sim_fraction=0")
    assert shard_fills(out) == {0: 0, 1: shard_fills(out)[1]} and shard_fills(out)[1] > 0
    candidate, _ = load_checkpoint(tmp_path / "out" / "round_1" / "candidate")
    assert not torch.equal(candidate.trunk[0].weight, trunk[0].trunk[0].weight)  # rank 1's gradients moved it
