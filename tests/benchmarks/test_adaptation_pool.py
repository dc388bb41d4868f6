"""Pooling adaptation runs over learning seeds: per-unit means, and only runs of one measurement."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # the scripts import their neighbours
from adaptation_pool import pool  # noqa: E402

ARGS = {"types": ["cartpole"], "units": 2, "first_unit": 200, "steps": 20000, "steps_per_update": 1000,
        "no_guard": False, "guard_episodes": 4, "guard_floor": 0.0, "hold_log_std": False, "eval_episodes": 30,
        "pretrain_iterations": 150}


def _run(seed: int, gaps: list[float], changes: list[float], commit: str = "abc", first: int = 200, **args) -> dict:
    rows = [{"hardware": "cartpole", "unit_seed": first + i, "gap_recovered": g, "change": c, "oracle_is_ceiling": True}
            for i, (g, c) in enumerate(zip(gaps, changes, strict=True))]
    return {"commit": commit, "dirty": False, "args": {**ARGS, "learn_seed": seed, **args}, "rows": rows}


def test_each_unit_is_averaged_over_the_seeds_before_the_interval_over_units():
    p = pool([_run(1, [0.2, 1.0], [10.0, -4.0]), _run(2, [0.6, 0.8], [30.0, 2.0])])
    assert [u["gap_recovered"] for u in p["units"]] == pytest.approx([0.4, 0.9])
    assert p["ci95"] == pytest.approx(12.71 * 0.5 / 2 ** 0.5 / 2 ** 0.5)  # t(1 dof) * sd / sqrt(2), sd of [0.4, 0.9]
    assert p["gap_recovered"] == pytest.approx(0.65) and p["per_seed"] == pytest.approx([0.6, 0.7])
    assert p["worst_unit"] == "cartpole-201" and p["worst_change"] == pytest.approx(-1.0)
    assert p["units_worse"] == 1 and p["unit_runs_worse"] == 1


def test_runs_that_are_not_draws_of_one_measurement_are_refused_naming_what_differs():
    with pytest.raises(ValueError, match="args.guard_floor"):
        pool([_run(1, [0.2], [1.0]), _run(2, [0.2], [1.0], guard_floor=0.1)])
    with pytest.raises(ValueError, match="learn seeds repeat"):
        pool([_run(1, [0.2], [1.0]), _run(1, [0.2], [1.0])])
    with pytest.raises(ValueError, match="at least two"):
        pool([_run(1, [0.2], [1.0])])


def test_a_unit_whose_oracle_is_no_ceiling_in_any_run_is_left_out_of_the_gap_recovered():
    a, b = _run(1, [0.2, 1.0, 0.5], [1.0, 1.0, 1.0]), _run(2, [0.6, 0.8, 0.5], [1.0, 1.0, 1.0])
    b["rows"][2]["oracle_is_ceiling"], b["rows"][2]["gap_recovered"] = False, float("nan")
    a["rows"][2]["change"] = b["rows"][2]["change"] = -5.0  # adaptation made it worse: that still counts
    p = pool([a, b])
    assert p["oracle_not_ceiling"] == ["cartpole-202"] and len(p["units"]) == 2
    assert p["gap_recovered"] == pytest.approx(0.65)
    assert p["worst_unit"] == "cartpole-202" and p["units_worse"] == 1 and p["unit_runs_worse"] == 2


def test_runs_of_other_code_other_units_or_a_dirty_tree_are_refused():
    with pytest.raises(ValueError, match="not the same code"):
        pool([_run(1, [0.2], [1.0]), _run(2, [0.2], [1.0], commit="def")])
    with pytest.raises(ValueError, match="different units"):
        pool([_run(1, [0.2], [1.0]), _run(2, [0.2], [1.0], first=300)])
    dirty = _run(2, [0.2], [1.0])
    dirty["dirty"] = True
    with pytest.raises(ValueError, match="dirty"):
        pool([_run(1, [0.2], [1.0]), dirty])
