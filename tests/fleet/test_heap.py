"""The hub process's collector settings and pause timer (fleet/heap.py)."""

from __future__ import annotations

import gc
import subprocess
import sys

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
    assert summary["collections"] is not pauses.count  # a copy: a later collection does not change it
    assert summary["collections"][0] >= 1 and summary["collections"][2] >= 2
    assert summary["max_ms"][2] > 0 and summary["total_ms"][2] >= summary["max_ms"][2]
    gc.collect(2)  # no longer listening
    assert pauses.summary()["collections"] == summary["collections"]


def test_settle_heap_freezes_start_up_raises_the_thresholds_and_listens_to_the_collector():
    # in a process of its own: it changes the whole interpreter
    code = ("import gc; from fleet.heap import GC_THRESHOLDS, settle_heap; p = settle_heap(); "
            "print(gc.get_freeze_count(), gc.get_threshold() == GC_THRESHOLDS, p in gc.callbacks)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    frozen, thresholds, listening = out.stdout.split()
    assert int(frozen) > 1000 and thresholds == "True" and listening == "True"
