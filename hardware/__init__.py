"""What a robot is: hardware profiles and the observation/action/task contract shared by the simulator and
the robot agent, the safety filter both apply, and the driver protocol.

Nothing here loads MuJoCo or chooses a GL back-end: a robot computer with a real driver imports this
package and needs neither. MuJoCo models, physics and the stand-in robot live in :mod:`sim`.
"""

from hardware.action import ActionMap
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
    "ProfileError", "RandomizationConfig", "RandomizationError", "RobotState", "TaskInputs",
    "available_profiles", "load_profile", "profile_from_config", "sample_params",
]
