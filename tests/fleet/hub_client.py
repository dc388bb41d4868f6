"""Test helpers for the hub over real sockets: a hub in a thread or as a real ``fleet-hub`` process, and a bare
robot (a DEALER speaking the protocol by hand, so a test can also break it)."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import zmq

from fleet.config import HubConfig, SecurityConfig, SocketConfig, UplinkConfig
from fleet.hub import HubServer
from fleet.protocol import Chunk, Heartbeat, Hello, Message, decode
from fleet.sockets import recv_frames, robot_socket, send_frames

BIN = Path(sys.executable).parent
WAIT_MS = 5000  # generous deadlines: a loaded machine must not turn a pass into a failure


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (a restarted hub binds the same one)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(cond: Any, seconds: float = 30.0, every: float = 0.02) -> Any:
    """Poll ``cond`` in a bounded loop; its last result."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        got = cond()
        if got:
            return got
        time.sleep(every)
    return cond()


def hub_config(storage: Path, keys: Path | None = None, port: int | None = None, **kw: Any) -> HubConfig:
    """A hub config on 127.0.0.1: CURVE with ``keys``, plain text without."""
    security = SecurityConfig(keys_dir=str(keys), allowlist_reload_ms=0) if keys else \
        SecurityConfig(mode="plaintext", keys_dir="")
    return HubConfig(bind=f"tcp://127.0.0.1:{port or free_port()}", storage_dir=str(storage), security=security,
                     max_frame_bytes=1 << 20, **kw)


class ThreadHub:
    """A HubServer running in a thread of the test process; ``stop()`` ends it gracefully."""

    def __init__(self, cfg: HubConfig):
        self.cfg = cfg
        self.server = HubServer(cfg)
        self.endpoint = self.server.endpoint
        self.thread = threading.Thread(target=self.server.run, name="test-hub", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.request_stop()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the hub did not stop"


def stored_ids(storage: Path) -> list[str]:
    """Chunk ids in the store's SQLite file, read by a connection of our own (as any reader would)."""
    db = storage / "experience.sqlite"
    if not db.exists():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return [r[0] for r in con.execute("SELECT chunk_id FROM chunks ORDER BY rowid")]
    finally:
        con.close()


class BareRobot:
    """A robot that speaks the protocol by hand over its own DEALER."""

    def __init__(self, endpoint: str, robot_id: str, keys_dir: Path | None = None):
        self.robot_id, self.seq = robot_id, 0
        self.ctx = zmq.Context()
        security = SecurityConfig(keys_dir=str(keys_dir)) if keys_dir else SecurityConfig(mode="plaintext")
        self.sock = robot_socket(self.ctx, UplinkConfig(endpoint=endpoint, security=security, max_frame_bytes=1 << 20,
                                                        socket=SocketConfig(reconnect_ivl_ms=20,
                                                                            reconnect_ivl_max_ms=200)))

    def _seq(self) -> int:
        self.seq += 1
        return self.seq

    def send(self, msg: Message | list[bytes], timeout_ms: int = WAIT_MS) -> bool:
        frames = msg if isinstance(msg, list) else msg.encode()
        return send_frames(self.sock, frames, timeout_ms)

    def hello(self, robot_id: str | None = None, spool_depth: int = 0) -> Hello:
        return Hello(robot_id=robot_id or self.robot_id, seq=self._seq(), hardware="cartpole", profile_hash="ab" * 8,
                     agent_version="0.1.0", spool_depth=spool_depth, spool_bytes=0, trunk_version=0, adapter_version=0)

    def chunk(self, chunk_id: str, payload: bytes, robot_id: str | None = None) -> Chunk:
        return Chunk.of(robot_id or self.robot_id, self._seq(), chunk_id, payload)

    def heartbeat(self, echo_us: int = 0, echo_delay_us: int = 0, spool_depth: int = 0) -> Heartbeat:
        return Heartbeat(robot_id=self.robot_id, seq=self._seq(), t_us=time.monotonic_ns() // 1000, echo_us=echo_us,
                         echo_delay_us=echo_delay_us, spool_depth=spool_depth, spool_bytes=0, trunk_version=0,
                         adapter_version=0)

    def recv(self, timeout_ms: int = WAIT_MS) -> Message | None:
        frames = recv_frames(self.sock, timeout_ms)
        return None if frames is None else decode(frames)

    def recv_type(self, kind: str, timeout_ms: int = WAIT_MS, skip: tuple[str, ...] = ("heartbeat",)) -> Message | None:
        """The next message of type ``kind``, skipping ``skip`` types; None on timeout or another type."""
        end = time.monotonic() + timeout_ms / 1000
        while time.monotonic() < end:
            msg = self.recv(max(1, int((end - time.monotonic()) * 1000)))
            if msg is None or msg.TYPE == kind:
                return msg
            if msg.TYPE not in skip:
                raise AssertionError(f"expected {kind}, got {msg}")
        return None

    def welcome(self) -> Message:
        assert self.send(self.hello())
        msg = self.recv_type("welcome")
        assert msg is not None, "no WELCOME"
        return msg

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


def start_hub_process(tmp: Path, port: int, *overrides: str, keys: Path | None = None,
                      env: dict[str, str] | None = None) -> subprocess.Popen:
    """A real ``fleet-hub`` process on 127.0.0.1:``port`` storing in ``tmp/hub``, in its own process group
    (W&B disabled unless ``env`` says otherwise)."""
    env = {**os.environ, "WANDB_MODE": "disabled", **(env or {})}
    security = [f"security.keys_dir={keys}", "security.allowlist_reload_ms=0"] if keys else \
        ["security.mode=plaintext"]
    args = [str(BIN / "fleet-hub"), f"bind=tcp://127.0.0.1:{port}", f"storage_dir={tmp / 'hub'}",
            f"hydra.run.dir={tmp / 'hydra'}", *security, *overrides]
    proc = subprocess.Popen(args, cwd=tmp, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen = []
    for _ in range(100):  # log lines, then the start line once the socket is bound
        seen.append(proc.stdout.readline())
        if "listening on" in seen[-1] or not seen[-1]:
            break
    if "listening on" not in seen[-1]:
        proc.kill()
        raise AssertionError(f"fleet-hub did not start: {''.join(seen)}{proc.stdout.read()[-3000:]}")
    _drain_output(proc)
    return proc


def _drain_output(proc: subprocess.Popen) -> None:
    """Keep reading the hub's output so a full pipe never blocks it; kept in ``proc.output``."""
    proc.output = []  # type: ignore[attr-defined]

    def pump() -> None:
        for line in proc.stdout:
            proc.output.append(line)  # type: ignore[attr-defined]

    threading.Thread(target=pump, daemon=True).start()


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL a process started in its own session, and everything it started."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)


def rss_kb(pid: int) -> int:
    """Resident memory of a process in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")
