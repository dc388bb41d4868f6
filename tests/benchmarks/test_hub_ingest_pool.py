"""The hub_ingest pool: the median's order-statistic interval, the sign test, and which cells it pools."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # the scripts import their neighbours
from hub_ingest_pool import is_default_hub, pool, target_cells  # noqa: E402
from seed_stats import median_interval, sign_test_above  # noqa: E402


def test_the_medians_interval_is_the_order_statistics_the_binomial_allows():
    # n = 18: P(Binom(18, 1/2) <= 4) = 4048 / 2^18 = 0.0154 <= 0.025 < P(<= 5) = 0.048: the 5th and 14th values
    median, low, high = median_interval([float(v) for v in range(18, 0, -1)])
    assert (median, low, high) == (9.5, 5.0, 14.0)
    # n = 9: P(<= 1) = 10 / 512 = 0.0195, P(<= 2) = 0.0898: the 2nd and 8th
    assert median_interval([float(v) for v in range(1, 10)]) == (5.0, 2.0, 8.0)
    # n = 5: even the extremes cover only 1 - 2 / 32 = 0.94: no 95% interval narrower than the range
    assert median_interval([3.0, 1.0, 2.0, 5.0, 4.0]) == (3.0, 1.0, 5.0)
    assert all(math.isnan(v) for v in median_interval([]))


def test_the_sign_test_counts_values_above_and_below_and_drops_ties():
    assert sign_test_above([0.6] * 7 + [0.4] * 2, 0.5) == pytest.approx(46 / 512)  # P(X >= 7), n = 9
    assert sign_test_above([0.6] * 7 + [0.4] * 2 + [0.5] * 3, 0.5) == pytest.approx(46 / 512)  # ties dropped
    assert sign_test_above([0.4] * 3, 0.5) == 1.0
    assert math.isnan(sign_test_above([0.5], 0.5))


def test_the_pool_takes_every_round_of_the_64k_curve_cells_and_meets_only_where_the_interval_clears_the_target():
    split = {"placement": "split"}
    runs = [("benchmarks/results/hub_ingest.json", {"args": split, "round_ratios": {
                "64k_curve_128": [0.6, 0.62, 0.7], "64k_plain_128": [0.2, 0.2], "4k_curve_128": [0.3, 0.3],
                "64k_curve_1_shared": [0.45, 0.55]}}),
            ("benchmarks/results/hub_ingest_64k.json", {"args": split, "round_ratios": {
                "64k_curve_128": [0.58, 0.66, 0.61, 0.64, 0.59, 0.63], "64k_curve_1_shared": [0.6, 0.4, 0.7]}})]
    cells = pool(runs, 0.5)
    assert list(cells) == ["64k_curve_128", "64k_curve_1_shared"]  # other sizes and plain text are not the target
    high = cells["64k_curve_128"]
    assert high["rounds"] == 9 and high["below_target"] == 0 and high["low"] == 0.59 and high["met"]
    assert high["sign_p"] == pytest.approx(1 / 512)
    assert high["runs"] == 2 and high["runs_above"] == 2 and high["runs_sign_p"] == pytest.approx(1 / 4)
    mixed = cells["64k_curve_1_shared"]
    assert mixed["rounds"] == 5 and mixed["below_target"] == 2 and not mixed["met"]  # its interval reaches 0.4


def test_a_run_placed_shared_has_its_bare_cells_pooled_as_shared_and_its_split_ones_as_split():
    run = {"args": {"placement": "shared"}, "round_ratios": {"64k_curve_16": [0.7], "64k_curve_16_split": [0.5],
                                                             "64k_plain_16": [0.9]}}
    assert target_cells(run) == {"64k_curve_16_shared": [0.7], "64k_curve_16": [0.5]}
    cells = pool([("x", run), ("y", {"args": {"placement": "split"}, "round_ratios": {"64k_curve_16": [0.6]}})], 0.5)
    assert cells["64k_curve_16"]["ratios"] == [0.5, 0.6] and cells["64k_curve_16_shared"]["ratios"] == [0.7]


def test_only_runs_of_the_default_hub_and_load_are_pooled():
    assert is_default_hub({"quick": False, "hub_override": [], "procs": 2, "inflight_budget_mb": 256.0,
                           "inflight_budget_chunks": 8192})
    assert not is_default_hub({"quick": True})
    assert not is_default_hub({"hub_override": ["parquet_export=false"]})
    assert not is_default_hub({"procs": 4})
    assert not is_default_hub({"inflight_budget_mb": 64.0})
    assert not is_default_hub({"inflight_budget_chunks": 1024})
    assert not is_default_hub({"dir": "/dev/shm"})  # a store on tmpfs: its fsync is nearly free


def test_committed_results_reads_every_version_newest_first_skips_deletions_and_leaves_out_the_pool(tmp_path):
    from result_record import committed_results

    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    git("init", "-q")
    for n in (1, 2):
        (results / "hub_ingest.json").write_text(json.dumps({"date": f"d{n}"}))
        (results / "hub_ingest_pool.json").write_text(json.dumps({"date": f"pool{n}"}))
        git("add", "-A")
        git("commit", "-q", "-m", f"run {n}")
    (results / "hub_ingest_64k.json").write_text(json.dumps({"date": "k1"}))
    git("add", "-A")
    git("commit", "-q", "-m", "another file")
    git("rm", "-q", "benchmarks/results/hub_ingest_64k.json")
    git("commit", "-q", "-m", "deleted")
    found = list(committed_results("benchmarks/results/hub_ingest*.json",
                                   exclude="benchmarks/results/hub_ingest_pool.json", root=tmp_path))
    assert found == [("benchmarks/results/hub_ingest.json", {"date": "d2"}),
                     ("benchmarks/results/hub_ingest.json", {"date": "d1"}),
                     ("benchmarks/results/hub_ingest_64k.json", {"date": "k1"})]  # the deletion is no version


def test_a_result_records_its_machine_and_the_pool_names_each_runs_machine_and_says_when_it_mixes_them(
        tmp_path, monkeypatch, capsys):
    import hub_ingest_pool
    from result_record import machine_facts

    facts = machine_facts()
    assert facts["cores"] == os.cpu_count() and facts["platform"]
    assert facts["probe"]["python_loop_ns"] > 0 and facts["probe"]["sha256_mb_s"] > 0
    assert hub_ingest_pool.host_of({"machine": facts}) == facts["platform"]
    assert hub_ingest_pool.host_of({}) == "unrecorded"
    assert "probe" in hub_ingest_pool.probe_of({"machine": facts}) and hub_ingest_pool.probe_of({}) == ""

    def run(platform: str, date: str) -> tuple[str, dict]:
        return ("benchmarks/results/hub_ingest_64k.json", {
            "commit": "a" * 40, "date": date, "machine": {"platform": platform}, "args": {"seconds": 3.0},
            "round_ratios": {"64k_curve_1": [0.6, 0.7, 0.8, 0.7, 0.6]}})

    out = tmp_path / "pool.json"

    def pooled(runs: list) -> str:
        monkeypatch.setattr(hub_ingest_pool, "committed_runs", lambda: runs)  # its git reading is tested above
        monkeypatch.setattr(sys, "argv", ["hub_ingest_pool.py", "--commits", "aaaaaaa", "--out", str(out)])
        hub_ingest_pool.main()
        return capsys.readouterr().out

    assert "note:" not in pooled([run("Linux-x-v1", "1"), run("Linux-x-v1", "2")])
    said = pooled([run("Linux-x-v1", "1"), run("Linux-x-v2", "2")])
    assert "note: these runs come from 2 platforms (Linux-x-v1, Linux-x-v2)" in said
    assert json.loads(out.read_text())["hosts"] == ["Linux-x-v1", "Linux-x-v2"]
