"""Hardware profiles: the one contract between the simulator and a physical robot.

A profile is a YAML file under ``configs/hardware/``. It names the joints and their limits, the
actuator model, the control and physics rates, the sensors, the observation layout and the physical
figures its MuJoCo model is generated from. Sim and robot agent both load it through
:func:`load_profile`, so a policy sees the same vectors on both.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from configs import CONFIG_DIR

PROFILE_DIR: Path = CONFIG_DIR / "hardware"


class Family(StrEnum):
    """Robot families; each has one MJCF generator in ``sim.models``."""

    # lower-case member names: OmegaConf matches YAML values against member names
    cartpole = "cartpole"
    arm = "arm"
    quadruped = "quadruped"
    mjcf_file = "mjcf_file"


class ActuatorMode(StrEnum):
    """How an action becomes a joint command."""

    pd = "pd"  # action -> position target = default_pos + action_scale * action, PD in the motor
    torque = "torque"  # action -> torque = clip(action_scale * action, -1, 1) * max_torque


class ProfileError(ValueError):
    """A hardware profile is unknown, malformed or inconsistent."""


@dataclass
class JointSpec:
    """One actuated joint: limits, default pose and motor gains."""

    name: str = "???"  # the joint's name in the model (generated, or the mjcf_file's)
    # [low, high], rad (m for a slide joint): the joint's limit (none if continuous); PD targets stay inside
    range: list[float] = field(default_factory=lambda: [-3.14159, 3.14159])
    max_velocity: float = 10.0  # rad/s (m/s): no command pushes a faster joint further; caps PD target rate
    max_torque: float = 10.0  # Nm (N), the motor's limit: PD force range, torque full scale, filter's cap
    default_pos: float = 0.0  # rad (m), home: sim's reset pose, the PD target of action 0, joint_pos_rel's 0
    kp: float = 0.0  # PD stiffness, Nm/rad (N/m); > 0 for an actuated joint of a pd profile
    kd: float = 0.0  # PD damping gain, Nm s/rad (N s/m)
    damping: float = 0.0  # passive joint damping of the generated model, Nm s/rad (N s/m)
    armature: float = 0.0  # rotor inertia seen at the joint in the generated model, kg m^2 (kg)
    # Continuous joints (a free-spinning pole) are observed as (cos, sin) and have no position limit.
    continuous: bool = False
    # Passive joints (a cart-pole's pole) are measured but have no motor and no action.
    actuated: bool = True


@dataclass
class ActuatorSpec:
    """The actuator model shared by every joint of a profile."""

    mode: ActuatorMode = ActuatorMode.pd  # pd: targets for a PD servo | torque: normalised torques
    action_scale: float = 0.5  # pd: rad (m) of target per unit action; torque: fraction of max_torque; > 0
    action_clip: float = 10.0  # actions are clipped to +-this before scaling (the policy's action bounds)


@dataclass
class LimitSpec:
    """Command limits the safety filter enforces, in sim and on the robot alike: part of the contract (and hash).

    Defaults derive the PD rate limit from each joint: a position target moves at most
    ``min(pd_target_rate x max_velocity x period, pd_range_fraction x range)`` per control period, i.e.
    no faster than the joint itself can follow, and never a large part of its range in one period.
    """

    pd_target_rate: float = 1.0  # pd: per period a target moves at most this x max_velocity x period ...
    pd_range_fraction: float = 0.25  # pd: ... and at most this fraction of the joint's range
    torque_rate: float = 1.0  # torque mode: the normalised command changes at most this much per period
    # torque mode: the middle ``soft_range`` of each joint's range gets full torque; beyond it the torque
    # toward the nearer limit fades linearly to zero at the limit (legged_gym's soft_dof_pos_limit)
    soft_range: float = 0.9


@dataclass
class HardwareProfile:
    """Everything the sim and a robot agent must agree on for one hardware type."""

    name: str = "???"  # the hardware type: names the policy's stem and head and a checkpoint's spec
    # cartpole | arm | quadruped (each has an MJCF generator) | mjcf_file; each task runs on given families
    family: Family = Family.cartpole
    description: str = ""  # free text; the one key outside the profile hash
    control_hz: float = 50.0  # policy rate, Hz: one observation and one command per period
    # MuJoCo's step rate, Hz: a whole multiple of control_hz (physics_hz / control_hz substeps per command);
    # an mjcf_file's timestep must be 1 / physics_hz
    physics_hz: float = 200.0
    actuator: ActuatorSpec = field(default_factory=ActuatorSpec)
    limits: LimitSpec = field(default_factory=LimitSpec)
    # every measured joint, in observation order; the actuated ones, in this order, make the action
    joints: list[JointSpec] = field(default_factory=list)
    # what the unit measures (joint_encoders, imu_gyro...): read by no code, but in the profile hash
    sensors: list[str] = field(default_factory=list)
    # Ordered observation terms (see hardware.observation.TERMS); task terms included.
    observation: list[str] = field(default_factory=list)
    # Published physical figures the family's MJCF generator reads (link lengths, masses...).
    params: dict[str, float] = field(default_factory=dict)
    # For family mjcf_file: a path, or "pkg:<package>/<path inside it>".
    mjcf_file: str = ""

    @property
    def num_joints(self) -> int:
        """Number of measured joints (the width of joint_pos / joint_vel)."""
        return len(self.joints)

    @property
    def actuated_joints(self) -> list[JointSpec]:
        """Joints with a motor, in action order."""
        return [j for j in self.joints if j.actuated]

    @property
    def num_actions(self) -> int:
        """Action size: one per actuated joint."""
        return len(self.actuated_joints)

    @property
    def decimation(self) -> int:
        """Physics substeps per control step."""
        return int(round(self.physics_hz / self.control_hz))

    @property
    def joint_names(self) -> list[str]:
        """Joint names in action order."""
        return [j.name for j in self.joints]

    def param(self, key: str) -> float:
        """A physical figure from ``params``, with an error naming the profile and key."""
        if key not in self.params:
            raise ProfileError(f"hardware profile '{self.name}': params.{key} is required by family {self.family.value}")
        return float(self.params[key])


def available_profiles() -> list[str]:
    """Names of the profiles shipped under ``configs/hardware``."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def profile_from_config(cfg: DictConfig | dict[str, Any], where: str = "hardware") -> HardwareProfile:
    """Validate a profile config against the schema; errors name the offending key."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(HardwareProfile), cfg)
        profile: HardwareProfile = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except OmegaConfBaseException as exc:
        raise ProfileError(f"invalid hardware profile at '{where}': {exc}") from exc
    validate_profile(profile)
    return profile


def load_profile(name: str | HardwareProfile) -> HardwareProfile:
    """Load a shipped profile by name, or a profile YAML file by path (or pass a profile through)."""
    if isinstance(name, HardwareProfile):
        return name
    path = Path(name).expanduser() if str(name).endswith((".yaml", ".yml")) else PROFILE_DIR / f"{name}.yaml"
    if not path.is_file():
        if path.parent != PROFILE_DIR:
            raise ProfileError(f"hardware profile file {path} does not exist")
        raise ProfileError(f"unknown hardware type '{name}'; available: {', '.join(available_profiles())}")
    try:
        raw = OmegaConf.load(path)
    except Exception as exc:  # yaml's parser errors share no base class worth naming
        raise ProfileError(f"hardware profile '{name}' ({path}) is not valid YAML: {exc}") from exc
    return profile_from_config(raw, where=str(path))


def validate_profile(p: HardwareProfile) -> None:
    """Check the physical consistency a schema cannot express."""
    from hardware.observation import TERMS  # local: observation imports this module

    def bad(msg: str) -> ProfileError:
        return ProfileError(f"hardware profile '{p.name}': {msg}")

    if p.control_hz <= 0 or p.physics_hz <= 0:
        raise bad("control_hz and physics_hz must be positive")
    if abs(p.physics_hz / p.control_hz - p.decimation) > 1e-6 or p.decimation < 1:
        raise bad(f"physics_hz ({p.physics_hz}) must be a whole multiple of control_hz ({p.control_hz})")
    if not p.actuated_joints:
        raise bad("at least one joint must be actuated")
    names = p.joint_names
    if len(set(names)) != len(names):
        raise bad(f"joint names must be unique, got {names}")
    for i, j in enumerate(p.joints):
        lo, hi = j.range
        if not lo < hi:
            raise bad(f"joints[{i}] ({j.name}).range must be [low, high] with low < high, got {j.range}")
        if j.actuated and p.actuator.mode == ActuatorMode.pd and not lo <= j.default_pos <= hi:
            raise bad(f"joints[{i}] ({j.name}).default_pos {j.default_pos} lies outside range {j.range}")
        if j.max_velocity <= 0 or j.max_torque <= 0:
            raise bad(f"joints[{i}] ({j.name}): max_velocity and max_torque must be positive")
        if j.actuated and p.actuator.mode == ActuatorMode.pd and j.kp <= 0:
            raise bad(f"joints[{i}] ({j.name}).kp must be positive for a PD actuator")
    if p.actuator.action_scale <= 0:
        raise bad("actuator.action_scale must be positive")
    for key in ("pd_target_rate", "pd_range_fraction", "torque_rate"):
        if not getattr(p.limits, key) > 0:
            raise bad(f"limits.{key} must be positive, got {getattr(p.limits, key)}")
    if not 0 < p.limits.soft_range <= 1:
        raise bad(f"limits.soft_range must be in (0, 1], got {p.limits.soft_range}")
    unknown = [t for t in p.observation if t not in TERMS]
    if unknown:
        raise bad(f"unknown observation terms {unknown}; known: {sorted(TERMS)}")
    if p.family == Family.mjcf_file and not p.mjcf_file:
        raise bad("family mjcf_file needs mjcf_file set")


# Free text: two profiles that differ only here drive a robot the same way.
_NOT_HASHED = ("description",)


def _canonical(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return float(value)  # YAML's 50 and 50.0 are the same rate
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    raise TypeError(f"no canonical form for {type(value).__name__}")


def canonical_profile(profile: HardwareProfile) -> dict[str, Any]:
    """Every field of ``profile`` that shapes what a robot does (gains, limits, action scale, rates, layout,
    physics), as plain JSON values: numbers as floats, enums as their values."""
    d = asdict(profile)
    for key in _NOT_HASHED:
        d.pop(key)
    return _canonical(d)


def profile_json(profile: HardwareProfile) -> str:
    """The canonical profile as compact JSON with sorted keys: the text :func:`profile_hash` digests."""
    return json.dumps(canonical_profile(profile), sort_keys=True, separators=(",", ":"))


def profile_hash(profile: HardwareProfile) -> str:
    """sha256 (hex) of the canonical profile: equal exactly when two profiles drive a robot the same way."""
    return hashlib.sha256(profile_json(profile).encode()).hexdigest()
