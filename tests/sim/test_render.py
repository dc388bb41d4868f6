import numpy as np

import sim
from sim.render import EnvRenderer


def test_renders_a_chosen_world_to_an_rgb_array():
    env = sim.make_env("reach", "arm7", num_envs=3, seed=0)
    renderer = EnvRenderer(env, width=96, height=64)
    try:
        frame = renderer.frame(2)
    finally:
        renderer.close()
    assert frame.shape == (64, 96, 3) and frame.dtype == np.uint8
    assert frame.std() > 5  # a scene, not a blank buffer
