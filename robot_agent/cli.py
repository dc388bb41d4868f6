"""robot-agent: the robot daemon's Hydra app."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from configs import CONFIG_DIR
from hardware.profile import ProfileError, load_profile
from robot_agent.config import register_configs

register_configs()


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="agent")
def agent_main(cfg: DictConfig) -> None:
    """Validate the agent config against the shipped profiles; the daemon lands with its own issue."""
    try:
        profile = load_profile(cfg.hardware)
    except ProfileError as exc:
        print(f"error: hardware: {exc}", file=sys.stderr)
        sys.exit(2)
    print(f"robot-agent: config OK (robot {cfg.robot_id}, hardware {profile.name}); the agent daemon is not "
          "built yet.", file=sys.stderr)
    sys.exit(3)
