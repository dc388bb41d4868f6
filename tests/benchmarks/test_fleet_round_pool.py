"""The pool groups fleet_round runs by the v1 trunk they started from, however each result names it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # the scripts import their neighbours
from fleet_round_pool import committed_runs, refuse_mixed_adapters, v1_draws  # noqa: E402


def _run(v1_returns: dict[str, float], date: str, sha: str | None = None, pretrain_seed: int = 0) -> dict:
    pretrain = {"date": date, "key": {"iterations": 40, "seed": pretrain_seed}, **({"weights_sha256": sha} if sha else {})}
    return {"pretrain": pretrain, "fresh": {"units": {u: {"sim_only": {"mean": m}} for u, m in v1_returns.items()}}}


def test_runs_share_a_v1_by_digest_cache_date_or_identical_v1_returns():
    runs = {
        ("a000001", 0, 0): _run({"u400": 150.0}, "2026-12-01 03:00:01"),
        ("a000002", 1, 0): _run({"u1400": 140.0}, "2026-12-01 03:00:59"),  # same minute, settings: same v1
        ("a000003", 0, 0): _run({"u400": 150.0}, "2026-12-02 09:00"),  # re-cached, same weights: same returns
        ("a000004", 0, 0): _run({"u400": 171.0}, "2026-12-03 22:00", "abcdef0123456789"),  # another machine's v1
        ("a000005", 1, 0): _run({"u1400": 160.0}, "2026-12-03 22:00", "abcdef0123456789"),
        ("a000006", 0, 1): _run({"u400": 120.0}, "2026-12-03 22:30", "0123456789abcdef", 1),  # pretrain seed 1
        ("a000007", 0, 2): _run({"u400": 130.0}, "2026-12-03 22:30", pretrain_seed=2),  # same minute, other seed
    }
    labels = v1_draws(runs)
    assert labels[("a000001", 0, 0)] == labels[("a000002", 1, 0)] == labels[("a000003", 0, 0)]
    assert labels[("a000004", 0, 0)] == labels[("a000005", 1, 0)]
    assert labels[("a000004", 0, 0)].startswith("abcdef012345")
    assert len(set(labels.values())) == 4


def test_a_weights_digest_alone_joins_runs_pretrained_apart():
    runs = {("b000001", 0, 0): _run({"u400": 171.0}, "2026-12-03 22:00", "abcdef0123456789"),
            ("b000002", 1, 0): _run({"u1400": 160.0}, "2026-12-05 09:00", "abcdef0123456789")}
    labels = v1_draws(runs)
    assert labels[("b000001", 0, 0)] == labels[("b000002", 1, 0)]


def test_two_v1_trunks_pretrained_at_the_same_second_keep_their_own_labels():
    runs = {("c000001", 0, 1): _run({"u400": 120.0}, "2026-12-03 22:30:25", pretrain_seed=1),
            ("c000002", 0, 2): _run({"u400": 130.0}, "2026-12-03 22:30:25", pretrain_seed=2)}
    labels = v1_draws(runs)
    assert labels[("c000001", 0, 1)] != labels[("c000002", 0, 2)]


def test_runs_whose_v1_was_pretrained_longer_are_pooled_apart_and_no_pool_file_is_read_as_a_run(tmp_path):
    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    def result(commit: str, iterations: int | None) -> dict:
        args = {"seed": 0, "pretrain_seed": 3, **({"pretrain_iterations": iterations} if iterations else {})}
        return {"commit": commit * 40, "args": args, "fresh": {"units": {"u400": {"sim_control": {"mean": 1.0}}}}}

    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    git("init", "-q")
    (results / "fleet_round_v1seed3.json").write_text(json.dumps(result("a", None)))  # before the flag was recorded
    (results / "fleet_round_v1seed3_pretrain160.json").write_text(json.dumps(result("b", 160)))
    (results / "fleet_round_v1seed4.json").write_text(json.dumps(result("c", 40)))
    for pool in ("fleet_round_pool.json", "fleet_round_pool_pretrain160.json"):  # shaped like a run, to be sure
        (results / pool).write_text(json.dumps(result("d", 160 if "160" in pool else 40)))
    git("add", "-A")
    git("commit", "-q", "-m", "runs")
    assert sorted(committed_runs(root=tmp_path)) == [("aaaaaaa", 0, 3), ("ccccccc", 0, 3)]
    assert sorted(committed_runs(160, root=tmp_path)) == [("bbbbbbb", 0, 3)]


def test_two_runs_of_one_configuration_at_one_commit_with_other_adapter_settings_are_refused(tmp_path):
    # the same commit, seeds and v1 with another adapter preset: neither pooled together nor one silently dropped
    import pytest

    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    def result(preset: str) -> dict:
        return {"commit": "a" * 40, "args": {"seed": 0, "pretrain_seed": 3}, "adapter": {"preset": preset},
                "fresh": {"units": {"u400": {"sim_control": {"mean": 1.0}}}}}

    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    git("init", "-q")
    (results / "fleet_round_v1seed3_fleet.json").write_text(json.dumps(result("fleet")))
    (results / "fleet_round_v1seed3_fleet_again.json").write_text(json.dumps(result("fleet")))
    git("add", "-A")
    git("commit", "-q", "-m", "runs")
    assert sorted(committed_runs(root=tmp_path)) == [("aaaaaaa", 0, 3)]  # the same settings twice: one kept
    (results / "fleet_round_v1seed3_solo.json").write_text(json.dumps(result("solo")))
    git("add", "-A")
    git("commit", "-q", "-m", "another arm")
    with pytest.raises(SystemExit, match="ran different adapter settings"):
        committed_runs(root=tmp_path)


def test_a_pool_of_runs_with_different_adapter_settings_is_refused_naming_each_settings_commits():
    import pytest

    fleet, deployed = {"adapter": {"preset": "fleet"}}, {"adapter": {"preset": "deployed"}}
    refuse_mixed_adapters({("aaaaaaa", 0, 3): fleet, ("aaaaaaa", 1, 3): fleet, ("bbbbbbb", 0, 4): fleet})
    refuse_mixed_adapters({("ccccccc", 0, 3): {}, ("ddddddd", 0, 3): {}})  # runs from before the block
    with pytest.raises(SystemExit, match=r"deployed.* at bbbbbbb.*fleet.* at aaaaaaa"):
        refuse_mixed_adapters({("aaaaaaa", 0, 3): fleet, ("bbbbbbb", 0, 3): deployed})
    with pytest.raises(SystemExit, match="different adapter settings"):
        refuse_mixed_adapters({("aaaaaaa", 0, 3): fleet, ("ccccccc", 0, 3): {}})
