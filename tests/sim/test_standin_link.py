"""The shared-memory link between a stand-in unit's process and its driver."""

from __future__ import annotations

import multiprocessing as mp

import numpy as np
import pytest

from sim.standin_link import SharedUnitBlock

LAYOUT = [("joint_pos", (1, 12)), ("joint_vel", (1, 12))]


def _write_forever(name: str, stop) -> None:
    block = SharedUnitBlock(LAYOUT, 12, name=name)
    k = 0
    while not stop.is_set():
        k += 1
        block.reading.write(np.full(1 + 24, float(k)))  # every element of write k is k
    block.close()


@pytest.mark.timeout(60)
def test_reads_across_processes_are_never_torn_and_never_go_back():
    block = SharedUnitBlock(LAYOUT, 12)
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    writer = ctx.Process(target=_write_forever, args=(block.name, stop), daemon=True)
    writer.start()
    try:
        while block.reading.writes < 100:
            pass
        last = 0
        for _ in range(20000):
            value, k = block.reading.read()
            assert np.all(value == value[0]), "a torn read mixes two writes"
            assert value[0] == k >= last
            last = k
        assert last > 100
    finally:
        stop.set()
        writer.join(timeout=10)
        block.close()


def test_a_writer_stalled_mid_copy_leaves_the_previous_value_readable():
    block = SharedUnitBlock(LAYOUT, 12)
    try:
        slot = block.reading
        slot.write(np.full(25, 1.0))
        slot.write(np.full(25, 2.0))
        # the writer starts write 3 (buffer 1) and is descheduled before it finishes
        slot.header[slot.base + 1] = 2 * 3 - 1
        slot.buffers[1][:5] = 3.0
        value, k = slot.read()  # returns at once, no spinning on the stalled writer
        assert k == 2 and np.all(value == 2.0)
    finally:
        block.close()


def test_a_reading_round_trips_through_the_block():
    from hardware.state import RobotState

    block = SharedUnitBlock(LAYOUT, 12)
    try:
        state = RobotState(joint_pos=np.arange(12.0)[None], joint_vel=-np.arange(12.0)[None])
        block.publish(12.5, state)
        stamp, back = block.latest()
        assert stamp == 12.5
        np.testing.assert_array_equal(back.joint_pos, state.joint_pos)
        np.testing.assert_array_equal(back.joint_vel, state.joint_vel)
        assert back.base_quat is None
    finally:
        block.close()
