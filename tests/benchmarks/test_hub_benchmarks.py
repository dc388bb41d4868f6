"""The hub benchmarks run end to end in their --quick form and end with a summary line that parses; the fault run
loses nothing and stores nothing twice (a correctness result, not a timing)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _value(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text  # a word, e.g. hub_ingest's placement=split


def run_quick(script: str, out: Path, timeout: float, *shorter: str) -> dict[str, float | str]:
    """Run ``benchmarks/<script> --quick`` (``shorter``: flags that shorten its phases further, to keep the suite
    within its budget); the key=value pairs of its last line (which names the script)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--out", str(out), *shorter],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    name, *pairs = last.split()
    assert name == script.removesuffix(".py"), last
    fields = dict(p.split("=", 1) for p in pairs)
    assert json.loads(out.read_text())["summary_line"] == last  # what write_result recorded
    return {k: _value(v) for k, v in fields.items()}


@pytest.mark.timeout(90)
def test_hub_ingest_quick_ends_with_its_ratio_and_ack_latency(tmp_path):
    # 5 s latency case: one chunk interval at 50 Hz (250 steps), so every robot sends once at its real pace
    fields = run_quick("hub_ingest.py", tmp_path / "hub_ingest.json", 85, "--seconds", "1", "--latency-seconds", "5")
    assert fields["agents"] == 128
    assert fields["ratio_vs_raw"] > 0 and math.isfinite(fields["ratio_vs_raw"])
    assert fields["p99_ack_ms"] > 0 and math.isfinite(fields["p99_ack_ms"])
    assert fields["placement"] == "split" and fields["shared_ratio_64k_curve_16"] > 0  # both placements measured
    latency = json.loads((tmp_path / "hub_ingest.json").read_text())["latency"]
    # the hub's own commit times beside its acks: a burst of slow acks with a slow commit is the disk's
    assert latency["hub_commit_groups"] > 0 and 0 < latency["hub_commit_mean_ms"] <= latency["hub_commit_max_ms"]
    # the collector's pauses beside them, from a hub whose start-up heap is frozen (fleet/heap.py)
    assert latency["hub_gc_frozen"] > 10_000 and latency["hub_gc_max_ms"] >= 0 and "hub_gc_collections" in latency


@pytest.mark.timeout(90)
def test_hub_faults_quick_loses_no_acked_chunk_and_stores_none_twice(tmp_path):
    fields = run_quick("hub_faults.py", tmp_path / "hub_faults.json", 85, "--down-s", "2", "--slow-seconds", "3")
    assert fields["acked_lost"] == 0
    assert fields["lost"] == 0
    assert fields["duplicates"] == 0
    assert fields["peak_rss_mb"] > 0


def test_hub_ingest_ratio_is_the_median_of_each_rounds_own_ratio():
    sys.path.insert(0, str(ROOT / "benchmarks"))  # the scripts import their neighbours
    from hub_ingest import paired_ratios

    # round 2 ran while the machine was slow for both: its own ratio (0.5) is as good as the others
    runs = {"hub_64k_curve_1": [{"mbps": 300.0}, {"mbps": 100.0}, {"mbps": 320.0}],
            "raw_64k_curve_1": [{"mbps": 500.0}, {"mbps": 200.0}, {"mbps": 900.0}]}
    med = {"hub_64k_curve_1": {"mbps": 300.0}, "raw_64k_curve_1": {"mbps": 500.0}}
    ratios, per_round, of_medians = paired_ratios(runs, med)
    assert per_round["64k_curve_1"] == pytest.approx([0.6, 0.5, 320 / 900])
    assert ratios["64k_curve_1"] == pytest.approx(0.5)
    assert of_medians["64k_curve_1"] == pytest.approx(0.6)
    runs["raw_64k_curve_1"][2]["mbps"] = 0.0  # a round whose raw peer acked nothing has no ratio
    ratios, per_round, _ = paired_ratios(runs, med)
    assert per_round["64k_curve_1"] == pytest.approx([0.6, 0.5]) and ratios["64k_curve_1"] == pytest.approx(0.55)


@pytest.mark.timeout(120)
def test_hub_store_growth_arms_set_direct_io_and_dropping_as_named_and_restore_the_store(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "benchmarks"))  # the scripts import their neighbours
    import hub_store_growth

    import fleet.segments
    monkeypatch.setattr(fleet.segments.SegmentWriter.__init__, "__defaults__", (200_000,))  # full after a group of 4 chunks or more
    dropped: list[int] = []
    store_behaviour = fleet.segments.drop_cached_pages
    monkeypatch.setattr(fleet.segments, "drop_cached_pages", lambda fd: dropped.append(fd) or store_behaviour(fd))
    counting = fleet.segments.drop_cached_pages
    direct: list[bool] = []
    real_init = fleet.segments.SegmentWriter.__init__

    def recording_init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        direct.append(kwargs["direct_io"])

    monkeypatch.setattr(fleet.segments.SegmentWriter, "__init__", recording_init)
    # groups of 4 chunks (~256 KiB) each fill a segment: a writer that fell behind on a loaded machine could else
    # take all 40 chunks as one group, fill no segment before the last, and drop none
    real_writer = hub_store_growth.GroupWriter
    monkeypatch.setattr(hub_store_growth, "GroupWriter", lambda store, **kw: real_writer(store, **{**kw, "max_group": 4}))
    for arm, (want_direct, want_drop) in hub_store_growth.ARMS.items():
        dropped.clear()
        res = hub_store_growth.run_arm(arm, tmp_path, chunks=40, seed=0, slice_chunks=8)
        assert bool(dropped) == want_drop and direct[-1] == want_direct, arm
        assert len(res["slices"]) == 5 and res["late"]["wall_us"] > 0
        assert fleet.segments.drop_cached_pages is counting  # given back after the arm
    assert not any(tmp_path.iterdir())  # every arm's store deleted
