"""The spool against real processes: a second opener, a write that the kernel cuts short, a kill -9."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from robot_agent.spool import Spool

ROOT = Path(__file__).resolve().parents[2]


def _python(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def _arrays() -> dict[str, np.ndarray]:
    return {"obs": np.ones((200, 4), np.float32)}


OPEN = """
import sys
from robot_agent.spool import Spool
try:
    spool = Spool(sys.argv[1])
except Exception as exc:
    print(type(exc).__name__, exc)
    sys.exit(3)
print("opened", spool.depth)
"""


@pytest.mark.timeout(120)
def test_second_process_on_the_same_spool_is_refused_and_truncates_nothing(tmp_path):
    spool = Spool(tmp_path)
    for _ in range(2):
        spool.append({"robot_id": "u1"}, _arrays())
    seg = next(tmp_path.glob("seg-*.spool"))
    # a write in flight, as the second process finds it: a real second opener would cut this as a torn tail
    with open(seg, "ab") as f:
        f.write(b"FLSP-half-a-record")
    size = seg.stat().st_size
    second = _python(OPEN, str(tmp_path))
    assert second.returncode == 3, second.stdout + second.stderr
    assert second.stdout.startswith("SpoolLockedError") and "in use by another process" in second.stdout
    assert f"pid {os.getpid()}" in second.stdout
    assert seg.stat().st_size == size  # the first one's bytes untouched
    spool.close()
    after = _python(OPEN, str(tmp_path))
    assert after.returncode == 0 and "opened 2" in after.stdout, after.stdout + after.stderr


EFBIG = """
import json, resource, signal, sys
import numpy as np
from robot_agent.spool import Spool
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit, a write fails with EFBIG instead of killing us
arrays = {"obs": np.ones((200, 4), np.float32)}
spool = Spool(sys.argv[1])
ids = [spool.append({"robot_id": "u1"}, arrays) for _ in range(3)]
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (spool.bytes + 1000, hard))  # the next record fits only in part
try:
    spool.append({"robot_id": "u1"}, arrays)
    err = None
except OSError as exc:
    err = [exc.errno, str(exc)]
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
ids.append(spool.append({"robot_id": "u1"}, arrays))
print(json.dumps({"ids": ids, "err": err, "write_errors": getattr(spool, "write_errors", None)}))
"""


@pytest.mark.timeout(120)
def test_failed_write_leaves_no_half_record_and_the_next_append_works(tmp_path):
    child = _python(EFBIG, str(tmp_path))
    assert child.returncode == 0, child.stdout + child.stderr
    out = json.loads(child.stdout.splitlines()[-1])
    assert out["err"] is not None and out["err"][0] == errno.EFBIG and "writing chunk" in out["err"][1]
    assert out["write_errors"] == 1
    with Spool(tmp_path) as spool:
        refs = spool.pending()
        assert [r.chunk_id for r in refs] == out["ids"]  # all three before and the one after the failure
        assert (spool.torn_bytes, spool.skipped_bytes, spool.skipped_records) == (0, 0, 0)
        assert all(spool.read(r).arrays["obs"].shape == (200, 4) for r in refs)
        assert sum(p.stat().st_size for p in tmp_path.glob("seg-*.spool")) == sum(r.size for r in refs)


KILLED = """
import json, os, signal, sys
import numpy as np
from robot_agent.spool import Spool
spool = Spool(sys.argv[1])
ids = [spool.append({"robot_id": "u1"}, {"x": np.zeros(3)}) for _ in range(3)]
episodes = [spool.next_episode() for _ in range(2)]
spool.ack(ids)  # every segment acked and deleted: no record on disk remembers the sequence
print(json.dumps({"ids": ids, "episodes": episodes}), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.timeout(120)
def test_numbers_reserved_before_a_kill_are_never_handed_out_again(tmp_path):
    child = _python(KILLED, str(tmp_path))
    assert child.returncode == -signal.SIGKILL, child.stderr
    before = json.loads(child.stdout.splitlines()[-1])
    assert not list(tmp_path.glob("seg-*.spool"))
    with Spool(tmp_path) as spool:
        new = [spool.append({"robot_id": "u1"}, {"x": np.zeros(3)}) for _ in range(3)]
        episode = spool.next_episode()
    seqs = lambda ids: [int(i.rsplit("-", 1)[1]) for i in ids]  # noqa: E731
    assert min(seqs(new)) > max(seqs(before["ids"])) and episode > max(before["episodes"])
