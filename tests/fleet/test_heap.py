"""The hub process's collector settings and pause timer (fleet/heap.py)."""

from __future__ import annotations

import gc

from fleet.heap import CollectorPauses


def test_collector_pauses_count_and_time_each_collection_by_generation():
    pauses = CollectorPauses()
    gc.callbacks.append(pauses)
    try:
        gc.collect(0)
        gc.collect(2)
        gc.collect(2)
    finally:
        gc.callbacks.remove(pauses)
    summary = pauses.summary()
    assert summary["collections"][0] >= 1 and summary["collections"][2] >= 2
    assert summary["max_ms"][2] > 0 and summary["total_ms"][2] >= summary["max_ms"][2]
    gc.collect(2)  # no longer listening
    assert pauses.summary()["collections"] == summary["collections"]
