"""Batched MuJoCo environments with an Isaac Gym / rsl_rl-style interface.

One env = one task x one hardware type x N worlds. Physics runs in one native multi-threaded call;
observations, rewards, resets and domain randomisation are vectorised numpy over the N worlds. Every
command passes the robot's own safety filter (:mod:`hardware.safety_filter`, batched), so a policy trains
under the limits a robot enforces; ``extras["safety"]`` counts, per kind, the worlds it changed each step.
Tensors go in and out on ``device``; finished worlds reset themselves inside :meth:`BatchedEnv.step`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from hardware.action import ActionMap
from hardware.compiled import copy_into, kernel
from hardware.observation import ObservationLayout
from hardware.profile import HardwareProfile
from hardware.randomization import PhysicsParams, sample_params
from hardware.safety_filter import SafetyFilter
from hardware.state import RobotState
from hardware.step import StepContract
from hardware.tasks import Task, TaskConfig
from sim.models import RobotModel, build_model
from sim.physics import MuJoCoBatchBackend


class ActionError(ValueError):
    """Actions of the wrong shape, dtype or with non-finite values."""


class BatchedEnv:
    """N worlds of one hardware type running one task."""

    def __init__(self, task: Task, robot: RobotModel, num_envs: int, seed: int = 0, device: str = "cpu",
                 nthread: int = 0, keep_final_obs: bool = False):
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.task, self.robot, self.profile = task, robot, robot.profile
        self.cfg: TaskConfig = task.cfg
        self.num_envs = int(num_envs)
        self.device = torch.device(device)
        self._cpu = self.device.type == "cpu"
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        rand = self.cfg.randomization
        p = self.profile
        self.backend = MuJoCoBatchBackend(robot, self.num_envs, nthread, randomized=rand.randomized(),
                                          exact_reset=False)
        self.decimation = p.decimation
        self.action_map = ActionMap(p)
        self.obs_layout = ObservationLayout(p, p.observation)
        self.priv_layout = ObservationLayout(p, self.cfg.privileged_observation)
        self.num_obs = self.obs_layout.size
        self.num_actions = p.num_actions
        self.num_privileged_obs = self.num_obs + self.priv_layout.size + PhysicsParams.NUM_PRIVILEGED
        self.max_episode_length = task.max_episode_length
        self.dt = 1.0 / p.control_hz
        self.keep_final_obs = keep_final_obs

        n, a = self.num_envs, self.num_actions
        self.inputs = task.make_inputs(n)
        self.episode_length_buf = torch.zeros(n, dtype=torch.long)
        self._ep_len = self.episode_length_buf.numpy()  # shares memory: rsl_rl may write the tensor
        self._obs = np.zeros((n, self.num_obs), dtype=np.float32)
        self._priv = np.zeros((n, self.num_privileged_obs), dtype=np.float32)
        # Sensor noise is uniform with the configured std (half-width std * sqrt(3)), as legged_gym draws it:
        # numpy's uniform generator is ~5x cheaper than its normal one, 190 us a step on the quadruped.
        self._noise_std = self.obs_layout.noise_std(self.cfg.obs_noise_std) * rand.obs_noise
        self._noise_width = (2.0 * np.sqrt(3.0) * self._noise_std).astype(np.float32)
        self._noise_low = (-0.5 * self._noise_width).astype(np.float32)
        self._has_noise = bool(rand.enabled and self._noise_std.any())
        self._params = sample_params(self.rng, rand, n)
        self._params_priv = self._params.privileged()
        self._max_latency = int(rand.latency_steps[1]) if rand.enabled else 0
        # the safety filter acts on the command as it leaves the controller; actuator latency comes after it
        self.safety = SafetyFilter(p, n)
        self._command = np.empty((n, a))
        self._neutral = self.action_map.neutral(1)[0]
        self._action_hist = np.zeros((self._max_latency + 1, n, a))  # the last commands, a ring per world
        self._hist_pos = 0
        self._push_every = int(round(rand.push_interval_s / self.dt)) if rand.enabled else 0
        self._push_dofs = robot.push_dofs
        act = robot.actuator_ids
        self._ctrl_all = bool(len(act) == robot.model.nu and (act == np.arange(robot.model.nu)).all())
        self._with_torque = "torques" in task.scales
        self.step_contract = StepContract(task, n, episode_length=self._ep_len)
        self.num_divergences = 0
        # Sensor noise comes from a splitmix64 stream inside the observation kernel, seeded from ``rng``: numpy's
        # generator plus scaling cost ~5 us a step on cart-pole, as much as the rest of the observation.
        self._noise_state = self._seed_noise()
        self._check_obs = True  # scan observations for NaN only when physics may have produced some
        self._arange = np.arange(n)
        self.extras: dict[str, Any] = {}
        self.state = self._read_state()
        self.reset()

    # -- public API --------------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
        """Reset every world (re-seeding the env's generator when ``seed`` is given); returns (obs, extras)."""
        if seed is not None:
            self.seed = seed
            self.rng = np.random.default_rng(seed)
            self._noise_state = self._seed_noise()
        self._reset_ids(self._arange)
        self.state = self._read_state()
        self._compute_obs()
        self.extras = {"observations": {"critic": self._to_torch(self._priv)}}
        return self._to_torch(self._obs), self.extras

    def get_observations(self) -> torch.Tensor:
        """Current policy observations (N, num_obs)."""
        return self._to_torch(self._obs)

    def get_privileged_observations(self) -> torch.Tensor:
        """Current critic observations (N, num_privileged_obs): policy obs + true state + physics params."""
        return self._to_torch(self._priv)

    def step(self, actions: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        """Apply actions (N, num_actions); returns obs, rewards (N,), dones (N,), extras."""
        act = self._check_actions(actions)
        self._command_actuators(act)
        if self._push_every:
            self._push()
        self.backend.step(self.decimation)
        diverged = self.backend.unstable()
        self._check_obs = diverged is not self.backend.none_diverged
        self.state = state = self._read_state()
        # reward, failure, time-out and goal re-draws: the contract the robot agent's batch of one follows too
        result = self.step_contract.step(state, self.inputs, act, self.rng, diverged=diverged)
        done, time_outs, rew32 = result.done, result.time_out, result.reward
        extras: dict[str, Any] = {}
        if result.num_done:
            ids = np.flatnonzero(done)
            extras["episode"] = self._episode_stats(ids, state, diverged)
            if self.keep_final_obs:
                self._compute_obs()
                extras["final_observation"] = self._to_torch(self._obs)
                extras["final_ids"] = ids
            self.num_divergences += int(diverged.sum())
            self._reset_ids(ids)
            self.state = self._read_state()
        self._compute_obs()
        extras["time_outs"] = self._to_torch(time_outs)
        extras["observations"] = {"critic": self._to_torch(self._priv)}
        extras["divergences"] = int(diverged.sum()) if self._check_obs else 0
        extras["safety"] = self.safety.counts_by_kind(self.safety.step_counts)
        self.extras = extras
        return self._to_torch(self._obs), self._to_torch(rew32), self._to_torch(done), extras

    @property
    def physics_params(self) -> PhysicsParams:
        """The physical parameters currently sampled for every world."""
        return self._params

    def close(self) -> None:
        """Release the worlds (kept for API symmetry with Gymnasium and rsl_rl)."""

    # -- internals ---------------------------------------------------------------------------------
    def _check_actions(self, actions: torch.Tensor | np.ndarray) -> np.ndarray:
        if isinstance(actions, torch.Tensor):
            if not actions.is_floating_point():
                raise ActionError(f"actions must be a floating-point tensor, got {actions.dtype}")
            try:  # a view: the action map does the float64 math
                a = actions.numpy()  # the common case, a CPU tensor without grad: no detached copy of the header
            except RuntimeError:
                a = actions.detach().cpu().numpy()
        elif isinstance(actions, np.ndarray):
            if actions.dtype.kind != "f":
                raise ActionError(f"actions must be floating point, got {actions.dtype}")
            a = actions
        else:
            raise ActionError(f"actions must be a torch.Tensor or numpy array, got {type(actions).__name__}")
        if a.shape != (self.num_envs, self.num_actions):
            raise ActionError(f"actions must have shape ({self.num_envs}, {self.num_actions}) for "
                              f"{self.profile.name}, got {tuple(a.shape)}")
        if not _all_finite(a):
            bad = np.flatnonzero(~np.isfinite(a).all(axis=1))
            raise ActionError(f"actions contain NaN or inf in envs {bad[:8].tolist()}"
                              f"{' ...' if len(bad) > 8 else ''}; nothing was stepped")
        return a

    def _command_actuators(self, act: np.ndarray) -> None:
        """Action -> command -> the robot's safety filter, at the state the policy saw -> actuator latency -> ctrl."""
        direct = self._ctrl_all and not self._max_latency
        cmd = self.action_map.to_command(act, out=self._command)
        safe = self.safety.apply(cmd, self.state, out=self.backend.ctrl if direct else cmd)
        if direct:
            return
        applied = self._delay(safe)
        if self._ctrl_all:
            copy_into(applied, self.backend.ctrl)
        else:
            self.backend.ctrl[:, self.robot.actuator_ids] = applied

    def _delay(self, cmd: np.ndarray) -> np.ndarray:
        if not self._max_latency:
            return cmd
        self._hist_pos = (self._hist_pos + 1) % (self._max_latency + 1)
        applied = np.empty(cmd.shape)  # allocated here: an array made inside a kernel costs ~1 us to hand back
        _delay_actions(self._action_hist, self._hist_pos, cmd, self._params.latency_steps, applied)
        return applied

    def _push(self) -> None:
        due = np.flatnonzero((self._ep_len > 0) & (self._ep_len % self._push_every == 0))
        if len(due):
            v = self.cfg.randomization.push_velocity
            kick = self.rng.uniform(-v, v, size=(len(due), len(self._push_dofs)))
            self.backend.qvel[np.ix_(due, self._push_dofs)] += kick

    def _read_state(self) -> RobotState:
        return self.backend.state(with_torque=self._with_torque)

    def _compute_obs(self) -> None:
        # fresh buffers every step: tensors handed out earlier keep their values without a copy
        self._obs = np.empty_like(self._obs)
        self._priv = np.empty_like(self._priv)
        n_obs, n_priv = self.num_obs, self.priv_layout.size
        # the critic reads the noise-free observation; the policy gets it with sensor noise
        self.obs_layout.build(self.state, self.inputs, out=self._priv[:, :n_obs])
        if n_priv:
            self.priv_layout.build(self.state, self.inputs, out=self._priv[:, n_obs:n_obs + n_priv])
        _finish_observations(self._priv, n_obs, self._params_priv, self._check_obs, self._has_noise,
                             self._noise_low, self._noise_width, self._noise_state, self._obs)

    def _seed_noise(self) -> np.ndarray:
        return self.rng.integers(0, np.iinfo(np.int64).max, size=1, dtype=np.int64).astype(np.uint64)

    def _reset_ids(self, ids: np.ndarray) -> None:
        """Re-sample physics and goals of worlds ``ids`` and put them in a noisy default pose."""
        n = len(ids)
        rand = self.cfg.randomization
        fresh = sample_params(self.rng, rand, n)
        for name, value in vars(fresh).items():
            getattr(self._params, name)[ids] = value
        self._params_priv[ids] = fresh.privileged()  # only the reset rows changed
        self.backend.apply_params(ids, fresh)
        r, c = self.robot, self.cfg
        qpos = np.repeat(r.init_qpos[None], n, axis=0)
        qvel = np.zeros((n, r.model.nv))
        qpos[:, r.joint_qpos_adr] += self.rng.uniform(-c.init_joint_noise, c.init_joint_noise,
                                                      (n, len(r.joint_qpos_adr)))
        qvel[:, r.joint_dof_adr] = self.rng.uniform(-c.init_vel_noise, c.init_vel_noise,
                                                    (n, len(r.joint_dof_adr)))
        if r.free_joint:
            bd = r.base_dof_adr
            qvel[:, bd:bd + 6] = self.rng.uniform(-c.init_vel_noise, c.init_vel_noise, (n, 6))
        self._clamp_to_limits(qpos)
        self.backend.reset(ids, qpos, qvel)
        self.backend.ctrl[ids] = 0.0
        self.backend.ctrl[np.ix_(ids, r.actuator_ids)] = self.action_map.neutral(n)
        self._action_hist[:, ids] = self._neutral
        self.safety.reset(ids)
        self.step_contract.begin_episodes(self.rng, self.inputs, ids)

    def _clamp_to_limits(self, qpos: np.ndarray) -> None:
        for j, adr in zip(self.profile.joints, self.robot.joint_qpos_adr, strict=True):
            if not j.continuous and j.range[0] <= j.default_pos <= j.range[1]:
                np.clip(qpos[:, adr], j.range[0], j.range[1], out=qpos[:, adr])

    def _episode_stats(self, ids: np.ndarray, state: RobotState, diverged: np.ndarray) -> dict[str, Any]:
        success = self.task.success(state, self.inputs)[ids]
        returns = self.step_contract.episode_return
        return {
            "return": float(returns[ids].mean()),
            "length": float(self._ep_len[ids].mean()),
            "success": float(success.mean()),
            "count": len(ids),
            "diverged": int(diverged[ids].sum()),
            # per finished world, in the order of ``ids``
            "ids": ids,
            "returns": returns[ids].copy(),
            "successes": success.astype(np.float64),
        }

    def _to_torch(self, x: np.ndarray) -> torch.Tensor:
        # x is never written again after it is handed out (see _compute_obs), so no copy is needed
        t = torch.from_numpy(x)
        return t if self._cpu else t.to(self.device)


@kernel
def _finish_observations(priv: np.ndarray, n_obs: int, params: np.ndarray, check_finite: bool, noisy: bool,
                         noise_low: np.ndarray, noise_width: np.ndarray, noise_state: np.ndarray,
                         obs: np.ndarray) -> None:
    """Per world: the sampled physics into the critic's last columns; non-finite values (only possible after a
    divergence) to 0 or +-1e3; the policy's observation = the critic's first ``n_obs`` columns + uniform noise
    low + width * U[0, 1), drawn from the splitmix64 stream whose state is ``noise_state[0]``."""
    n, width = priv.shape
    first = width - params.shape[1]
    state = noise_state[0]
    for i in range(n):
        for j in range(params.shape[1]):
            priv[i, first + j] = params[i, j]
        if check_finite:
            for j in range(width):
                v = priv[i, j]
                if np.isnan(v):
                    priv[i, j] = 0.0
                elif np.isinf(v):
                    priv[i, j] = 1e3 if v > 0 else -1e3
        if noisy:
            for j in range(n_obs):
                state += np.uint64(0x9E3779B97F4A7C15)
                z = state
                z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
                z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
                z ^= z >> np.uint64(31)
                u = np.float32(z >> np.uint64(40)) * np.float32(1.0 / (1 << 24))  # 24 random bits in [0, 1)
                obs[i, j] = priv[i, j] + noise_low[j] + noise_width[j] * u
        else:
            for j in range(n_obs):
                obs[i, j] = priv[i, j]
    noise_state[0] = state


@kernel
def _delay_actions(history: np.ndarray, pos: int, actions: np.ndarray, latency: np.ndarray,
                   applied: np.ndarray) -> None:
    """Store ``actions`` at ring slot ``pos`` of ``history`` (slots, N, A); write what each world applies now,
    the action of ``latency[i]`` control steps ago, into ``applied``."""
    slots, n, a = history.shape
    for i in range(n):
        src = (pos - latency[i]) % slots
        for j in range(a):
            history[pos, i, j] = actions[i, j]
            applied[i, j] = history[src, i, j]


@kernel
def _all_finite(a: np.ndarray) -> bool:
    """Whether a 2-D array holds no NaN or inf (stops at the first that does)."""
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            if not np.isfinite(a[i, j]):
                return False
    return True


def make_batched_env(task: Task, profile: HardwareProfile, num_envs: int, seed: int = 0, device: str = "cpu",
                     nthread: int = 0, keep_final_obs: bool = False) -> BatchedEnv:
    """Build the model of ``profile`` and wrap it in a :class:`BatchedEnv` for ``task``."""
    return BatchedEnv(task, build_model(profile), num_envs, seed=seed, device=device, nthread=nthread,
                      keep_final_obs=keep_final_obs)
