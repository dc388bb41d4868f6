"""The safety filter: one compiled kernel that the simulator runs over N worlds and the robot over one.

Every command passes it between the action map and the actuators, in sim (:class:`sim.env.BatchedEnv`) as
on the robot (:class:`hardware.safety.SafetyLayer`), so a policy meets in training the very limits the
robot enforces. Per world and control period, against the reading the policy acted on:

1. A reading with a NaN/inf joint position or velocity: the command is not looked at. PD: the last
   command is held (a target at a NaN position does not exist; the last target is finite and was safe a
   period ago); torque: zero torque. (The robot agent's :class:`robot_agent.safe_driver.SafeDriver` puts
   the driver in its damping mode instead, which needs no reading.)
2. A NaN/inf command: hold, i.e. a PD target at the measured position or zero torque.
3. Rate: the command moves at most ``max_step`` from the last one (the first after a reset starts from
   the hold at the first reading).
4. PD: the target is clamped to the joint range; a joint over its velocity limit gets no target further
   along its motion; the target is pulled in so that the PD torque stays within the motor's limit.
   Torque: clamped to full scale; torque toward a joint limit fades to zero across the soft band
   outside ``limits.soft_range``; a joint over its velocity limit gets no torque along its motion.
5. Last line: a command that is still not finite is replaced by the hold of step 1, so nothing
   non-finite reaches a driver or stays in the filter's memory.

Each kind is counted once per world and period in which it changed a command.
"""

from __future__ import annotations

import numpy as np

from hardware.compiled import kernel
from hardware.profile import ActuatorMode, HardwareProfile
from hardware.state import RobotState

# intervention kinds, in the order of the count arrays
POSITION_LIMIT, VELOCITY_LIMIT, TORQUE_LIMIT = "position_limit", "velocity_limit", "torque_limit"
RATE_LIMIT, NONFINITE, NONFINITE_READING = "rate_limit", "nonfinite", "nonfinite_reading"
KINDS = (POSITION_LIMIT, VELOCITY_LIMIT, TORQUE_LIMIT, RATE_LIMIT, NONFINITE, NONFINITE_READING)
_POS, _VEL, _TAU, _RATE, _CMD, _READ = range(len(KINDS))
# rows of the per-joint limit table
_LOW, _HIGH, _STEP, _MAXVEL, _MAXTAU, _KP, _KD, _HOME, _SOFT_LOW, _SOFT_HIGH = range(10)


def joint_limits(profile: HardwareProfile) -> np.ndarray:
    """The (10, num_actions) table the kernel reads: range, rate step, velocity and torque limits, gains,
    home command and the soft band's inner edges, per actuated joint."""
    joints = profile.actuated_joints
    lim = profile.limits
    period = 1.0 / profile.control_hz
    pd = profile.actuator.mode == ActuatorMode.pd
    low = np.array([-np.inf if j.continuous else j.range[0] for j in joints])
    high = np.array([np.inf if j.continuous else j.range[1] for j in joints])
    max_vel = np.array([j.max_velocity for j in joints])
    if pd:  # no faster than the joint can follow, and never a large part of its range in one period
        span = np.array([j.range[1] - j.range[0] for j in joints])
        step = np.minimum(lim.pd_target_rate * max_vel * period, lim.pd_range_fraction * span)
    else:
        step = np.full(len(joints), lim.torque_rate)
    with np.errstate(invalid="ignore"):  # continuous joints (-inf, inf): no middle, no band
        mid, half = 0.5 * (low + high), 0.5 * lim.soft_range * (high - low)
        soft_low = np.where(np.isfinite(low), mid - half, -np.inf)
        soft_high = np.where(np.isfinite(high), mid + half, np.inf)
    home = np.clip([j.default_pos for j in joints], low, high) if pd else np.zeros(len(joints))
    return np.stack([low, high, step, max_vel, np.array([j.max_torque for j in joints]),
                     np.array([j.kp for j in joints]), np.array([j.kd for j in joints]), home,
                     soft_low, soft_high]).astype(np.float64)


class SafetyFilter:
    """The filter's state for ``batch`` worlds (last command, reset flags) and its counts.

    ``counts`` holds every intervention so far by kind (in :data:`KINDS` order); ``step_counts`` those of
    the last :meth:`apply` (worlds changed per kind).
    """

    def __init__(self, profile: HardwareProfile, batch: int):
        self.profile = profile
        self.pd = profile.actuator.mode == ActuatorMode.pd
        self.limits = joint_limits(profile)
        self.joints = np.array([i for i, j in enumerate(profile.joints) if j.actuated], dtype=np.int64)
        a = len(self.joints)
        self.last = np.zeros((batch, a))
        self.fresh = np.ones(batch, dtype=np.bool_)
        self.counts = np.zeros(len(KINDS), dtype=np.int64)
        self.step_counts = np.zeros(len(KINDS), dtype=np.int64)
        self.reading_ok = np.ones(batch, dtype=np.bool_)

    @property
    def max_step(self) -> np.ndarray:
        """The most a command may change per period, per actuated joint."""
        return self.limits[_STEP]

    def reset(self, ids: np.ndarray | slice = slice(None)) -> None:
        """Worlds ``ids`` start afresh: their next command is rate limited from the hold at their next reading."""
        self.fresh[ids] = True

    def apply(self, commands: np.ndarray, state: RobotState, out: np.ndarray | None = None) -> np.ndarray:
        """The safe version of ``commands`` (B, A) at ``state``, written into ``out`` (may be ``commands``)."""
        if out is None:
            out = np.empty(commands.shape)
        _filter_commands(commands, state.joint_pos, state.joint_vel, self.joints, self.limits, self.pd, self.last,
                         self.fresh, self.counts, self.step_counts, self.reading_ok, out)
        return out

    def counts_by_kind(self, which: np.ndarray | None = None) -> dict[str, int]:
        """``counts`` (or another count array) as a dict keyed by kind."""
        return dict(zip(KINDS, (self.counts if which is None else which).tolist(), strict=True))


@kernel
def _filter_commands(cmd: np.ndarray, q: np.ndarray, qd: np.ndarray, joints: np.ndarray, lim: np.ndarray,
                     pd: bool, last: np.ndarray, fresh: np.ndarray, counts: np.ndarray, step_counts: np.ndarray,
                     reading_ok: np.ndarray, out: np.ndarray) -> None:
    """The filter (see the module docstring) for every world; ``last``, ``fresh``, the counts and
    ``reading_ok`` (per world: whether its reading was finite) are updated in place."""
    b, a = out.shape
    if cmd.shape[0] != b or cmd.shape[1] != a or q.shape[0] != b or qd.shape[0] != b or last.shape[0] != b:
        raise ValueError("commands, readings and the filter's batch do not have matching shapes")
    step_counts[:] = 0
    for i in range(b):
        ok = True
        for j in range(q.shape[1]):
            if not (np.isfinite(q[i, j]) and np.isfinite(qd[i, j])):
                ok = False
        reading_ok[i] = ok
        if fresh[i]:  # rate limit the first command from the hold at this reading
            for j in range(a):
                if not pd:
                    last[i, j] = 0.0
                elif ok:
                    last[i, j] = min(max(q[i, joints[j]], lim[_LOW, j]), lim[_HIGH, j])
                else:
                    last[i, j] = lim[_HOME, j]
            fresh[i] = False
        if not ok:
            step_counts[_READ] += 1
            for j in range(a):
                if not pd:
                    last[i, j] = 0.0
                out[i, j] = last[i, j]
            continue
        cmd_ok = True
        for j in range(a):
            if not np.isfinite(cmd[i, j]):
                cmd_ok = False
        if not cmd_ok:
            step_counts[_CMD] += 1
        rated = clamped = slowed = torqued = False
        for j in range(a):
            qj, vj = q[i, joints[j]], qd[i, joints[j]]
            low, high = lim[_LOW, j], lim[_HIGH, j]
            if cmd_ok:
                c = cmd[i, j]
                step = lim[_STEP, j]
                if c - last[i, j] > step:
                    c = last[i, j] + step
                    rated = True
                elif c - last[i, j] < -step:
                    c = last[i, j] - step
                    rated = True
            else:
                c = min(max(qj, low), high) if pd else 0.0
            over = abs(vj) > lim[_MAXVEL, j]
            if pd:
                if not low <= c <= high:
                    c = min(max(c, low), high)
                    clamped = True
                if over and (c - qj) * vj > 0:  # over speed: no target further along the motion
                    c = qj
                    slowed = True
                kp, kd, max_tau = lim[_KP, j], lim[_KD, j], lim[_MAXTAU, j]
                if kp > 0:  # the torque the PD loop will apply, kept within the motor's limit
                    tau = kp * (c - qj) - kd * vj
                    if tau > max_tau:
                        c = qj + (max_tau + kd * vj) / kp
                        torqued = True
                    elif tau < -max_tau:
                        c = qj + (-max_tau + kd * vj) / kp
                        torqued = True
                    # A fast joint near a limit can need a torque-capped target beyond the range: the range
                    # wins, since the motor saturates at its own limit and still brakes at full torque.
                    if not low <= c <= high:
                        c = min(max(c, low), high)
                        clamped = True
            else:
                if c > 1.0:  # 1.0 = the profile's max_torque
                    c = 1.0
                    torqued = True
                elif c < -1.0:
                    c = -1.0
                    torqued = True
                soft_low, soft_high = lim[_SOFT_LOW, j], lim[_SOFT_HIGH, j]
                if c > 0.0 and qj > soft_high:  # torque toward the upper limit fades out across the band
                    c *= max(0.0, (high - qj) / (high - soft_high)) if high > soft_high else 0.0
                    clamped = True
                elif c < 0.0 and qj < soft_low:
                    c *= max(0.0, (qj - low) / (soft_low - low)) if soft_low > low else 0.0
                    clamped = True
                if over and c * vj > 0:
                    c = 0.0
                    slowed = True
            out[i, j] = c
        finite = True
        for j in range(a):
            if not np.isfinite(out[i, j]):
                finite = False
        if not finite:  # the last line: whatever happened above, no NaN/inf leaves (or stays in) the filter
            if cmd_ok:
                step_counts[_CMD] += 1
            for j in range(a):
                out[i, j] = last[i, j] if pd else 0.0
        for j in range(a):
            last[i, j] = out[i, j]
        if clamped:
            step_counts[_POS] += 1
        if slowed:
            step_counts[_VEL] += 1
        if torqued:
            step_counts[_TAU] += 1
        if rated:
            step_counts[_RATE] += 1
    for k in range(counts.shape[0]):
        counts[k] += step_counts[k]
