"""The adapter ``adapter.drift_kl`` measures a unit's on-robot learning from: its anchor on each trunk version.

The anchor of a trunk is the first adapter the unit ran on it (the rebased one it got with the trunk, or the one
it started with). It is kept on disk, one file per trunk version beside the adapter file, so that neither a restart
nor a return to the trunk (a canary rolled back, a unit held back) resets the budget: a unit that returned with
its drifted adapter and re-anchored on it could walk down by one budget per trip. The ``KEPT_ANCHORS`` most
recently used are kept (stamped with the wall clock on use), so a trunk a canary returns to within that many
other trunks keeps its anchor; the current trunk's is never dropped.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import torch

from shared_policy.adapter import Adapter, AdapterFileError, load_adapter, save_adapter

log = logging.getLogger(__name__)

KEPT_ANCHORS = 8  # anchors on disk, the most recently used first


def anchor_path(adapter_path: str | Path, trunk_version: int) -> Path:
    """Where the anchor of ``trunk_version`` is kept, beside the adapter file at ``adapter_path``."""
    p = Path(adapter_path)
    return p.with_name(f"{p.name.split('.')[0]}.anchor-v{int(trunk_version):06d}.safetensors")


def load_anchor(adapter_path: Path, policy: torch.nn.Module, hardware: str, trunk_version: int, current: Adapter,
                current_version: int) -> Adapter:
    """The anchor of ``trunk_version``; without a usable one (none, unreadable, or of another rank or alpha),
    ``current`` becomes the anchor and is saved."""
    path = anchor_path(adapter_path, trunk_version)
    if path.is_file():
        try:
            anchor = load_adapter(path, policy, hardware)[0]
            if (anchor.cfg.rank, anchor.cfg.alpha) == (current.cfg.rank, current.cfg.alpha):
                _mark_used(path)
                return anchor
            # another rank does not interpolate; another alpha scales the deltas otherwise: no straight line
            log.warning("adapter anchor %s has another rank or alpha than the adapter: the current adapter is the "
                        "anchor from now", path)
        except AdapterFileError as exc:
            log.warning("adapter anchor %s unreadable (%s): the current adapter is the anchor from now", path, exc)
    save_adapter(path, current, current_version, trunk_version)
    _mark_used(path)
    _prune(adapter_path, keep=path)
    return current


def forget_anchor(adapter_path: Path, trunk_version: int) -> None:
    """Drop the anchor of ``trunk_version`` (the unit starts a fresh adapter on it)."""
    anchor_path(adapter_path, trunk_version).unlink(missing_ok=True)


def _mark_used(path: Path) -> None:
    """Stamp ``path`` with the clock's time in ns (file-system stamps can tie within a kernel tick): the pruning
    keeps the most recently used."""
    now = time.time_ns()
    os.utime(path, ns=(now, now))


def _prune(adapter_path: Path, keep: Path) -> None:
    """Delete all but the ``KEPT_ANCHORS`` most recently used anchors (never ``keep``)."""
    pattern = anchor_path(adapter_path, 0).name.replace("v000000", "v*")
    anchors = sorted(Path(adapter_path).parent.glob(pattern), key=lambda p: p.stat().st_mtime_ns)
    for old in anchors[:-KEPT_ANCHORS]:
        if old != keep:
            old.unlink(missing_ok=True)
