"""The samples-per-insert rate limiter: inserts and samples block and are released by the other side, with
real threads; a blocked call times out with nothing done."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from fleet.replay.config import ReplayConfig
from fleet.replay.rate_limiter import RateLimitTimeout
from fleet.replay.table import ReplayClosed, ReplayTable

WAIT_S = 60.0  # what a blocked call waits at most; a release wakes it at once
JOIN_S = 20.0  # what the test waits for a released call: less than WAIT_S, so only a wake-up returns in time


class Call(threading.Thread):
    """A blocking table call on its own thread; ``result`` is what it returned or raised."""

    def __init__(self, fn, *args: Any, **kwargs: Any):
        super().__init__(daemon=True)
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.result: Any = None
        self.start()

    def run(self) -> None:
        try:
            self.result = self.fn(*self.args, **self.kwargs)
        except Exception as exc:  # noqa: BLE001 - handed to the test
            self.result = exc

    def wait_until_blocked(self, table: ReplayTable, what: str) -> None:
        """Return once this call waits inside the table (so what follows releases it, not a late start)."""
        deadline = time.monotonic() + JOIN_S
        while table.waiting[what] == 0:
            assert self.is_alive() and time.monotonic() < deadline, f"the {what} never blocked: {self.result!r}"
            time.sleep(0.001)

    def outcome(self) -> Any:
        self.join(JOIN_S)
        assert not self.is_alive(), "the call was never woken"
        return self.result


@pytest.mark.timeout(120)
def test_sampling_waits_for_the_minimum_size_and_an_insert_releases_it():
    table = ReplayTable(ReplayConfig(min_size=3, max_items=10))
    table.insert("a")
    table.insert("b")
    with pytest.raises(RateLimitTimeout):
        table.sample(2, timeout=0.05)
    assert table.limiter.samples == 0  # the refused sample took nothing
    waiting = Call(table.sample, 2, timeout=WAIT_S)
    waiting.wait_until_blocked(table, "sample")
    table.insert("c")
    sample = waiting.outcome()
    assert not isinstance(sample, Exception), sample
    assert set(sample.items) <= {"a", "b", "c"} and table.limiter.samples == 2


@pytest.mark.timeout(120)
def test_samples_per_insert_blocks_each_side_until_the_other_moves():
    # spi 2, min size 2, error buffer 2: diff = 2 * inserts - samples must stay within [4 - 2, 4 + 2]
    table = ReplayTable(ReplayConfig(samples_per_insert=2.0, min_size=2, error_buffer=2.0, max_items=10))
    table.insert("a")
    table.insert("b")  # below the minimum size inserts are free
    table.insert("c")  # diff 6 <= 6
    with pytest.raises(RateLimitTimeout):
        table.insert("d", timeout=0.05)  # diff would be 8 > 6: the learner is behind
    assert len(table) == 3 and table.limiter.inserts == 3  # nothing of the refused insert went in

    blocked_insert = Call(table.insert, "d", timeout=WAIT_S)
    blocked_insert.wait_until_blocked(table, "insert")
    table.sample(2, timeout=WAIT_S)  # diff 6 - 2 = 4 >= 2; then the insert fits: 8 - 2 = 6
    assert blocked_insert.outcome() == 3
    table.sample(2, timeout=WAIT_S)  # 8 - 2 - 2 = 4
    table.sample(2, timeout=WAIT_S)  # 8 - 4 - 2 = 2
    with pytest.raises(RateLimitTimeout):
        table.sample(2, timeout=0.05)  # 8 - 6 - 2 = 0 < 2: the learner is ahead
    assert table.limiter.samples == 6

    blocked_sample = Call(table.sample, 2, timeout=WAIT_S)
    blocked_sample.wait_until_blocked(table, "sample")
    table.insert("e", timeout=WAIT_S)  # 10 - 6 = 4 <= 6; then the sample fits: 10 - 6 - 2 = 2
    sample = blocked_sample.outcome()
    assert not isinstance(sample, Exception), sample
    assert table.limiter.samples == 8


@pytest.mark.timeout(120)
def test_closing_the_table_releases_a_waiting_sample_with_an_error():
    table = ReplayTable(ReplayConfig(min_size=5, max_items=10))
    waiting = Call(table.sample, 1, timeout=WAIT_S)
    waiting.wait_until_blocked(table, "sample")
    table.close()
    assert isinstance(waiting.outcome(), ReplayClosed)
    with pytest.raises(ReplayClosed):
        table.insert("late", timeout=WAIT_S)


def test_a_batch_the_error_buffer_can_never_admit_is_refused_at_once():
    table = ReplayTable(ReplayConfig(samples_per_insert=2.0, min_size=2, error_buffer=2.0, max_items=10))
    with pytest.raises(ValueError, match="replay.error_buffer"):
        table.sample(4, timeout=WAIT_S)
