"""What a robot is: hardware profiles, their MuJoCo models, and the observation/action/task contract
shared by the simulator and the robot agent."""

from hardware import gl_backend  # noqa: F401  (first: sets MUJOCO_GL before mujoco loads)
from hardware.action import ActionMap
from hardware.models import RobotModel, build_model
from hardware.observation import ObservationLayout
from hardware.profile import (
    ActuatorMode,
    Family,
    HardwareProfile,
    JointSpec,
    ProfileError,
    available_profiles,
    load_profile,
    profile_from_config,
)
from hardware.randomization import PhysicsParams, RandomizationConfig, RandomizationError, sample_params
from hardware.state import RobotState, TaskInputs

__all__ = [
    "ActionMap", "ActuatorMode", "Family", "HardwareProfile", "JointSpec", "ObservationLayout", "PhysicsParams",
    "ProfileError", "RandomizationConfig", "RandomizationError", "RobotModel", "RobotState", "TaskInputs",
    "available_profiles", "build_model", "load_profile", "profile_from_config", "sample_params",
]
