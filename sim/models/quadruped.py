"""Quadruped MJCF (Unitree-like layout: per leg hip abduction, thigh and calf) from published figures."""

from __future__ import annotations

import math

from hardware.profile import HardwareProfile, ProfileError
from sim.models.common import ROBOT_GEOM, actuators, floor, header, joint_attrs

LEGS = ("FR", "FL", "RR", "RL")
# (x sign, y sign) of each hip from the trunk centre
_SIGNS = {"FR": (1, -1), "FL": (1, 1), "RR": (-1, -1), "RL": (-1, 1)}


def quadruped_mjcf(p: HardwareProfile) -> str:
    """Trunk box on a free joint, four 3-joint legs, foot spheres with touch sensors."""
    if p.num_joints != 12:
        raise ProfileError(f"hardware profile '{p.name}': a quadruped has 12 joints, got {p.num_joints}")
    hx, hy, off = p.param("hip_x"), p.param("hip_y"), p.param("thigh_offset")
    lt, lc, rf = p.param("thigh_length"), p.param("calf_length"), p.param("foot_radius")
    tx, ty, tz = p.param("trunk_x"), p.param("trunk_y"), p.param("trunk_z")
    m_trunk, m_hip = p.param("trunk_mass"), p.param("hip_mass")
    m_thigh, m_calf = p.param("thigh_mass"), p.param("calf_mass")
    # start with the feet just touching the floor in the default pose
    q_thigh, q_calf = p.joints[1].default_pos, p.joints[2].default_pos
    z0 = lt * math.cos(q_thigh) + lc * math.cos(q_thigh + q_calf) + rf + 0.002
    legs, sensors = [], []
    for k, leg in enumerate(LEGS):
        sx, sy = _SIGNS[leg]
        hip, thigh, calf = p.joints[3 * k: 3 * k + 3]
        legs.append(f"""      <body name="{leg}_hip" pos="{sx * hx} {sy * hy} 0">
        <joint name="{hip.name}" type="hinge" axis="1 0 0" {joint_attrs(hip)}/>
        <geom type="cylinder" size="0.045 0.02" quat="0.7071 0.7071 0 0" mass="{m_hip}" rgba=".2 .2 .2 1" contype="0" conaffinity="0"/>
        <body name="{leg}_thigh" pos="0 {sy * off} 0">
          <joint name="{thigh.name}" type="hinge" axis="0 1 0" {joint_attrs(thigh)}/>
          <geom type="capsule" fromto="0 0 0 0 0 {-lt}" size="0.022" mass="{m_thigh}" rgba=".8 .8 .8 1" {ROBOT_GEOM}/>
          <body name="{leg}_calf" pos="0 0 {-lt}">
            <joint name="{calf.name}" type="hinge" axis="0 1 0" {joint_attrs(calf)}/>
            <geom type="capsule" fromto="0 0 0 0 0 {-lc + rf}" size="0.013" mass="{m_calf}" rgba=".2 .2 .2 1" contype="0" conaffinity="0"/>
            <geom name="{leg}_foot" type="sphere" pos="0 0 {-lc}" size="{rf}" mass="0.04" rgba=".1 .1 .1 1" {ROBOT_GEOM}/>
            <site name="{leg}_foot" pos="0 0 {-lc}" size="{rf * 1.3}"/>
          </body>
        </body>
      </body>""")
        sensors.append(f'    <touch name="{leg}_contact" site="{leg}_foot"/>')
    legs_xml, sensors_xml = "\n".join(legs), "\n".join(sensors)
    return f"""{header(p)}
  <worldbody>
{floor()}
    <body name="trunk" pos="0 0 {z0}">
      <camera name="track" pos="0 -2.5 0.6" xyaxes="1 0 0 0 0.25 1" mode="trackcom"/>
      <freejoint name="base"/>
      <geom name="trunk" type="box" size="{tx} {ty} {tz}" mass="{m_trunk}" rgba=".9 .9 .9 1" {ROBOT_GEOM}/>
      <site name="imu" pos="0 0 0"/>
{legs_xml}
    </body>
  </worldbody>
{actuators(p)}
  <sensor>
{sensors_xml}
  </sensor>
</mujoco>
"""
