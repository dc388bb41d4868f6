"""Checkpoints: a directory of safetensors weights, a JSON manifest with a sha256 per file, and the layouts.

    <dir>/manifest.json                 format, trunk version, files and their sha256, hardware layouts, config
    <dir>/trunk.safetensors             the shared trunk
    <dir>/critic.safetensors            the critic trunk (when separate)
    <dir>/hardware/<type>.safetensors   stem, head, critic stem and value head of one type, normalisers included
    <dir>/adapters/<unit>.safetensors   optional per-unit adapters
    <dir>/training_state.pt             optimizer, learning rate, iteration (for resuming; tensors only)

A checkpoint loads only if every file's checksum matches and, when the caller says what it expects,
every hardware layout and hardware profile matches too. Writes go to a temporary directory renamed into place.

Each hardware entry of the manifest records the hash of the profile it was trained on (gains, limits,
action scale, rates: see ``hardware.profile.profile_hash``) and the profile itself, so that a mismatch
names the fields that differ. A manifest written before profile hashes loads with a warning: its layout
is still checked, and refusing it would strand every robot running it until it is retrained.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from shared_policy.config import PolicyConfig
from shared_policy.durable import fsync_dir
from shared_policy.policy import FleetPolicy, HardwareSpec

FORMAT_VERSION = 1
MANIFEST = "manifest.json"

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupted, or does not match what the caller expects."""


def sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _prefixed(module: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v.detach().contiguous().cpu() for k, v in module.state_dict().items()}


def save_checkpoint(path: str | Path, policy: FleetPolicy, trunk_version: int, config: dict[str, Any] | None = None,
                    training_state: dict[str, Any] | None = None,
                    adapters: dict[str, torch.nn.Module] | None = None) -> Path:
    """Write ``policy`` (and optional adapters and training state) as a checkpoint directory at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        files: dict[str, dict[str, torch.Tensor]] = {"trunk.safetensors": _prefixed(policy.trunk, "trunk")}
        if policy.critic_trunk is not None:
            files["critic.safetensors"] = _prefixed(policy.critic_trunk, "critic_trunk")
        for hw in policy.specs:
            files[f"hardware/{hw}.safetensors"] = {
                **_prefixed(policy.stems[hw], f"stems.{hw}"), **_prefixed(policy.heads[hw], f"heads.{hw}"),
                **_prefixed(policy.critic_stems[hw], f"critic_stems.{hw}"),
                **_prefixed(policy.value_heads[hw], f"value_heads.{hw}"),
            }
        for unit, adapter in (adapters or {}).items():
            files[f"adapters/{unit}.safetensors"] = _prefixed(adapter, "adapter")
        digests = {}
        for rel, tensors in files.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            save_file(tensors, str(tmp / rel))
            digests[rel] = sha256(tmp / rel)
        if training_state is not None:
            torch.save(training_state, tmp / "training_state.pt")
            digests["training_state.pt"] = sha256(tmp / "training_state.pt")
        manifest = {
            "format_version": FORMAT_VERSION,
            "trunk_version": int(trunk_version),
            "files": digests,
            "policy": asdict(policy.cfg),
            "hardware": {hw: {"num_obs": s.num_obs, "num_actions": s.num_actions, "num_critic_obs": s.num_critic_obs,
                              "obs_layout": [list(t) for t in s.obs_layout], "action_names": list(s.action_names),
                              **({"profile_hash": s.profile_hash, "profile": json.loads(s.profile)}
                                 if s.profile_hash else {})}
                         for hw, s in policy.specs.items()},
            "adapters": {unit: {"hardware": a.hardware, "rank": a.cfg.rank, "alpha": a.cfg.alpha}
                         for unit, a in (adapters or {}).items()},
            "config": config or {},
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
        tmp.rename(path)
        fsync_dir(path.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of a checkpoint, after checking that every file it lists is present and intact."""
    path = Path(path)
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise CheckpointError(f"{path} is not a checkpoint: no {MANIFEST}")
    try:
        manifest = json.loads(mpath.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{mpath} is corrupted: {exc}") from exc
    if manifest.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {manifest.get('format_version')} is not {FORMAT_VERSION}")
    for rel, digest in manifest["files"].items():
        f = path / rel
        if not f.is_file():
            raise CheckpointError(f"{path}: {rel} is missing")
        actual = sha256(f)
        if actual != digest:
            raise CheckpointError(f"{path}: {rel} is corrupted (sha256 {actual[:12]}..., manifest says "
                                  f"{digest[:12]}...)")
    return manifest


def specs_from_manifest(manifest: dict[str, Any]) -> dict[str, HardwareSpec]:
    """The hardware specs a checkpoint was trained with."""
    return {hw: HardwareSpec(hw, h["num_obs"], h["num_actions"], h["num_critic_obs"],
                             tuple(tuple(t) for t in h["obs_layout"]), tuple(h["action_names"]),
                             h.get("profile_hash", ""),
                             json.dumps(h["profile"], sort_keys=True, separators=(",", ":")) if "profile" in h else "")
            for hw, h in manifest["hardware"].items()}


def profile_differences(have: Any, want: Any, have_name: str = "have", want_name: str = "want",
                        where: str = "") -> list[str]:
    """Where two canonical profiles (JSON values) differ, one line per field with both values; joints are
    named by their ``name``."""
    if isinstance(have, dict) and isinstance(want, dict):
        out = []
        for key in sorted(set(have) | set(want)):
            path = f"{where}.{key}" if where else str(key)
            out += profile_differences(have.get(key), want.get(key), have_name, want_name, path)
        return out
    if isinstance(have, list) and isinstance(want, list) and len(have) == len(want):
        out = []
        for i, (a, b) in enumerate(zip(have, want, strict=True)):
            label = a["name"] if isinstance(a, dict) and isinstance(b, dict) and a.get("name") == b.get("name") else i
            out += profile_differences(a, b, have_name, want_name, f"{where}[{label}]")
        return out
    return [] if have == want else [f"{where}: {have_name} {have!r}, {want_name} {want!r}"]


def check_layouts(manifest: dict[str, Any], expected: dict[str, HardwareSpec], path: str | Path = "") -> None:
    """Refuse a checkpoint whose layouts or hardware profiles differ from ``expected`` for any hardware type
    the caller needs (a manifest without profile hashes is checked by layout only, with a warning)."""
    have = specs_from_manifest(manifest)
    for hw, want in expected.items():
        if hw not in have:
            raise CheckpointError(f"checkpoint has no hardware type '{hw}'; it has {sorted(have)}")
        got = have[hw]
        for key in ("num_obs", "num_actions", "num_critic_obs", "obs_layout", "action_names"):
            if getattr(want, key) and getattr(got, key) != getattr(want, key):
                raise CheckpointError(f"checkpoint layout mismatch for '{hw}'.{key}: checkpoint has "
                                      f"{getattr(got, key)}, expected {getattr(want, key)}")
        if not want.profile_hash:
            continue
        if not got.profile_hash:
            log.warning("checkpoint %s records no hardware profile for '%s' (written before profile hashes): its "
                        "layout matches, but its gains, limits, action scale and rates cannot be checked", path, hw)
        elif got.profile_hash != want.profile_hash:
            diff = profile_differences(json.loads(got.profile), json.loads(want.profile), "checkpoint", "expected")
            raise CheckpointError(f"checkpoint hardware profile mismatch for '{hw}' (hash {got.profile_hash[:12]}, "
                                  f"expected {want.profile_hash[:12]}): {'; '.join(diff) or 'fields equal'}")


def load_checkpoint(path: str | Path, expected: dict[str, HardwareSpec] | None = None,
                    device: str = "cpu") -> tuple[FleetPolicy, dict[str, Any]]:
    """Verify and load a checkpoint; returns the policy and the manifest."""
    path = Path(path)
    manifest = read_manifest(path)
    if expected:
        check_layouts(manifest, expected, path)
    policy = FleetPolicy(PolicyConfig(**manifest["policy"]), specs_from_manifest(manifest))
    state: dict[str, torch.Tensor] = {}
    for rel in manifest["files"]:
        if rel.endswith(".safetensors") and not rel.startswith("adapters/"):
            state.update(load_file(str(path / rel), device=device))
    try:
        policy.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the manifest's policy: {exc}") from exc
    return policy.to(device), manifest


def load_training_state(path: str | Path) -> dict[str, Any]:
    """The optimizer/iteration state saved with a checkpoint (checksummed by :func:`read_manifest`)."""
    f = Path(path) / "training_state.pt"
    if not f.is_file():
        raise CheckpointError(f"{path} has no training state to resume from")
    return torch.load(f, weights_only=True)


def load_adapter_state(path: str | Path, unit: str) -> dict[str, torch.Tensor]:
    """The weights of unit ``unit``'s adapter in a checkpoint."""
    manifest = read_manifest(path)
    rel = f"adapters/{unit}.safetensors"
    if rel not in manifest["files"]:
        raise CheckpointError(f"{path} has no adapter for unit '{unit}'")
    return {k.removeprefix("adapter."): v for k, v in load_file(str(Path(path) / rel)).items()}
