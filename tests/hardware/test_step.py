"""The step contract shared by sim and robot: how episodes end, what a step earns, when goals change."""

from __future__ import annotations

import copy

import numpy as np

from hardware.profile import load_profile
from hardware.step import StepContract
from hardware.tasks import task_class
from hardware.tasks.config import task_config


def _locomotion(**overrides):
    cfg = task_config("locomotion", {"episode_length_s": 0.2, "command_period_s": 0.1, **overrides})
    return task_class("locomotion")(cfg, load_profile("go2_like"))


def _standing_state(task, n):
    """n upright quadrupeds at their default pose (nothing fails)."""
    from hardware.state import RobotState

    j = task.profile.num_actions
    return RobotState(joint_pos=np.zeros((n, j)), joint_vel=np.zeros((n, j)),
                      base_quat=np.tile([1.0, 0, 0, 0], (n, 1)), base_ang_vel=np.zeros((n, 3)),
                      base_lin_vel=np.zeros((n, 3)), base_pos=np.tile([0, 0, 0.3], (n, 1)),
                      foot_contact=np.ones((n, 4)), joint_torque=np.zeros((n, j)))


def test_time_out_failure_divergence_and_cut_end_episodes_as_learners_need():
    task = _locomotion()
    n = 4
    contract = StepContract(task, n)
    inputs = task.make_inputs(n)
    rng = np.random.default_rng(0)
    contract.begin_episodes(rng, inputs, np.arange(n))
    state = _standing_state(task, n)
    state.base_pos[1, 2] = 0.05  # robot 1 lies on the ground: the task fails it
    diverged = np.array([False, False, True, False])  # robot 2's physics blew up
    truncated = np.array([False, False, False, True])  # robot 3's runner cut the episode short
    r = contract.step(state, inputs, np.zeros((n, task.profile.num_actions)), rng, diverged=diverged,
                      truncated=truncated)
    assert r.terminated.tolist() == [False, True, True, False]
    assert r.time_out.tolist() == [False, False, False, True]  # a cut is bootstrapped like a time-out
    assert r.done.tolist() == [False, True, True, True] and r.num_done == 3
    assert r.reward[2] == 0.0 and r.reward[0] != 0.0  # a diverged world earns nothing
    # robot 0 runs to the episode's length: a time-out, not a failure
    for _ in range(task.max_episode_length - 1):
        r = contract.step(state, inputs, np.zeros((n, task.profile.num_actions)), rng)
    assert contract.episode_length[0] == task.max_episode_length and r.time_out[0] and not r.terminated[0]


def test_goals_change_only_for_episodes_that_go_on_and_a_deferred_reward_reads_the_old_one():
    task = _locomotion(episode_length_s=0.1)  # the time-out falls on the goal period's boundary
    period = task.goal_period_steps
    assert task.max_episode_length == period
    contract = StepContract(task, 2)
    inputs = task.make_inputs(2)
    rng = np.random.default_rng(1)
    contract.begin_episodes(rng, inputs, np.arange(2))
    state = _standing_state(task, 2)
    state.base_lin_vel[:] = [0.3, 0.1, 0.0]
    contract.episode_length[1] = -period  # robot 1 is a whole period behind: its episode goes on
    eager = copy.deepcopy(contract), copy.deepcopy(inputs), copy.deepcopy(rng)
    action = np.zeros((2, task.profile.num_actions))
    for _ in range(period - 1):
        contract.step(state, inputs, action, rng)
        eager[0].step(state, eager[1], action, eager[2])
    before = inputs.command.copy()
    r = contract.step(state, inputs, action, rng, defer_reward=True)
    e = eager[0].step(state, eager[1], action, eager[2])
    assert r.done.tolist() == [True, False]
    assert (inputs.command[0] == before[0]).all()  # the ended episode keeps its goal for its bootstrap
    assert (inputs.command[1] != before[1]).all()  # the one going on gets its next goal
    assert (inputs.command == eager[1].command).all()
    np.testing.assert_array_equal(r.reward, e.reward)  # read after the re-draw, earned under the old goal
    np.testing.assert_array_equal(contract.episode_return, eager[0].episode_return)
