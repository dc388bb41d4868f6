"""The demo's chunk accounting from sequence numbers: a restart's skipped block is not a loss, a hole is."""

from __future__ import annotations

from fleet.demo.collect import chunks_written, unit_record
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


def test_chunks_still_in_the_spool_at_the_end_are_sent_but_neither_acked_nor_stored():
    rec = unit_record(UNIT, [], {"ab": list(range(1, 11))}, [], {"spool_depth": 3}, False)
    assert (rec.chunks_sent, rec.chunks_acked, rec.chunks_stored, rec.chunks_lost) == (13, 10, 10, 3)
