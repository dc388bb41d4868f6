"""Serial arms: planar (joints about y, links along x) or spatial (a kinematic chain of body frames).

Links carry gravcomp="1": arms like these run gravity compensation in their own controllers, so the
policy's PD targets act against inertia, not against the arm's weight.
"""

from __future__ import annotations

from hardware.profile import HardwareProfile, ProfileError
from sim.models.common import actuators, floor, header, joint_attrs

# Franka Emika Panda kinematics (published modified-DH figures, m) as per-link frames:
# (position of the link frame in its parent, quaternion wxyz of the same).
_R = 0.7071068
PANDA_FRAMES = [
    ((0, 0, 0.333), (1, 0, 0, 0)),
    ((0, 0, 0), (_R, -_R, 0, 0)),
    ((0, -0.316, 0), (_R, _R, 0, 0)),
    ((0.0825, 0, 0), (_R, _R, 0, 0)),
    ((-0.0825, 0.384, 0), (_R, -_R, 0, 0)),
    ((0, 0, 0), (_R, _R, 0, 0)),
    ((0.088, 0, 0), (_R, _R, 0, 0)),
]
PANDA_FLANGE = (0, 0, 0.107)


def _link_masses(p: HardwareProfile, n: int) -> list[float]:
    masses = [p.param(f"link{i + 1}_mass") for i in range(n)]
    return masses


def planar_arm_mjcf(p: HardwareProfile) -> str:
    """An n-link arm in the vertical x-z plane, base at ``base_height``, end-effector site 'ee'."""
    n = p.num_joints
    lengths = [p.param(f"link{i + 1}_length") for i in range(n)]
    masses = _link_masses(p, n)
    base_z = p.param("base_height")
    xml, close = [], []
    for i, (j, length, mass) in enumerate(zip(p.joints, lengths, masses, strict=True)):
        pos = "0 0 0" if i == 0 else f"{lengths[i - 1]} 0 0"
        xml.append(f'<body name="link{i + 1}" pos="{pos}" gravcomp="1">'
                   f'<joint name="{j.name}" type="hinge" axis="0 -1 0" {joint_attrs(j)}/>'
                   f'<geom type="capsule" fromto="0 0 0 {length} 0 0" size="0.025" mass="{mass}" '
                   f'rgba=".7 .7 .75 1" contype="0" conaffinity="0"/>')
        close.append("</body>")
    xml.append(f'<site name="ee" pos="{lengths[-1]} 0 0" size="0.02" rgba="1 .3 .3 1"/>')
    chain = "\n      ".join(xml) + "".join(close)
    return f"""{header(p)}
  <worldbody>
{floor()}
    <camera name="side" pos="0 -2.2 {base_z}" xyaxes="1 0 0 0 0 1"/>
    <site name="target" pos="0.3 0 {base_z}" size="0.03" rgba=".2 1 .2 .6"/>
    <body name="base" pos="0 0 {base_z}">
      <geom type="cylinder" size="0.05 0.03" rgba=".3 .3 .3 1" contype="0" conaffinity="0"/>
      {chain}
    </body>
  </worldbody>
{actuators(p)}
</mujoco>
"""


def spatial_arm_mjcf(p: HardwareProfile) -> str:
    """A 7-joint arm with Panda-like kinematics and published link masses; joints about local z."""
    if p.num_joints != len(PANDA_FRAMES):
        raise ProfileError(f"hardware profile '{p.name}': the spatial arm has {len(PANDA_FRAMES)} joints")
    masses = _link_masses(p, p.num_joints)
    xml, close = [], []
    for i, (j, mass, (pos, quat)) in enumerate(zip(p.joints, masses, PANDA_FRAMES, strict=True)):
        nxt = PANDA_FRAMES[i + 1][0] if i + 1 < len(PANDA_FRAMES) else PANDA_FLANGE
        seg = f"0 0 0 {nxt[0]} {nxt[1]} {nxt[2]}" if any(nxt) else "0 0 -0.06 0 0 0.06"
        xml.append(f'<body name="link{i + 1}" pos="{pos[0]} {pos[1]} {pos[2]}" '
                   f'quat="{quat[0]} {quat[1]} {quat[2]} {quat[3]}" gravcomp="1">'
                   f'<joint name="{j.name}" type="hinge" axis="0 0 1" {joint_attrs(j)}/>'
                   f'<geom type="capsule" fromto="{seg}" size="0.05" mass="{mass}" rgba=".9 .9 .9 1" '
                   f'contype="0" conaffinity="0"/>')
        close.append("</body>")
    xml.append(f'<site name="ee" pos="{PANDA_FLANGE[0]} {PANDA_FLANGE[1]} {PANDA_FLANGE[2]}" size="0.02" '
               f'rgba="1 .3 .3 1"/>')
    chain = "\n      ".join(xml) + "".join(close)
    return f"""{header(p)}
  <worldbody>
{floor()}
    <camera name="side" pos="1.8 -1.8 1.0" xyaxes="0.7071 0.7071 0 -0.25 0.25 0.935"/>
    <site name="target" pos="0.5 0 0.5" size="0.03" rgba=".2 1 .2 .6"/>
    <body name="base" pos="0 0 0">
      <geom type="cylinder" size="0.08 0.05" pos="0 0 0.05" rgba=".3 .3 .3 1" contype="0" conaffinity="0"/>
      {chain}
    </body>
  </worldbody>
{actuators(p)}
</mujoco>
"""


def arm_mjcf(p: HardwareProfile) -> str:
    """Planar or spatial arm, as ``params.spatial`` says."""
    return spatial_arm_mjcf(p) if p.params.get("spatial", 0.0) else planar_arm_mjcf(p)
