"""Pieces every generated MJCF shares: header, floor, and the PD/torque actuator of a joint."""

from __future__ import annotations

from hardware.profile import ActuatorMode, HardwareProfile, JointSpec

# Robot geoms collide with the floor only (contype 0 / conaffinity 1 against the floor's 1 / 0):
# self-collision is off, which is what the hardware's own joint limits already guarantee.
ROBOT_GEOM = 'contype="0" conaffinity="1"'
FLOOR_GEOM = 'contype="1" conaffinity="0"'


def header(profile: HardwareProfile, extra_option: str = "") -> str:
    """``<mujoco>`` opening, timestep from the profile's physics rate, a visual tuned for fast rendering."""
    dt = 1.0 / profile.physics_hz
    return f"""<mujoco model="{profile.name}">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{dt:.6g}" integrator="implicitfast" {extra_option}/>
  <visual><quality shadowsize="1024" offsamples="0"/><global offwidth="640" offheight="480"/></visual>
  <asset>
    <texture name="grid" type="2d" builtin="checker" rgb1=".2 .3 .4" rgb2=".1 .15 .2" width="256" height="256"/>
    <material name="grid" texture="grid" texrepeat="8 8" reflectance=".1"/>
  </asset>"""


def floor(friction: float = 1.0, z: float = 0.0) -> str:
    """A ground plane with a light above it."""
    return (f'    <light pos="0 0 4" dir="0 0 -1" directional="true"/>\n'
            f'    <geom name="floor" type="plane" size="0 0 0.05" pos="0 0 {z}" material="grid" '
            f'friction="{friction} 0.005 0.0001" {FLOOR_GEOM}/>')


def joint_attrs(j: JointSpec) -> str:
    """Damping, armature and (unless continuous) the range of a joint element."""
    rng = "" if j.continuous else f' range="{j.range[0]} {j.range[1]}"'
    return f'damping="{j.damping}" armature="{j.armature}"{rng}'


def actuator(profile: HardwareProfile, j: JointSpec) -> str:
    """The motor of joint ``j``: PD position servo with torque limit, or a torque motor geared to max_torque."""
    if profile.actuator.mode == ActuatorMode.pd:
        return (f'    <position name="{j.name}" joint="{j.name}" kp="{j.kp}" kv="{j.kd}" '
                f'ctrlrange="{j.range[0]} {j.range[1]}" forcerange="{-j.max_torque} {j.max_torque}"/>')
    return f'    <motor name="{j.name}" joint="{j.name}" gear="{j.max_torque}" ctrlrange="-1 1"/>'


def actuators(profile: HardwareProfile) -> str:
    """The ``<actuator>`` block, in action order."""
    body = "\n".join(actuator(profile, j) for j in profile.actuated_joints)
    return f"  <actuator>\n{body}\n  </actuator>"
