"""Which adapter runs with a trunk: never one trained for another trunk.

An adapter is trained against one trunk version; on another trunk its low-rank deltas mean something else. So
when the agent swaps trunks (forward to a new version, or back after a rollback) it takes, in this order:

1. this unit's own adapter for that trunk version, saved when the unit last left it
   (``<state_dir>/adapters/trunk-v000003.safetensors``): what it learned on-robot on exactly that trunk;
2. the rebased adapter the hub packed with the trunk for this robot (``rebased_adapter.safetensors`` in the
   installed trunk directory, fleet/trunk_archive.py): the unit's old policy distilled onto the new trunk;
3. a fresh adapter (zero deltas: the trunk's own policy), which the unit then learns on.

When it leaves a trunk, the adapter it kept on it is saved under 1. The chosen adapter is also written to the
adapter file a restart loads, with the trunk version it belongs to.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fleet.trunk_archive import REBASED_ADAPTER
from shared_policy.adapter import Adapter, AdapterConfig, AdapterFileError, load_adapter, save_adapter
from shared_policy.policy import FleetPolicy

log = logging.getLogger(__name__)

OWN_ADAPTERS = "adapters"  # inside the agent's state_dir


def own_adapter_path(state_dir: str | Path, trunk_version: int) -> Path:
    """Where this unit keeps the adapter it ran on ``trunk_version``."""
    return Path(state_dir) / OWN_ADAPTERS / f"trunk-v{trunk_version:06d}.safetensors"


def save_own_adapter(state_dir: str | Path, adapter: Adapter, version: int, trunk_version: int) -> None:
    """Keep the adapter this unit ran on ``trunk_version`` (atomic, fsynced), for a later return to it."""
    save_adapter(own_adapter_path(state_dir, trunk_version), adapter, version, trunk_version)


def adapter_for_trunk(trunk_path: str | Path, policy: FleetPolicy, trunk_version: int, hardware: str,
                      state_dir: str | Path, cfg: AdapterConfig) -> tuple[Adapter, int, str]:
    """(adapter, its version, where it came from: ``own`` | ``rebased`` | ``fresh``) for ``policy`` at
    ``trunk_version`` (module docstring). A file that fails to load is logged and passed over."""
    for source, path in (("own", own_adapter_path(state_dir, trunk_version)),
                         ("rebased", Path(trunk_path) / REBASED_ADAPTER)):
        if not path.is_file():
            continue
        try:
            adapter, meta = load_adapter(path, policy, hardware)
        except AdapterFileError as exc:
            log.error("adapter for trunk v%d (%s) refused: %s", trunk_version, source, exc)
            continue
        return adapter.eval(), int(meta.get("version", 0)), source
    return Adapter(policy, hardware, cfg).eval(), 0, "fresh"
