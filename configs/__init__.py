"""The Hydra config tree shared by sim training, the hub and the robot agent.

It is a package so that an installed wheel carries the YAML files: code finds them through
``CONFIG_DIR`` whether it runs from a checkout or from site-packages.
"""

from pathlib import Path

CONFIG_DIR: Path = Path(__file__).resolve().parent
"""Absolute path of the config tree (what Hydra's ``config_path`` resolves to)."""


def group_options(group: str) -> list[str]:
    """The options of a config group (``configs/<group>/<option>.yaml``), sorted: what ``<group>=`` accepts."""
    return sorted(path.stem for path in (CONFIG_DIR / group).glob("*.yaml"))
