"""Build a MuJoCo model from a hardware profile and index the parts sim and drivers read.

No robot files are downloaded: models are generated from each profile's published figures, or
loaded from an MJCF file the profile names (a local path or ``pkg:<package>/<path>``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np

from hardware.profile import Family, HardwareProfile, ProfileError
from sim.models.arm import arm_mjcf
from sim.models.cartpole import cartpole_mjcf
from sim.models.quadruped import LEGS, quadruped_mjcf

GENERATORS: dict[Family, Callable[[HardwareProfile], str]] = {
    Family.cartpole: cartpole_mjcf,
    Family.arm: arm_mjcf,
    Family.quadruped: quadruped_mjcf,
}


@dataclass
class RobotModel:
    """A compiled model and the addresses of everything the profile names."""

    profile: HardwareProfile
    model: mujoco.MjModel
    joint_qpos_adr: np.ndarray  # (J,) measured joints, profile order
    joint_dof_adr: np.ndarray  # (J,)
    actuator_ids: np.ndarray  # (A,) in action order
    free_joint: bool  # floating base
    base_qpos_adr: int  # free joint qpos address (7 values), -1 if fixed base
    base_dof_adr: int
    payload_body: int  # body that receives base_mass_add / com_offset
    ee_site: int  # -1 when the robot has no end-effector site
    target_site: int  # -1 when the model has no target marker
    foot_sensor_adr: np.ndarray  # (F,) sensordata addresses of foot touch sensors
    init_qpos: np.ndarray  # (nq,) default pose

    @property
    def push_dofs(self) -> np.ndarray:
        """Dofs a random push changes: base x/y velocity, or every measured joint on a fixed base."""
        if self.free_joint:
            return np.array([self.base_dof_adr, self.base_dof_adr + 1])
        return self.joint_dof_adr


def resolve_mjcf_path(spec: str) -> Path:
    """A profile's ``mjcf_file``: a path, or ``pkg:<package>/<path inside the package>``."""
    if spec.startswith("pkg:"):
        package, _, rel = spec[4:].partition("/")
        found = importlib.util.find_spec(package)
        if found is None or not found.submodule_search_locations:
            raise ProfileError(f"mjcf_file '{spec}': package '{package}' is not installed")
        path = Path(list(found.submodule_search_locations)[0]) / rel
    else:
        path = Path(spec).expanduser()
    if not path.is_file():
        raise ProfileError(f"mjcf_file '{spec}': no such file {path}")
    return path


def mjcf_xml(profile: HardwareProfile) -> str:
    """The generated MJCF text of a profile (file-based profiles return the file's text)."""
    if profile.family == Family.mjcf_file:
        return resolve_mjcf_path(profile.mjcf_file).read_text()
    return GENERATORS[profile.family](profile)


def _id(model: mujoco.MjModel, obj: mujoco.mjtObj, name: str) -> int:
    return mujoco.mj_name2id(model, obj, name)


def build_model(profile: HardwareProfile) -> RobotModel:
    """Compile the profile's model and check that every joint it names exists and is actuated."""
    if profile.family == Family.mjcf_file:
        model = mujoco.MjModel.from_xml_path(str(resolve_mjcf_path(profile.mjcf_file)))
        if abs(model.opt.timestep * profile.physics_hz - 1.0) > 1e-6:
            raise ProfileError(f"hardware profile '{profile.name}': physics_hz {profile.physics_hz} does not "
                               f"match the MJCF timestep {model.opt.timestep}")
    else:
        model = mujoco.MjModel.from_xml_string(mjcf_xml(profile))
    jids = []
    for j in profile.joints:
        jid = _id(model, mujoco.mjtObj.mjOBJ_JOINT, j.name)
        if jid < 0:
            raise ProfileError(f"hardware profile '{profile.name}': joint '{j.name}' is not in the model")
        jids.append(jid)
    act_of_joint = {int(model.actuator_trnid[a, 0]): a for a in range(model.nu)
                    if model.actuator_trntype[a] == mujoco.mjtTrn.mjTRN_JOINT}
    act_ids = []
    for j, jid in zip(profile.joints, jids, strict=True):
        if j.actuated:
            if jid not in act_of_joint:
                raise ProfileError(f"hardware profile '{profile.name}': joint '{j.name}' has no actuator")
            act_ids.append(act_of_joint[jid])
    free = [i for i in range(model.njnt) if model.jnt_type[i] == mujoco.mjtJoint.mjJNT_FREE]
    base_q = int(model.jnt_qposadr[free[0]]) if free else -1
    base_d = int(model.jnt_dofadr[free[0]]) if free else -1
    # the payload sits on the floating base, else on the last link (where an arm carries its load)
    payload = int(model.jnt_bodyid[free[0]]) if free else int(model.jnt_bodyid[jids[-1]])
    feet = []
    for leg in LEGS:
        sid = _id(model, mujoco.mjtObj.mjOBJ_SENSOR, f"{leg}_contact")
        if sid >= 0:
            feet.append(int(model.sensor_adr[sid]))
    init_qpos = model.qpos0.copy()
    for j, jid in zip(profile.joints, jids, strict=True):
        init_qpos[model.jnt_qposadr[jid]] = j.default_pos
    return RobotModel(
        profile=profile, model=model,
        joint_qpos_adr=np.array([model.jnt_qposadr[i] for i in jids]),
        joint_dof_adr=np.array([model.jnt_dofadr[i] for i in jids]),
        actuator_ids=np.array(act_ids, dtype=np.int64),
        free_joint=bool(free), base_qpos_adr=base_q, base_dof_adr=base_d, payload_body=payload,
        ee_site=_id(model, mujoco.mjtObj.mjOBJ_SITE, "ee"),
        target_site=_id(model, mujoco.mjtObj.mjOBJ_SITE, "target"),
        foot_sensor_adr=np.array(feet, dtype=np.int64), init_qpos=init_qpos,
    )
