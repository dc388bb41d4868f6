"""Small real checkpoints for trunk tests: a fleet policy for the cart-pole, saved as the trainer saves one."""

from __future__ import annotations

from pathlib import Path

import torch

from hardware.profile import load_profile
from robot_agent.runtime import robot_spec
from shared_policy.checkpoint import save_checkpoint
from shared_policy.config import PolicyConfig
from shared_policy.policy import FleetPolicy, HardwareSpec


def cartpole_spec() -> HardwareSpec:
    """What a cart-pole robot checks a trunk against (layout and hardware profile)."""
    return robot_spec(load_profile("cartpole"), [])


def small_checkpoint(path: Path, trunk_version: int, seed: int = 0, trunk_hidden: tuple[int, ...] = (256, 128)
                     ) -> Path:
    """A checkpoint directory of a freshly initialised cart-pole policy (weights differ by ``seed``)."""
    torch.manual_seed(seed)
    policy = FleetPolicy(PolicyConfig(trunk_hidden=list(trunk_hidden)), {"cartpole": cartpole_spec()})
    return save_checkpoint(path, policy, trunk_version=trunk_version)
