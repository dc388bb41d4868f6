"""A trunk as one file: a checkpoint directory packed into an uncompressed tar, the form the hub stores and
serves and a robot unpacks into its ``trunk_dir``.

The archive holds ``manifest.json`` and exactly the files the manifest lists (each checked by its sha256, so a
stray file in the checkpoint directory never travels). It is deterministic (sorted members, zero times and
owners), so one checkpoint always packs to the same bytes and sha256. Unpacking accepts only regular files and
directories under relative paths, and refuses anything else (links, devices, ``..``, absolute names) before a
byte is written, as it refuses what no disk could unpack (a name both a file and a directory, a member under a
file, a name part over 255 bytes, a path over PATH_MAX): an OSError while unpacking is retried as the computer's. Both sides use this module: the format has one definition.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
from pathlib import Path, PurePosixPath
from typing import Any

from shared_policy.durable import fsync_dir

# shared_policy.checkpoint (and with it torch) is imported inside the functions: the hub serves archives without
# ever loading torch, which would cost it hundreds of MB of memory.
MANIFEST = "manifest.json"  # shared_policy.checkpoint.MANIFEST
REBASED_ADAPTER = "rebased_adapter.safetensors"  # a robot's adapter rebased onto this trunk, packed for that robot


def file_sha256(path: str | Path, block: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in blocks (never the whole file in memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(block):
            h.update(data)
    return h.hexdigest()


class TrunkArchiveError(RuntimeError):
    """An archive is not a packed checkpoint (bad member, no manifest, a file fails its digest)."""


def _member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime, info.uid, info.gid, info.uname, info.gname = size, 0o644, 0, 0, 0, "", ""
    return info


def pack_checkpoint(checkpoint: str | Path, out: str | Path, trunk_version: int | None = None,
                    adapter: tuple[str, Path] | None = None) -> dict[str, Any]:
    """Write the checkpoint directory ``checkpoint`` (verified first) as an archive at ``out`` (the caller makes
    ``out`` durable and names it). ``trunk_version``, if given and different, replaces the manifest's (the
    files' digests do not cover the manifest) and the old one is kept as ``renumbered_from``. ``adapter``
    (robot id, adapter file) packs that robot's rebased adapter as ``REBASED_ADAPTER``, named with its sha256 in
    the manifest's ``rebased_adapter``. Returns the manifest that was packed. CheckpointError if the checkpoint
    is missing or damaged."""
    from shared_policy.checkpoint import read_manifest

    src = Path(checkpoint)
    manifest = read_manifest(src)  # every listed file present and matching its sha256
    renumber = trunk_version is not None and int(manifest["trunk_version"]) != trunk_version
    if renumber:
        manifest = {**manifest, "trunk_version": int(trunk_version),
                    "renumbered_from": int(manifest["trunk_version"])}
    extra = Path(adapter[1]).read_bytes() if adapter is not None else b""
    if adapter is not None:
        manifest = {**manifest, "rebased_adapter": {"file": REBASED_ADAPTER, "robot_id": adapter[0],
                                                    "sha256": hashlib.sha256(extra).hexdigest()}}
    if renumber or adapter is not None:
        manifest_bytes = json.dumps(manifest, indent=2, sort_keys=True).encode()
    else:
        manifest_bytes = (src / MANIFEST).read_bytes()
    with open(out, "wb") as f, tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(_member(MANIFEST, len(manifest_bytes)), io.BytesIO(manifest_bytes))
        for rel in sorted(manifest["files"]):
            path = src / rel
            with open(path, "rb") as fh:
                tar.addfile(_member(rel, path.stat().st_size), fh)
        if adapter is not None:
            tar.addfile(_member(REBASED_ADAPTER, len(extra)), io.BytesIO(extra))
    return manifest


def _path_max(dest: Path) -> int:
    try:
        return os.pathconf(dest, "PC_PATH_MAX")
    except (OSError, ValueError):
        return 4096  # Linux's PATH_MAX


def _checked_members(tar: tarfile.TarFile, dest: Path) -> list[tarfile.TarInfo]:
    members = tar.getmembers()
    for m in members:
        parts = PurePosixPath(m.name).parts
        if not (m.isfile() or m.isdir()) or not parts or PurePosixPath(m.name).is_absolute() or ".." in parts:
            raise TrunkArchiveError(f"archive member {m.name[:80]!r} is not a plain relative file")
    if MANIFEST not in {m.name for m in members}:
        raise TrunkArchiveError(f"archive has no {MANIFEST}")
    # what would fail on any disk, refused here as the archive's fault (an OSError is retried as a local one)
    files = [PurePosixPath(m.name) for m in members if m.isfile()]
    if len(set(files)) < len(files):
        raise TrunkArchiveError("archive holds a file twice")
    both = set(files) & {PurePosixPath(m.name) for m in members if m.isdir()}
    if both:
        raise TrunkArchiveError(f"archive member {str(min(both))[:80]!r} is both a file and a directory")
    under_file = [m.name for m in members if set(PurePosixPath(m.name).parents) & set(files)]
    if under_file:
        raise TrunkArchiveError(f"archive member {under_file[0][:80]!r} lies under a file")
    if any(len(part.encode()) > 255 for m in members for part in PurePosixPath(m.name).parts):
        raise TrunkArchiveError("archive has a name longer than 255 bytes")
    # the path extraction opens, as tarfile builds it; a longer one fails with ENAMETOOLONG on every retry
    limit = _path_max(dest)
    too_long = [m.name for m in members if len(os.fsencode(os.path.join(dest, m.name))) >= limit]
    if too_long:
        raise TrunkArchiveError(f"archive member {too_long[0][:80]!r}... makes a path longer than {limit - 1} bytes")
    return members


def read_packed_adapter(archive: str | Path, sha256: str) -> bytes:
    """The rebased adapter packed in ``archive``, read without unpacking the trunk: the archive is first checked
    against ``sha256`` (its record's), then the adapter against the manifest's digest of it. TrunkArchiveError
    if the archive fails either or packs no adapter."""
    if file_sha256(archive) != sha256:
        raise TrunkArchiveError(f"{archive}: does not match the sha256 its record names")
    try:
        with tarfile.open(archive, mode="r:") as tar:
            manifest = json.loads(_member_bytes(tar, MANIFEST))
            rebased = manifest.get("rebased_adapter") if isinstance(manifest, dict) else None
            if not isinstance(rebased, dict):
                raise TrunkArchiveError(f"{archive}: packs no rebased adapter")
            data = _member_bytes(tar, REBASED_ADAPTER)
    except (tarfile.TarError, ValueError) as exc:
        raise TrunkArchiveError(f"{archive}: not a readable trunk archive ({exc})") from exc
    if hashlib.sha256(data).hexdigest() != rebased.get("sha256"):
        raise TrunkArchiveError(f"{archive}: {REBASED_ADAPTER} fails its sha256")
    return data


def _member_bytes(tar: tarfile.TarFile, name: str) -> bytes:
    try:
        member = tar.getmember(name)
    except KeyError:
        raise TrunkArchiveError(f"{tar.name}: has no {name}") from None
    fh = tar.extractfile(member) if member.isfile() else None
    if fh is None:
        raise TrunkArchiveError(f"{tar.name}: {name} is not a regular file")
    return fh.read()


def unpack_trunk(archive: str | Path, dest: str | Path) -> dict[str, Any]:
    """Unpack ``archive`` into the new directory ``dest`` and check it as a checkpoint; every file and directory
    is fsynced. Returns the manifest. TrunkArchiveError on a bad archive: not a tar, a refused member, a file that
    fails its sha256 (``dest`` is then removed). Any OSError is this computer's, not the archive's (tarfile
    reports bad archive bytes as TarError): a full or failing disk, too many open files, a permission; it is
    raised as it is, and the caller may try again once it clears."""
    from shared_policy.checkpoint import CheckpointError, read_manifest

    dest = Path(dest)
    dest.mkdir()
    try:
        try:
            with tarfile.open(archive, mode="r:") as tar:
                _checked_members(tar, dest)
                tar.extractall(dest, filter="data")
        except tarfile.TarError as exc:
            raise TrunkArchiveError(f"{archive}: not a readable trunk archive ({exc})") from exc
        try:
            manifest = read_manifest(dest)
        except (CheckpointError, KeyError, ValueError) as exc:
            raise TrunkArchiveError(f"{archive}: unpacked checkpoint refused: {exc}") from exc
        rebased = manifest.get("rebased_adapter")
        if rebased is not None:  # the manifest's own digests do not list it: check it here
            data = (dest / REBASED_ADAPTER).read_bytes() if (dest / REBASED_ADAPTER).is_file() else b""
            if hashlib.sha256(data).hexdigest() != rebased.get("sha256"):
                raise TrunkArchiveError(f"{archive}: {REBASED_ADAPTER} is missing or fails its sha256")
        dirs = [dest]
        for path in dest.rglob("*"):
            if path.is_dir():
                dirs.append(path)
                continue
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
        for d in dirs:
            fsync_dir(d)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return manifest
