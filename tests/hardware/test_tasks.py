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
