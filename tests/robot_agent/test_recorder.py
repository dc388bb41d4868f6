"""The agent's transitions are the simulator's: the same states and actions give the same rows."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import sim
from robot_agent.recorder import TransitionRecorder


class ChunkList:
    """An experience sink that keeps the chunks in memory."""

    def __init__(self):
        self.chunks: list[tuple[dict, dict]] = []

    def put(self, header, arrays):
        self.chunks.append((header, arrays))


@pytest.mark.timeout(300)
def test_recorder_and_a_one_world_env_give_identical_transitions_for_the_same_states():
    # an episode of 3 goal periods: goals are re-drawn twice inside it, and its time-out falls on a boundary
    env = sim.make_env("locomotion", "go2_like", 1, seed=3, nthread=1, keep_final_obs=True, episode_length_s=0.6,
                       command_period_s=0.2, init_joint_noise=0.0, init_vel_noise=0.0,
                       randomization={"enabled": False})
    reads = []  # every state the env reads, as it read it (the state an episode ended at included)
    read = env._read_state
    env._read_state = lambda: reads.append(copy.deepcopy(s := read())) or s
    sink = ChunkList()
    rec = TransitionRecorder(env.task, env.obs_layout, env.priv_layout, sink, chunk_steps=10_000,
                             rng=np.random.default_rng(), header={})
    rec.begin(0, 0, 0)
    rec.inputs.command[:] = env.inputs.command  # the episode's first goal, drawn by the env's reset
    rec.rng = copy.deepcopy(env.rng)  # the later goals come from the same stream as the env's
    state = copy.deepcopy(env.state)
    actions = np.random.default_rng(0).uniform(-0.3, 0.3, (env.max_episode_length, env.num_actions))
    env_rows = []
    for k in range(env.max_episode_length + 1):
        obs, done = rec.observe(state, cut_short=False)
        if k == 0:
            np.testing.assert_array_equal(obs, env.get_observations()[0].numpy())
        if done:
            rec.record(0.0, state, obs, None)
            break
        rec.record(0.0, state, obs, actions[k], log_prob=0.0)
        before = env.get_observations()[0].numpy(), env.get_privileged_observations()[0].numpy()
        _, rew, d, extras = env.step(actions[k][None])
        env_rows.append((*before, float(rew[0]), bool(d[0]), bool(extras["time_outs"][0]),
                         extras.get("final_observation")))
        state = reads[-2] if d[0] else reads[-1]  # a finished world's next read is its reset
    assert done and len(env_rows) == env.max_episode_length and env_rows[-1][3]
    assert len(sink.chunks) == 1
    header, arrays = sink.chunks[0]
    assert header["episode_end"] and header["steps"] == len(env_rows)
    n_critic = env.num_obs + env.priv_layout.size  # the robot cannot know the sampled physics columns
    for i, (obs, critic, rew, d, time_out, _) in enumerate(env_rows):
        np.testing.assert_array_equal(arrays["obs"][i], obs)
        np.testing.assert_array_equal(arrays["critic_obs"][i, :n_critic], critic[:n_critic])
        assert arrays["rewards"][i] == np.float32(rew) and arrays["dones"][i] == d and arrays["time_outs"][i] == time_out
    # the bootstrap row: the observation at the time-out, under the goal the last reward was earned with
    np.testing.assert_array_equal(arrays["critic_obs"][-1, :env.num_obs], env_rows[-1][5][0].numpy())
    command = env.obs_layout.slices["command"]
    assert len({tuple(c) for c in arrays["obs"][:, command]}) == 3  # two re-draws inside the episode
    np.testing.assert_array_equal(arrays["critic_obs"][-1, command], arrays["obs"][-1, command])


@pytest.mark.timeout(300)
def test_each_chunk_says_the_episode_step_of_its_first_row_and_a_new_episode_starts_at_zero():
    env = sim.make_env("cartpole_swingup", "cartpole", 1, seed=0, nthread=1, episode_length_s=0.5)
    sink = ChunkList()
    rec = TransitionRecorder(env.task, env.obs_layout, env.priv_layout, sink, chunk_steps=7,
                             rng=np.random.default_rng(0), header={})
    state = copy.deepcopy(env.state)
    action = np.zeros(env.num_actions)
    for episode in range(2):
        rec.begin(episode, 0, 0)
        while True:
            obs, done = rec.observe(state, cut_short=False)
            if done:
                rec.record(0.0, state, obs, None)
                break
            rec.record(0.0, state, obs, action, log_prob=0.0)
    for episode in range(2):
        headers = [h for h, _ in sink.chunks if h["episode"] == episode]
        assert len(headers) > 2 and headers[-1]["episode_end"]
        starts = [h["first_step"] for h in headers]
        assert starts == list(np.cumsum([0] + [h["steps"] for h in headers[:-1]]))  # no gap, no overlap
