"""Robot identity: CURVE key files, the hub's allow-list of robot keys, the ZAP check at each handshake and the
per-message check that binds a header's robot id to the authenticated key.

Layout of a hub key directory (``fleet-keys init DIR``)::

    DIR/hub.key, DIR/hub.key_secret (0600)     the hub's key pair (zcert text, z85 keys)
    DIR/allowlist.json                         robot id -> public key of every enrolled robot, and the revoked
    DIR/robots/<robot id>/                     what ``enrol`` writes for a robot (unless --out): robot.key,
                                               robot.key_secret (0600) and hub.key; copy it to the robot

ZAP runs once per connection, so a revocation must also reach robots already connected: the hub calls
``check_sender`` on every message, which looks the message's authenticated key (ZMQ's User-Id) up in the current
allow-list; the allow-list re-reads its file when it changes (checked at most every ``reload_ms``).
"""

from __future__ import annotations

import datetime
import fcntl
import json
import logging
import os
import re
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from fleet.config import SecurityConfig
from fleet.protocol_fields import ROBOT_ID, ErrorCode, ProtocolError
from shared_policy.durable import fsync_dir, write_atomic

log = logging.getLogger(__name__)

HUB_PUBLIC, HUB_SECRET = "hub.key", "hub.key_secret"
ROBOT_PUBLIC, ROBOT_SECRET = "robot.key", "robot.key_secret"
ALLOWLIST, ROBOTS_DIR, LOCK = "allowlist.json", "robots", ".allowlist.lock"
ZAP_DOMAIN = "fleet"
Z85_KEY = re.compile(r"[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}")
_PLAINTEXT_BANNER = ("*" * 78 + "\nSECURITY OFF: %s runs in PLAIN-TEXT mode (security.mode=plaintext). No encryption, "
                     "no authentication:\nanyone who reaches the port can send as any robot. Use it only on a "
                     "closed lab network.\n" + "*" * 78)


class KeyFileError(RuntimeError):
    """A key file or the allow-list is missing, malformed or too open."""


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _zcert(public: str, secret: str | None) -> bytes:
    """zcert text, as zmq.auth.load_certificate reads it."""
    kind = "Secret" if secret else "Public"
    lines = [f"#   ZeroMQ CURVE {kind} Certificate, written by fleet-keys on {_now()}", "metadata", "curve",
             f'    public-key = "{public}"'] + ([f'    secret-key = "{secret}"'] if secret else [])
    return ("\n".join(lines) + "\n").encode()


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode`` from the start (a secret is never readable by others, even for a moment)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def write_key_pair(directory: Path, public_name: str, secret_name: str) -> tuple[Path, Path]:
    """A new CURVE key pair as two files in ``directory``: public (0644) and secret (0600, holds both keys)."""
    public, secret = (k.decode() for k in zmq.curve_keypair())
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    pub, sec = directory / public_name, directory / secret_name
    _write_new(sec, _zcert(public, secret), 0o600)
    _write_new(pub, _zcert(public, None), 0o644)
    fsync_dir(directory)
    return pub, sec


def load_public(path: Path) -> bytes:
    """The z85 public key in a key file."""
    try:
        public, _ = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"{path}: no readable public key ({exc})") from None
    if not Z85_KEY.fullmatch(public.decode(errors="replace")):
        raise KeyFileError(f"{path}: public key is not 40 z85 characters")
    return public


def load_secret(path: Path) -> tuple[bytes, bytes]:
    """The z85 (public, secret) keys in a secret key file, refused if others may read it (as ssh does)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"{path}: no readable secret key ({exc})") from None
    if mode & 0o077:
        raise KeyFileError(f"{path}: secret key readable by others (mode {mode:04o}); chmod 600 it")
    if secret is None or not Z85_KEY.fullmatch(secret.decode(errors="replace")):
        raise KeyFileError(f"{path}: holds no 40-character z85 secret key")
    return public, secret


# --- the allow-list file ------------------------------------------------------------------------------------


def read_allowlist(path: Path) -> dict[str, Any]:
    """The allow-list file's content, checked: every robot id valid, every key z85, no key twice."""
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no allow-list (run `fleet-keys init {path.parent}`)") from None
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: nesting too deep to parse
        raise KeyFileError(f"{path}: unreadable allow-list ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("robots"), dict) \
            or not isinstance(data.get("revoked", {}), dict):
        raise KeyFileError(f"{path}: not an allow-list (an object with a 'robots' map)")
    seen: set[str] = set()
    for robot, entry in data["robots"].items():
        key = entry.get("public_key") if isinstance(entry, dict) else None
        if not ROBOT_ID.pattern.fullmatch(robot) or not isinstance(key, str) or not Z85_KEY.fullmatch(key):
            raise KeyFileError(f"{path}: bad entry for robot {robot!r:.70}")
        if key in seen:
            raise KeyFileError(f"{path}: public key {key[:8]}... enrolled twice")
        seen.add(key)
    return data


@contextmanager
def _locked_allowlist(directory: Path) -> Iterator[dict[str, Any]]:
    """The allow-list for a read-modify-write under an exclusive lock; written back atomically on success."""
    with open(directory / LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = read_allowlist(directory / ALLOWLIST)
        yield data
        write_atomic(directory / ALLOWLIST, json.dumps(data, indent=1, sort_keys=True).encode())


def init_hub(directory: Path) -> tuple[Path, Path]:
    """The hub's key pair and an empty allow-list in ``directory``; refuses to replace an existing hub key."""
    if (directory / HUB_SECRET).exists():
        raise KeyFileError(f"{directory / HUB_SECRET} exists: a new hub key would cut off every enrolled robot")
    pub, sec = write_key_pair(directory, HUB_PUBLIC, HUB_SECRET)
    if not (directory / ALLOWLIST).exists():
        write_atomic(directory / ALLOWLIST, json.dumps({"format": 1, "robots": {}, "revoked": {}}).encode())
    return pub, sec


def enrol(directory: Path, robot_id: str, out: Path | None = None, rekey: bool = False) -> Path:
    """A new key pair for ``robot_id``, its files (robot.key, robot.key_secret, hub.key) in ``out`` (default
    DIR/robots/ROBOT_ID), and the robot in the allow-list. Returns ``out``. ``rekey`` replaces an enrolled key."""
    if not ROBOT_ID.pattern.fullmatch(robot_id):
        raise ValueError(f"robot id {robot_id!r}: {ROBOT_ID.what}")
    hub_public = load_public(directory / HUB_PUBLIC)
    out = Path(out) if out is not None else directory / ROBOTS_DIR / robot_id
    with _locked_allowlist(directory) as data:
        if robot_id in data["robots"] and not rekey:
            raise KeyFileError(f"robot {robot_id} is already enrolled (--rekey replaces its key)")
        for name in (ROBOT_SECRET, ROBOT_PUBLIC, HUB_PUBLIC):
            if rekey:
                (out / name).unlink(missing_ok=True)
            elif (out / name).exists():
                raise KeyFileError(f"{out / name} exists: choose another --out or --rekey")
        pub, _ = write_key_pair(out, ROBOT_PUBLIC, ROBOT_SECRET)
        _write_new(out / HUB_PUBLIC, _zcert(hub_public.decode(), None), 0o644)
        data["robots"][robot_id] = {"public_key": load_public(pub).decode(), "enrolled": _now()}
        data.setdefault("revoked", {}).pop(robot_id, None)
    return out


def revoke(directory: Path, robot_id: str) -> bool:
    """Take ``robot_id`` off the allow-list (kept under 'revoked' for the record); False if it was not on it."""
    with _locked_allowlist(directory) as data:
        entry = data["robots"].pop(robot_id, None)
        if entry is not None:
            data.setdefault("revoked", {})[robot_id] = {**entry, "revoked": _now()}
    return entry is not None


# --- the hub's view: allow-list, ZAP, sender checks ---------------------------------------------------------


def user_id(frame: Any) -> str | None:
    """The ZAP User-Id of a received frame (the client's z85 key under CURVE), or None where there is none."""
    try:
        return frame.get("User-Id") or None
    except (AttributeError, zmq.ZMQError):  # bytes (received with copy=True) or a NULL-mechanism message
        return None


class RobotAllowList:
    """Public key -> robot id of the enrolled robots, re-read when its file changes (inode, mtime or size; looked
    at most every ``reload_ms``). An unreadable file admits nobody (fails closed) and says why. Thread-safe: the
    ZAP thread and the hub's loop both ask it. Also the ZAP credentials provider (``callback``)."""

    def __init__(self, path: str | Path, reload_ms: int = 500):
        self.path, self.reload_s = Path(path), reload_ms / 1000
        self._lock = threading.Lock()
        self._signature: tuple[int, int, int] | None = None
        self._next_check = 0.0
        self._robot_of: dict[str, str] = {}
        self._warned: set[str] = set()
        self._reload(force=True)

    def _reload(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next_check:  # the usual case, on every message: no lock to take
            return
        with self._lock:
            if not force and now < self._next_check:
                return
            try:
                st = self.path.stat()
                signature = (st.st_ino, st.st_mtime_ns, st.st_size)
            except OSError:
                signature = None
            if signature != self._signature or force:
                self._signature = signature
                try:
                    robots = read_allowlist(self.path)["robots"]
                    self._robot_of = {entry["public_key"]: robot for robot, entry in robots.items()}
                    log.info("allow-list %s: %d robots enrolled", self.path, len(self._robot_of))
                except Exception as exc:  # noqa: BLE001 - whatever the file does, fail closed: never keep the old list
                    self._robot_of = {}
                    log.error("allow-list refuses every robot until fixed: %s", exc)
            # only now may the lock-free path skip the check: set before the read, it let other threads go on
            # with the old list (a key just revoked) for as long as the read took
            self._next_check = now + self.reload_s

    def robot_for_key(self, key: str | bytes) -> str | None:
        """The robot enrolled with z85 public ``key``, or None (never enrolled, or revoked)."""
        self._reload()
        return self._robot_of.get(key.decode(errors="replace") if isinstance(key, bytes) else key)

    def callback(self, domain: str, key: bytes) -> bool:
        """ZAP: admit a CURVE handshake only from an enrolled key. Never raises (that would kill the ZAP thread)."""
        try:
            robot = self.robot_for_key(key)
        except Exception:  # noqa: BLE001 - a refusal is the safe answer to anything unexpected
            log.exception("allow-list lookup failed: refusing the handshake")
            return False
        if robot is None:
            shown = key.decode(errors="replace")[:8]
            if shown not in self._warned and len(self._warned) < 1024:  # once per key: clients retry forever
                self._warned.add(shown)
                log.warning("refused a CURVE handshake from unknown or revoked key %s...", shown)
        return robot is not None

    def identity_of(self, frame: Any) -> str:
        """The robot whose authenticated key sent ``frame`` (a zmq.Frame received with copy=False), by the
        current allow-list; ProtocolError(UNKNOWN_KEY) when there is no key or it is not (or no longer) enrolled."""
        key = user_id(frame)
        if key is None:
            raise ProtocolError(ErrorCode.UNKNOWN_KEY, "message carries no authenticated key (User-Id)")
        robot = self.robot_for_key(key)
        if robot is None:
            raise ProtocolError(ErrorCode.UNKNOWN_KEY, f"key {key[:8]}... is not enrolled (revoked?)")
        return robot

    def check_sender(self, header_robot_id: str, frame: Any) -> str:
        """The sending robot's id if the header names the robot its key belongs to; else ProtocolError
        (IDENTITY_MISMATCH, or UNKNOWN_KEY for a key not or no longer enrolled). Call it on every message."""
        robot = self.identity_of(frame)
        if header_robot_id != robot:
            raise ProtocolError(ErrorCode.IDENTITY_MISMATCH,
                                f"header names robot {header_robot_id!r:.70} but the key is robot {robot!r}'s")
        return robot


class PlaintextSenders:
    """Plain-text mode: no key, so a robot is whoever its header says (the hub binds a connection to its
    HELLO's robot id). Same interface as RobotAllowList."""

    def identity_of(self, frame: Any) -> None:
        """No authenticated identity in plain-text mode."""
        return None

    def check_sender(self, header_robot_id: str, frame: Any) -> str:
        """The header's robot id, unchecked."""
        return header_robot_id


class HubSecurity:
    """The hub's side of security for one ZeroMQ context: under CURVE, the hub key pair, the allow-list and the
    running ZAP handler (started before any socket binds, since a CURVE socket with no ZAP handler admits any
    key); under plain text, a loud warning. ``check_sender`` binds each message to its robot."""

    def __init__(self, ctx: zmq.Context, cfg: SecurityConfig):
        cfg.validate()
        self.ctx, self.mode = ctx, cfg.mode
        self.authenticator: ThreadAuthenticator | None = None
        if cfg.mode == "plaintext":
            log.warning(_PLAINTEXT_BANNER, "the hub")
            self.senders: RobotAllowList | PlaintextSenders = PlaintextSenders()
            return
        keys = Path(cfg.keys_dir)
        self.public, self.secret = load_secret(keys / HUB_SECRET)
        read_allowlist(keys / ALLOWLIST)  # a missing or broken allow-list stops the start, with the reason
        self.senders = RobotAllowList(keys / ALLOWLIST, cfg.allowlist_reload_ms)
        self.authenticator = ThreadAuthenticator(ctx, log=logging.getLogger("fleet.zap"))
        self.authenticator.start()
        self.authenticator.configure_curve_callback(ZAP_DOMAIN, credentials_provider=self.senders)

    def apply(self, sock: zmq.Socket) -> None:
        """Make ``sock`` a CURVE server checked by this ZAP handler (nothing in plain-text mode)."""
        if self.mode == "plaintext":
            return
        if sock.context is not self.ctx:
            raise ValueError("socket and ZAP handler in different contexts: the socket would admit any key")
        sock.curve_secretkey, sock.curve_publickey = self.secret, self.public
        sock.zap_domain = ZAP_DOMAIN.encode()
        sock.curve_server = True

    def check_sender(self, header_robot_id: str, frame: Any) -> str:
        """See RobotAllowList.check_sender (plain text: the header's robot id)."""
        return self.senders.check_sender(header_robot_id, frame)

    def close(self) -> None:
        """Stop the ZAP handler."""
        if self.authenticator is not None:
            self.authenticator.stop()
            self.authenticator = None

    def __enter__(self) -> HubSecurity:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def apply_client_security(sock: zmq.Socket, cfg: SecurityConfig) -> None:
    """Make ``sock`` a CURVE client with the robot's keys from ``cfg.keys_dir`` (robot.key_secret, hub.key), or
    warn loudly in plain-text mode."""
    cfg.validate()
    if cfg.mode == "plaintext":
        log.warning(_PLAINTEXT_BANNER, "this robot's uplink")
        return
    keys = Path(cfg.keys_dir)
    public, secret = load_secret(keys / ROBOT_SECRET)
    sock.curve_serverkey = load_public(keys / HUB_PUBLIC)
    sock.curve_publickey, sock.curve_secretkey = public, secret
