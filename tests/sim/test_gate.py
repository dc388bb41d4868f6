"""The trunk gate: sim evaluation on every hardware type refuses a worse candidate and passes an equal one."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import sim
from shared_policy.config import PolicyConfig, PPOConfig
from shared_policy.tracking import NullLogger
from sim.gate import GateConfig, check_candidate
from sim.pretrain import PretrainRunner

TASKS = {"cartpole": "cartpole_swingup"}
FAST = {"episodes": 16}


@pytest.fixture(scope="module")
def current(tmp_path_factory):
    """A briefly pretrained cart-pole policy: the fleet's current trunk."""
    env = sim.make_env("cartpole_swingup", "cartpole", 32, seed=0, episode_length_s=4.0)
    runner = PretrainRunner([env], PolicyConfig(latent_dim=32, trunk_hidden=[32], stem_hidden=[32],
                                                critic_hidden=[32]), PPOConfig(num_steps_per_env=16),
                            tmp_path_factory.mktemp("gate"), NullLogger(), checkpoint_every=10**6)
    runner.learn(5, log_every=10**6)
    env.close()
    return runner.policy


@pytest.mark.timeout(300)
def test_an_unchanged_candidate_passes(current):
    verdict = check_candidate(current, copy.deepcopy(current), GateConfig(tasks=TASKS, **FAST))
    assert verdict.passed, verdict.reasons
    (hw,) = verdict.hardware
    assert hw.candidate_mean == pytest.approx(hw.current_mean)  # same worlds, same seed: the same episodes


@pytest.mark.timeout(300)
def test_a_trunk_made_worse_on_purpose_is_refused(current):
    worse = copy.deepcopy(current)
    with torch.no_grad():
        worse.heads["cartpole"].mean.bias.fill_(3.0)  # full force one way, whatever the pole does
    verdict = check_candidate(current, worse, GateConfig(tasks=TASKS, **FAST))
    assert not verdict.passed
    (hw,) = verdict.hardware
    assert hw.candidate_mean < hw.current_mean and hw.diff_high < 0
    assert "cartpole" in verdict.reasons[0]


def test_non_finite_weights_and_a_missing_type_are_refused_before_any_evaluation(current):
    broken = copy.deepcopy(current)
    with torch.no_grad():
        next(broken.trunk.parameters())[0, 0] = float("nan")
    verdict = check_candidate(current, broken, GateConfig(tasks={**TASKS, "arm2_planar": "reach"}, **FAST))
    assert not verdict.passed and verdict.hardware == ()
    assert any("non-finite" in r for r in verdict.reasons)
    assert any("arm2_planar" in r for r in verdict.reasons)


def test_bad_gate_settings_name_their_key():
    with pytest.raises(ValueError, match="gate.tasks"):
        GateConfig().validate()
    with pytest.raises(ValueError, match="gate.tolerance"):
        GateConfig(tasks=TASKS, tolerance=1.5).validate()


def test_paired_interval_is_the_mean_difference_plus_minus_t_times_its_standard_error():
    from sim.gate import paired_interval

    current = np.array([10.0, 12.0, 11.0, 13.0])
    candidate = np.array([11.0, 12.0, 13.0, 14.0])  # differences 1, 0, 2, 1: mean 1, sd sqrt(2/3)
    low, high = paired_interval(current, candidate)
    half = 3.18 * np.sqrt(2 / 3) / 2  # t(0.975, 3 dof) x sd / sqrt(4)
    assert low == pytest.approx(1 - half) and high == pytest.approx(1 + half)


@pytest.mark.timeout(300)
def test_a_candidate_slightly_worse_but_within_the_tolerance_passes(current):
    slightly = copy.deepcopy(current)
    with torch.no_grad():
        slightly.heads["cartpole"].mean.bias.add_(0.02)
    verdict = check_candidate(current, slightly, GateConfig(tasks=TASKS, tolerance=0.5, **FAST))
    (hw,) = verdict.hardware
    assert hw.candidate_mean != hw.current_mean  # it did change what the policy does
    assert verdict.passed, verdict.reasons
