import numpy as np

from hardware import load_profile
from hardware.state import RobotState
from hardware.tasks import task_class
from hardware.tasks.base import tolerance_gaussian
from hardware.tasks.config import task_config


def test_cartpole_reward_matches_dm_control_smooth_reward():
    profile = load_profile("cartpole")
    task = task_class("cartpole_swingup")(task_config("cartpole_swingup"), profile)
    rng = np.random.default_rng(0)
    n = 1000
    state = RobotState(joint_pos=rng.uniform(-4, 4, (n, 2)), joint_vel=rng.uniform(-20, 20, (n, 2)))
    action = rng.uniform(-1.5, 1.5, (n, 1))
    rew, _ = task.reward(state, task.make_inputs(n), action, np.zeros_like(action))
    x, theta, theta_dot = state.joint_pos[:, 0], state.joint_pos[:, 1], state.joint_vel[:, 1]
    u = np.clip(action[:, 0], -1, 1)
    want = ((np.cos(theta) + 1) / 2 * (1 + tolerance_gaussian(x, 2.0)) / 2 * (4 + np.maximum(1 - u * u, 0)) / 5
            * (1 + tolerance_gaussian(theta_dot, 5.0)) / 2)
    np.testing.assert_allclose(rew, want, rtol=1e-6)  # the gaussian factors use single-precision exp


def test_cartpole_control_cost_is_the_mean_squared_action_and_one_action_gives_the_single_motor_reward():
    cart, pivot = load_profile("cartpole"), load_profile("cartpole_pivot")
    cfg = task_config("cartpole_swingup")
    one, two = task_class("cartpole_swingup")(cfg, cart), task_class("cartpole_swingup")(cfg, pivot)
    rng = np.random.default_rng(1)
    n = 1000
    state = RobotState(joint_pos=rng.uniform(-4, 4, (n, 2)), joint_vel=rng.uniform(-20, 20, (n, 2)))
    u = rng.uniform(-1.5, 1.5, (n, 1))
    single, _ = one.reward(state, one.make_inputs(n), u, np.zeros_like(u))
    # both motors at u cost what the cart's motor alone at u costs, to the last bit
    same, _ = two.reward(state, two.make_inputs(n), np.hstack([u, u]), np.zeros((n, 2)))
    np.testing.assert_array_equal(same, single)
    # in general the cost is the mean over actions of the clipped u^2
    uv = rng.uniform(-1.5, 1.5, (n, 2))
    both, _ = two.reward(state, two.make_inputs(n), uv, np.zeros_like(uv))
    x, theta, theta_dot = state.joint_pos[:, 0], state.joint_pos[:, 1], state.joint_vel[:, 1]
    effort = (np.clip(uv, -1, 1) ** 2).mean(axis=1)
    want = ((np.cos(theta) + 1) / 2 * (1 + tolerance_gaussian(x, 2.0)) / 2 * (5 - effort) / 5
            * (1 + tolerance_gaussian(theta_dot, 5.0)) / 2)
    np.testing.assert_allclose(both, want, rtol=1e-6)
