"""The demo's chunk accounting from sequence numbers: a restart's skipped block is not a loss, a hole is."""

from __future__ import annotations

from fleet.demo.collect import chunks_written, spool_pending, unit_record
from fleet.demo.units import Unit

UNIT = Unit("unit-3", "cartpole_long", 1003, {}, [], False)


def test_a_restarted_spool_skips_the_rest_of_its_block_without_a_loss():
    before, after = list(range(1, 41)), list(range(1025, 1061))  # killed at 40; the next process starts at 1025
    assert chunks_written(before + after, starts=[1025]) == 76
    rec = unit_record(UNIT, [], {"ab": before + after}, [1025], {"spool_depth": 0, "trunk_version": 2}, True)
    assert (rec.chunks_sent, rec.chunks_acked, rec.chunks_stored, rec.chunks_lost) == (76, 76, 76, 0)
    assert rec.restarted and rec.final_trunk_version == 2


def test_a_chunk_missing_from_the_store_inside_a_run_is_lost():
    seqs = [s for s in range(1, 41) if s != 17] + list(range(1025, 1031))
    rec = unit_record(UNIT, [], {"ab": seqs}, [1025], {"spool_depth": 0}, True)
    assert (rec.chunks_sent, rec.chunks_stored, rec.chunks_lost) == (46, 45, 1)


def test_chunks_still_in_the_spool_at_the_end_are_sent_and_unsent_not_lost():
    rec = unit_record(UNIT, [], {"ab": list(range(1, 11))}, [], {}, False, pending={"ab": {11, 12, 13}})
    assert (rec.chunks_sent, rec.chunks_acked, rec.chunks_stored, rec.chunks_lost, rec.chunks_unsent) == (
        13, 10, 10, 0, 3)


def test_a_stored_chunk_whose_ack_the_robot_missed_counts_once_and_is_not_lost():
    rec = unit_record(UNIT, [], {"ab": list(range(1, 11))}, [], {}, False, pending={"ab": {10}})
    assert (rec.chunks_sent, rec.chunks_acked, rec.chunks_stored, rec.chunks_lost, rec.chunks_unsent) == (
        10, 9, 10, 0, 0)


def test_the_spool_files_of_a_stopped_agent_give_its_unacked_chunks(tmp_path):
    import numpy as np

    from robot_agent.spool import Spool
    from tests.fleet.chunks import agent_arrays

    rng = np.random.default_rng(0)
    with Spool(tmp_path / "spool") as spool:
        for episode in range(5):
            arrays = agent_arrays(rng, 4, episode_end=True)
            spool.append({"robot_id": "unit-3", "hardware": "cartpole", "task": "cartpole_swingup",
                          "episode": episode, "steps": 4, "episode_end": True, "trunk_version": 0,
                          "adapter_version": 0}, arrays)
        refs = spool.pending()
        spool.ack([r.chunk_id for r in refs[:2]])
        epoch = refs[0].header["spool_epoch"]
    assert spool_pending(tmp_path / "spool") == {epoch: {3, 4, 5}}
    assert spool_pending(tmp_path / "nothing") == {}


def test_a_damaged_record_in_a_stopped_spool_costs_only_itself_not_the_chunks_behind_it(tmp_path):
    import numpy as np

    from fleet.record import scan_segment
    from robot_agent.spool import Spool
    from tests.fleet.chunks import agent_arrays

    rng = np.random.default_rng(1)
    with Spool(tmp_path / "spool") as spool:
        for episode in range(5):
            spool.append({"robot_id": "unit-3", "hardware": "cartpole", "task": "cartpole_swingup",
                          "episode": episode, "steps": 4, "episode_end": True, "trunk_version": 0,
                          "adapter_version": 0}, agent_arrays(rng, 4, episode_end=True))
        epoch = spool.pending()[0].header["spool_epoch"]
    (seg,) = sorted((tmp_path / "spool").glob("seg-*.spool"))
    second = scan_segment(seg).refs[1]
    data = bytearray(seg.read_bytes())
    data[second.offset + second.size // 2] ^= 0xFF  # a flipped bit in chunk 2's payload
    seg.write_bytes(bytes(data))
    pending = spool_pending(tmp_path / "spool")  # the demo reads the stopped agent's files as they are
    with Spool(tmp_path / "spool") as reopened:  # what the agent still holds, as its restarted spool reads it
        held = {int(r.chunk_id.rsplit("-", 1)[1]) for r in reopened.pending()}
    assert held == {1, 3, 4, 5}
    assert pending == {epoch: held}
    rec = unit_record(UNIT, [], {}, [], {}, False, pending=pending)
    assert (rec.chunks_sent, rec.chunks_unsent, rec.chunks_lost) == (5, 4, 1)  # only the damaged one is lost
