"""MuJoCo physics of N worlds of one robot model, stepped in one native, GIL-free call.

The simulator's batched env and the stand-in robot driver (a batch of one unit) both run their
physics through this class, so a unit's parameters, its state read-out and the sim's are one code
path. The env talks to it only through its methods and bound arrays, so a GPU backend (MuJoCo Warp,
MJX) can replace it without touching tasks or learners.
"""

from __future__ import annotations

import mujoco
import numpy as np
from mujoco import batch as mjbatch

from hardware.profile import ActuatorMode
from hardware.randomization import PhysicsParams
from hardware.state import RobotState, as_slice, quat_rotate_inverse
from sim.models import RobotModel

# randomised parameter -> the MjModel fields it writes
_FIELDS_OF = {
    "friction": ("geom_friction",),
    "mass_scale": ("body_mass", "body_inertia"),
    "base_mass_add": ("body_mass", "body_inertia"),
    "com_offset": ("body_ipos",),
    "damping_scale": ("dof_damping",),
    "armature_scale": ("dof_armature",),
    "motor_strength": ("actuator_gainprm", "actuator_biasprm", "actuator_forcerange"),
    "kp_scale": ("actuator_gainprm", "actuator_biasprm", "actuator_forcerange"),
    "kd_scale": ("actuator_gainprm", "actuator_biasprm", "actuator_forcerange"),
}
# torque motors: strength scales the gear; PD gains do not exist
_TORQUE_FIELDS_OF = {**_FIELDS_OF, "motor_strength": ("actuator_gear",), "kp_scale": (), "kd_scale": ()}
_SETCONST_FIELDS = {"body_mass", "body_inertia", "body_ipos", "dof_armature", "actuator_gear"}
_DIVERGENCE_WARNINGS = slice(int(mujoco.mjtWarning.mjWARN_BADQPOS), int(mujoco.mjtWarning.mjWARN_BADQACC) + 1)
assert _DIVERGENCE_WARNINGS.stop - _DIVERGENCE_WARNINGS.start == 3, "mjtWarning order changed"


class MuJoCoBatchBackend:
    """Owns a :class:`mujoco.batch.Batch` and the live (N, ...) views of its state and outputs."""

    def __init__(self, robot: RobotModel, num_envs: int, nthread: int = 0,
                 randomized: frozenset[str] = frozenset(), exact_reset: bool = True):
        self.robot = robot
        self.model = robot.model
        self.num_envs = num_envs
        # Derived outputs (touch sensors, site positions, actuator forces) describe the state before the
        # last substep, as with mj_step: one physics step stale. Computing them fresh (stage=VEL) cost
        # 10-20% of the physics on the quadruped, more than a 5 ms sensor delay is worth.
        self.batch = mjbatch.Batch(self.model, nsim=num_envs, nthread=nthread)
        self.qpos = self.batch.bind("qpos")
        self.qvel = self.batch.bind("qvel")
        self.ctrl = self.batch.bind("ctrl")
        self.sensordata = self.batch.bind("sensordata") if self.model.nsensordata else None
        self.site_xpos = self.batch.bind("site_xpos") if self.model.nsite else None
        self.actuator_force = self.batch.bind("actuator_force")
        # exact_reset=False: a reset writes the state row of a freshly reset world. MuJoCo's own reset clears a
        # whole MjData per world (~2 us each, 1 ms for 256 cart-poles) only to have qpos and qvel overwritten;
        # what differs is outputs that the forward pass below does not compute (actuator forces), which read
        # another world's values until the next step. The batched env reads those only after a step; a
        # driver's first reading after homing must show zero torque, so it keeps MuJoCo's reset.
        self._exact_reset = exact_reset
        self.batch.reset([0], stage=int(mujoco.mjtStage.mjSTAGE_NONE))
        self._reset_row = self.batch.state[0].copy()
        # site positions and touch sensors are worth a forward pass at reset only when the state reads them
        self._reads_derived = bool(exact_reset or robot.ee_site >= 0 or len(robot.foot_sensor_adr))
        # what unstable() returns when no world diverged (the common case): callers may test identity
        self.none_diverged = np.zeros(num_envs, dtype=bool)
        self.none_diverged.flags.writeable = False
        # Only the model fields a randomised parameter touches get per-world copies: a shared field
        # keeps the batch on the model's own memory.
        table = _FIELDS_OF if robot.profile.actuator.mode == ActuatorMode.pd else _TORQUE_FIELDS_OF
        self.fields = sorted({f for p in randomized for f in table[p]})
        self._nominal = {name: getattr(self.model, name).copy() for name in self.fields}
        self._expanded = {name: self.batch.expand(name) for name in self.fields}
        self._qidx = as_slice(robot.joint_qpos_adr)
        self._vidx = as_slice(robot.joint_dof_adr)
        self._arm_base = self.model.body("base").pos.copy() if robot.ee_site >= 0 else None
        # A state made only of views of the live arrays (cart-pole) is built once: it always shows the present.
        views_only = (robot.ee_site < 0 and not robot.free_joint and not len(robot.foot_sensor_adr)
                      and isinstance(self._qidx, slice) and isinstance(self._vidx, slice))
        self._live_state = (RobotState(joint_pos=self.qpos[:, self._qidx], joint_vel=self.qvel[:, self._vidx])
                            if views_only else None)

    def step(self, nsubsteps: int) -> None:
        """Advance every world by ``nsubsteps`` physics steps."""
        self.batch.step(nstep=nsubsteps)

    def reset(self, ids: np.ndarray, qpos: np.ndarray, qvel: np.ndarray) -> None:
        """Reset worlds ``ids`` (sorted) to the given state and compute the outputs :meth:`state` reads."""
        if self._exact_reset:
            self.batch.reset(ids, stage=int(mujoco.mjtStage.mjSTAGE_NONE))
        else:
            self.batch.state[ids] = self._reset_row
            self.batch.warning[ids] = 0
        self.qpos[ids] = qpos
        self.qvel[ids] = qvel
        if self._reads_derived:
            self.batch.forward(ids, stage=int(mujoco.mjtStage.mjSTAGE_VEL))

    def apply_params(self, ids: np.ndarray, params: PhysicsParams) -> None:
        """Write per-world physical parameters for worlds ``ids`` and refresh their derived constants."""
        if not self.fields:
            return
        nom, ex, r = self._nominal, self._expanded, self.robot
        if "geom_friction" in ex:
            ex["geom_friction"][ids] = nom["geom_friction"]
            ex["geom_friction"][ids, :, 0] *= params.friction[:, None]
        if "body_mass" in ex:
            mass = nom["body_mass"] * params.mass_scale[:, None]
            mass[:, r.payload_body] += params.base_mass_add
            mass = np.maximum(mass, 0.05 * nom["body_mass"])  # a negative payload never makes mass vanish
            scale = mass / np.maximum(nom["body_mass"], 1e-9)
            ex["body_mass"][ids] = mass
            ex["body_inertia"][ids] = nom["body_inertia"] * scale[:, :, None]
        if "body_ipos" in ex:
            ex["body_ipos"][ids] = nom["body_ipos"]
            ex["body_ipos"][ids, r.payload_body] += params.com_offset
        if "dof_damping" in ex:
            ex["dof_damping"][ids] = nom["dof_damping"] * params.damping_scale[:, None]
        if "dof_armature" in ex:
            ex["dof_armature"][ids] = nom["dof_armature"] * params.armature_scale[:, None]
        strength = params.motor_strength[:, None]
        if "actuator_gear" in ex:
            ex["actuator_gear"][ids] = nom["actuator_gear"] * strength[:, :, None]
        if "actuator_gainprm" in ex:
            gain = nom["actuator_gainprm"][None].repeat(len(ids), 0)
            bias = nom["actuator_biasprm"][None].repeat(len(ids), 0)
            kp = params.kp_scale[:, None]
            gain[:, :, 0] *= kp * strength
            bias[:, :, 1] *= kp * strength
            bias[:, :, 2] *= params.kd_scale[:, None] * strength
            ex["actuator_gainprm"][ids] = gain
            ex["actuator_biasprm"][ids] = bias
            ex["actuator_forcerange"][ids] = nom["actuator_forcerange"] * strength[:, :, None]
        if _SETCONST_FIELDS.intersection(self.fields):
            self.batch.set_const(ids)

    def state(self, with_torque: bool = False) -> RobotState:
        """Every world's :class:`RobotState` (views of the live arrays where the layout allows)."""
        if self._live_state is not None and not with_torque:
            return self._live_state
        r, qpos, qvel = self.robot, self.qpos, self.qvel
        s = RobotState(joint_pos=qpos[:, self._qidx], joint_vel=qvel[:, self._vidx])
        if r.free_joint:
            bq, bd = r.base_qpos_adr, r.base_dof_adr
            s.base_pos = qpos[:, bq:bq + 3]
            s.base_quat = qpos[:, bq + 3:bq + 7]
            s.base_lin_vel = quat_rotate_inverse(s.base_quat, qvel[:, bd:bd + 3])
            s.base_ang_vel = qvel[:, bd + 3:bd + 6]
        if r.ee_site >= 0:
            s.ee_pos = self.site_xpos[:, r.ee_site] - self._arm_base
        if len(r.foot_sensor_adr):
            s.foot_contact = (self.sensordata[:, r.foot_sensor_adr] > 1.0).astype(np.float64)
        if with_torque:
            s.joint_torque = self.actuator_force[:, r.actuator_ids]
        return s

    def unstable(self) -> np.ndarray:
        """(N,) bool: worlds whose state is no longer finite, or which MuJoCo flagged as diverging."""
        # MuJoCo resets a diverging world to qpos0 itself and counts a warning: read and clear the counts
        # (MuJoCo checks qpos/qvel/qacc for NaN, inf and huge values at every substep.)
        warn = self.batch.warning
        if not np.count_nonzero(warn):  # the common case, one pass over a small contiguous array
            return self.none_diverged
        bad = warn[:, _DIVERGENCE_WARNINGS, 1].any(axis=1)
        warn[bad] = 0
        return bad

    def world_model(self, env_id: int) -> mujoco.MjModel:
        """A copy of world ``env_id``'s model with its sampled parameters (for rendering)."""
        return self.batch.get_model(env_id)

    def world_data(self, env_id: int, model: mujoco.MjModel) -> mujoco.MjData:
        """World ``env_id``'s state with derived quantities computed."""
        data = self.batch.get_data(env_id)
        mujoco.mj_forward(model, data)
        return data
