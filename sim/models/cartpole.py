"""Cart-pole MJCF from cart/pole masses, pole length and rail length."""

from __future__ import annotations

from hardware.profile import HardwareProfile
from sim.models.common import actuators, floor, header, joint_attrs


def cartpole_mjcf(p: HardwareProfile) -> str:
    """A cart on a rail above the floor with a free pole hanging from it."""
    cart_mass, pole_mass = p.param("cart_mass"), p.param("pole_mass")
    length, rail = p.param("pole_length"), p.param("rail_half_length")
    slider, hinge = p.joints[0], p.joints[1]
    z = length + 0.5  # rail height: the hanging pole clears the floor
    return f"""{header(p)}
  <worldbody>
{floor(z=0.0)}
    <geom name="rail" type="capsule" fromto="{-rail - 0.1} 0 {z} {rail + 0.1} 0 {z}" size="0.015" rgba=".5 .5 .5 1" contype="0" conaffinity="0"/>
    <camera name="track" pos="0 -5 {z}" xyaxes="1 0 0 0 0 1"/>
    <body name="cart" pos="0 0 {z}">
      <joint name="{slider.name}" type="slide" axis="1 0 0" {joint_attrs(slider)}/>
      <geom name="cart" type="box" size="0.12 0.08 0.05" mass="{cart_mass}" rgba=".8 .5 .2 1" contype="0" conaffinity="0"/>
      <body name="pole">
        <joint name="{hinge.name}" type="hinge" axis="0 1 0" {joint_attrs(hinge)}/>
        <geom name="pole" type="capsule" fromto="0 0 0 0 0 {length}" size="0.025" mass="{pole_mass}" rgba=".3 .7 .9 1" contype="0" conaffinity="0"/>
        <site name="tip" pos="0 0 {length}" size="0.03"/>
      </body>
    </body>
  </worldbody>
{actuators(p)}
</mujoco>
"""
