"""Domain randomisation ranges and the per-robot physical parameters drawn from them.

The same ranges describe a simulator's training distribution and, for the stand-in robot, the
"reality gap" of one unit; :class:`PhysicsParams` is what either applies to its MuJoCo model and
what the critic sees as privileged observation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

RANGE_FIELDS = (
    "friction", "mass_scale", "base_mass_add", "com_offset", "damping_scale", "armature_scale",
    "motor_strength", "kp_scale", "kd_scale",
)
NONNEGATIVE_FIELDS = ("friction", "mass_scale", "damping_scale", "armature_scale", "motor_strength",
                      "kp_scale", "kd_scale")


class RandomizationError(ValueError):
    """A randomisation range is malformed; the message names the key."""


def _unit() -> list[float]:
    return [1.0, 1.0]


def _zero() -> list[float]:
    return [0.0, 0.0]


@dataclass
class RandomizationConfig:
    """Uniform ranges [low, high], re-sampled per environment at every reset."""

    enabled: bool = True  # false: nominal physics in every world, and no observation noise, latency or pushes
    friction: list[float] = field(default_factory=_unit)  # scale on sliding friction
    mass_scale: list[float] = field(default_factory=_unit)  # every link's mass
    base_mass_add: list[float] = field(default_factory=_zero)  # kg on the root body (payload)
    com_offset: list[float] = field(default_factory=_zero)  # m, per axis, root body centre of mass
    damping_scale: list[float] = field(default_factory=_unit)  # scale on joint damping
    armature_scale: list[float] = field(default_factory=_unit)  # scale on joint armature (rotor inertia)
    motor_strength: list[float] = field(default_factory=_unit)  # scales actuator force output
    kp_scale: list[float] = field(default_factory=_unit)  # scale on PD stiffness (torque mode ignores it)
    kd_scale: list[float] = field(default_factory=_unit)  # scale on PD damping gain (torque mode ignores it)
    latency_steps: list[int] = field(default_factory=lambda: [0, 0])  # action delay, control steps
    obs_noise: float = 0.0  # multiplier on the task's per-term noise std
    push_interval_s: float = 0.0  # s between random velocity kicks within an episode (0: no pushes)
    push_velocity: float = 0.0  # max velocity kick on the pushable dofs

    def randomized(self) -> frozenset[str]:
        """Names of the physical parameters whose range is not the nominal point (none when disabled)."""
        if not self.enabled:
            return frozenset()
        return frozenset(n for n in RANGE_FIELDS
                         if list(getattr(self, n)) != ([1.0, 1.0] if n in NONNEGATIVE_FIELDS else [0.0, 0.0]))

    def validate(self, where: str = "randomization") -> None:
        """Raise :class:`RandomizationError` naming the first bad key."""
        for name in (*RANGE_FIELDS, "latency_steps"):
            r = getattr(self, name)
            if len(r) != 2:
                raise RandomizationError(f"{where}.{name}: expected [low, high], got {list(r)}")
            lo, hi = r
            if not np.isfinite([lo, hi]).all() or lo > hi:
                raise RandomizationError(f"{where}.{name}: need finite low <= high, got [{lo}, {hi}]")
            if name in NONNEGATIVE_FIELDS and lo <= 0:
                raise RandomizationError(f"{where}.{name}: a scale must be > 0, got low={lo}")
        if self.latency_steps[0] < 0:
            raise RandomizationError(f"{where}.latency_steps: must be >= 0, got {list(self.latency_steps)}")
        if self.latency_steps[1] > 16:
            raise RandomizationError(f"{where}.latency_steps: at most 16 control steps, got {self.latency_steps[1]}")
        for name in ("obs_noise", "push_interval_s", "push_velocity"):
            if getattr(self, name) < 0:
                raise RandomizationError(f"{where}.{name}: must be >= 0, got {getattr(self, name)}")


@dataclass
class PhysicsParams:
    """Physical parameters of n robots, one row each."""

    friction: np.ndarray  # (n,)
    mass_scale: np.ndarray  # (n,)
    base_mass_add: np.ndarray  # (n,)
    com_offset: np.ndarray  # (n, 3)
    damping_scale: np.ndarray
    armature_scale: np.ndarray
    motor_strength: np.ndarray
    kp_scale: np.ndarray
    kd_scale: np.ndarray
    latency_steps: np.ndarray  # (n,) int

    NUM_PRIVILEGED = 12

    def privileged(self) -> np.ndarray:
        """(n, 12) float32: the sampled values, centred on nominal, for the critic."""
        cols = [self.friction - 1, self.mass_scale - 1, self.base_mass_add, self.com_offset[:, 0],
                self.com_offset[:, 1], self.com_offset[:, 2], self.damping_scale - 1, self.armature_scale - 1,
                self.motor_strength - 1, self.kp_scale - 1, self.kd_scale - 1, self.latency_steps]
        return np.stack(cols, axis=1).astype(np.float32)


def nominal_params(n: int) -> PhysicsParams:
    """Parameters of n robots exactly as modelled (no randomisation)."""
    return sample_params(np.random.default_rng(0), RandomizationConfig(enabled=False), n)


def sample_params(rng: np.random.Generator, cfg: RandomizationConfig, n: int) -> PhysicsParams:
    """Draw n robots' parameters from ``cfg`` (nominal values when ``cfg.enabled`` is false)."""

    def u(name: str, shape: tuple[int, ...] = ()) -> np.ndarray:
        lo, hi = getattr(cfg, name)
        if not cfg.enabled:
            lo = hi = 1.0 if name in NONNEGATIVE_FIELDS else 0.0
        return rng.uniform(lo, hi, size=(n, *shape))

    lat_lo, lat_hi = (cfg.latency_steps if cfg.enabled else (0, 0))
    return PhysicsParams(
        friction=u("friction"), mass_scale=u("mass_scale"), base_mass_add=u("base_mass_add"),
        com_offset=u("com_offset", (3,)), damping_scale=u("damping_scale"),
        armature_scale=u("armature_scale"), motor_strength=u("motor_strength"), kp_scale=u("kp_scale"),
        kd_scale=u("kd_scale"), latency_steps=rng.integers(int(lat_lo), int(lat_hi) + 1, size=n),
    )
