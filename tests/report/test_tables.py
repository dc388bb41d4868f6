"""The report's derived numbers, computed here from the raw episodes a record holds and compared with what
fleet.report.tables derives: per-unit returns, 95% t intervals over units, and the fraction of the gap recovered."""

from __future__ import annotations

import math
import statistics

import pytest

from fleet.demo.record import EpisodeRow, SimReturn
from fleet.report.stats import mean_interval, t_quantile
from fleet.report.tables import ADAPTED_LAST_K, sim_to_real, unit_returns
from tests.report.records import FINAL, PRETRAINED, demo_record

T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 9: 2.262, 30: 2.042}  # Student t, two-sided 95% (printed tables)


@pytest.mark.parametrize("df", sorted(T975))
def test_t_quantile_matches_the_printed_table(df):
    assert t_quantile(0.975, df) == pytest.approx(T975[df], abs=1e-3)


def test_mean_interval_is_the_t_interval_over_values_and_has_none_for_one_value():
    values = [3.0, 7.5, 4.25, 9.0]
    iv = mean_interval(values)
    assert iv.mean == pytest.approx(statistics.mean(values))
    assert iv.half_width == pytest.approx(T975[3] * statistics.stdev(values) / 2, rel=1e-3)
    one = mean_interval([5.0])
    assert (one.mean, one.half_width, one.n) == (5.0, None, 1)
    assert mean_interval([]) is None


def _expected(unit):
    eps = [e for e in unit.episodes if math.isfinite(e.episode_return)]
    zero = [e.episode_return for e in eps if e.trunk_version == PRETRAINED and e.adapter_version == 0]
    adapted = [e.episode_return for e in eps if e.trunk_version == PRETRAINED and e.adapter_version > 0][-ADAPTED_LAST_K:]
    fleet = [e.episode_return for e in eps if e.trunk_version == FINAL]
    return [(statistics.mean(x), len(x)) if x else (None, 0) for x in (zero, adapted, fleet)]


def test_unit_returns_are_the_means_of_the_episodes_the_definitions_select():
    record = demo_record(seed=3)
    for unit in record.units:
        got = unit_returns(record, unit)
        cells = [(c.value, c.episodes) for c in (got.zero_shot, got.adapted, got.fleet_updated)]
        for (value, n), (want, want_n) in zip(cells, _expected(unit), strict=True):
            assert n == want_n and value == pytest.approx(want)
        assert got.adapted.episodes == ADAPTED_LAST_K and not got.problems


def test_non_finite_returns_are_left_out_and_counted_and_a_unit_without_episodes_is_missing_with_why():
    record = demo_record(seed=4)
    unit = record.units[0]
    unit.episodes[0].episode_return = float("nan")
    unit.episodes.append(EpisodeRow(FINAL, 9, float("inf"), 500, 0.0))
    got = unit_returns(record, unit)
    assert (got.zero_shot.value, got.zero_shot.episodes) == pytest.approx(_expected(unit)[0])
    assert got.problems == ["2 episode(s) with a non-finite return or a bad version left out"]
    unit.episodes = [e for e in unit.episodes if e.adapter_version > 0]
    got = unit_returns(record, unit)
    assert got.zero_shot.value is None and got.zero_shot.reason == f"no episode on trunk v{PRETRAINED} without an adapter"
    record.trunk_versions = {"pretrained": PRETRAINED}
    assert unit_returns(record, unit).fleet_updated.reason == "the record names no final trunk version"
    record.trunk_versions = {"pretrained": PRETRAINED, "final": PRETRAINED}
    assert "final trunk is the pretrained one" in unit_returns(record, unit).fleet_updated.reason


def test_sim_to_real_rows_are_t_intervals_over_units_and_the_gap_fraction_of_their_means():
    record = demo_record(seed=5, units_per_type=3)
    per_unit = [unit_returns(record, u) for u in record.units]
    rows = {r.hardware: r for r in sim_to_real(record, per_unit)}
    assert list(rows) == record.hardware
    for hw, row in rows.items():
        expected = [_expected(u) for u in record.units if u.hardware == hw]
        sim = record.sim_oracle[hw].mean
        for k, col in enumerate(("zero_shot", "adapted", "fleet_updated")):
            values = [e[k][0] for e in expected]
            assert row.columns[col].mean == pytest.approx(statistics.mean(values))
            assert row.columns[col].half_width == pytest.approx(T975[2] * statistics.stdev(values) / math.sqrt(3),
                                                                rel=1e-3)
            if col != "zero_shot":
                zero = statistics.mean(e[0][0] for e in expected)
                assert row.recovered[col].value == pytest.approx((statistics.mean(values) - zero) / (sim - zero))
        assert row.sim.mean == sim and row.sim.half_width == record.sim_oracle[hw].ci95


def test_a_unit_can_beat_the_sim_oracle_and_no_gap_means_no_fraction():
    record = demo_record(seed=6)
    record.sim_oracle["cartpole"] = SimReturn(80.0, 2.0, 16)  # below what the units reach after the fleet round
    record.sim_oracle["cartpole_long"] = SimReturn(-5.0, 1.0, 16)  # below zero-shot: there is no gap to recover
    rows = {r.hardware: r for r in sim_to_real(record, [unit_returns(record, u) for u in record.units])}
    assert rows["cartpole"].recovered["fleet_updated"].value > 1.0
    gone = rows["cartpole_long"].recovered["adapted"]
    assert gone.value is None and gone.reason.startswith("no gap to recover")
    del record.sim_oracle["cartpole"]
    row = sim_to_real(record, [unit_returns(record, u) for u in record.units])[0]
    assert row.sim is None and row.sim_reason == "no sim oracle recorded for cartpole"
    assert row.recovered["adapted"].reason == "no sim oracle"
