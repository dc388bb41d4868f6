"""build_report on demo records: the page and the Markdown say what the record's episodes give, every figure
is a real PNG, and a broken or partial record gives a clear error or a shown "missing", never a fake number."""

from __future__ import annotations

import json
import math
import re
import statistics
from dataclasses import asdict

import pytest
from PIL import Image

from fleet.demo.record import RESULTS_FILE
from fleet.report import ReportError, build_report
from fleet.report.build import HTML_FILE, MARKDOWN_FILE
from fleet.report.content import build_document
from fleet.report.formatting import OUTSIDE_MARK
from fleet.report.html import render_html
from fleet.report.tables import ADAPTED_LAST_K
from tests.report.pages import markdown_row, read_page, table_row
from tests.report.records import FINAL, PRETRAINED, demo_record

NUMBER_WORDS = re.compile(r"\b(nan|inf|infinity)\b", re.IGNORECASE)


def _mean_text(values):
    return f"{statistics.mean(values):.1f} (n={len(values)})"


def test_per_unit_rows_in_page_and_markdown_say_what_the_episodes_give(tmp_path):
    record = demo_record(seed=11)
    record.save(tmp_path)
    out = build_report(tmp_path)
    assert out == tmp_path / "report"
    page = read_page(out)
    for u in record.units:
        eps = u.episodes
        want = {"zero-shot": _mean_text([e.episode_return for e in eps if e.trunk_version == PRETRAINED
                                          and e.adapter_version == 0]),
                f"adapted (last {ADAPTED_LAST_K})": _mean_text([e.episode_return for e in eps if e.trunk_version == PRETRAINED
                                                                and e.adapter_version > 0][-ADAPTED_LAST_K:]),
                "fleet-updated": _mean_text([e.episode_return for e in eps if e.trunk_version == FINAL]),
                "chunks sent": str(u.chunks_sent), "lost": str(u.chunks_lost),
                "canary": "yes" if u.canary else "no", "restarted": "yes" if u.restarted else "no"}
        row = table_row(page, "units", u.robot_id)
        assert {k: row[k] for k in want} == want
        assert markdown_row(out, u.robot_id) == list(row.values())  # the Markdown says the same
        for name in u.outside_training_range:  # marked, and only those
            assert re.search(rf"\.{name}=[^,]*{OUTSIDE_MARK}", row["reality gap"])
        assert row["reality gap"].count(OUTSIDE_MARK) == len(u.outside_training_range)


def test_sim_to_real_row_shows_each_mean_interval_and_gap_fraction(tmp_path):
    record = demo_record(seed=12, units_per_type=3)
    record.save(tmp_path)
    page = read_page(build_report(tmp_path))
    for hw in record.hardware:
        row = table_row(page, "sim_to_real", hw)
        units = [u for u in record.units if u.hardware == hw]
        zero = [statistics.mean(e.episode_return for e in u.episodes if e.adapter_version == 0) for u in units]
        fleet = [statistics.mean(e.episode_return for e in u.episodes if e.trunk_version == FINAL) for u in units]
        mean, half, n = re.fullmatch(r"(-?[\d.]+) ± ([\d.]+) \(n=(\d) units\)", row["zero-shot"]).groups()
        assert float(mean) == pytest.approx(statistics.mean(zero), abs=0.051) and n == "3"
        assert float(half) == pytest.approx(4.303 * statistics.stdev(zero) / math.sqrt(3), abs=0.06)
        sim = record.sim_oracle[hw]
        assert row["sim oracle"] == f"{sim.mean:.1f} ± {sim.ci95:.1f} (n={sim.episodes} sim episodes)"
        fraction = (statistics.mean(fleet) - statistics.mean(zero)) / (sim.mean - statistics.mean(zero))
        assert row["gap recovered (fleet-updated)"] == f"{fraction:.0%} (n=3 units)"
    assert "not a ceiling" in (tmp_path / "report" / MARKDOWN_FILE).read_text()


def test_every_figure_is_a_png_the_page_references_by_relative_path_with_no_network_asset(tmp_path):
    record = demo_record(seed=13)
    record.save(tmp_path)
    out = build_report(tmp_path, tmp_path / "elsewhere")
    page = read_page(out)
    expected = 4 + len(record.units)  # sim to real, pretraining, one per unit, learner, roll-out
    assert len(page.images) == expected and len(set(page.images)) == expected
    for src in page.images:
        assert "/" not in src and src.endswith(".png")
        with Image.open(out / src) as im:
            assert im.format == "PNG" and im.width > 100 and im.height > 100
    assert page.scripts == 0 and all(not re.match(r"\w+://", link) for link in page.links)
    md = (out / MARKDOWN_FILE).read_text()
    assert sorted(re.findall(r"\]\(([^)]+\.png)\)", md)) == sorted(page.images)
    rollout = page.tables["rollout"][1:]
    assert [r[2] for r in rollout] == [s.event for s in record.rollout]
    assert [r[0] for r in page.tables["faults"][1:]] == [f["what"] for f in record.faults]


def test_chunks_still_in_a_robots_spool_show_as_unsent_per_unit_and_in_the_total_not_as_lost(tmp_path):
    record = demo_record(seed=18)
    held = record.units[1]  # its drain ran out of time: 3 chunks still on its disk at the end
    held.chunks_unsent, held.chunks_acked, held.chunks_stored = 3, held.chunks_sent - 3, held.chunks_sent - 3
    record.save(tmp_path)
    out = build_report(tmp_path)
    page = read_page(out)
    for u in record.units:
        row = table_row(page, "units", u.robot_id)
        assert (row["unsent"], row["lost"]) == (str(u.chunks_unsent), "0")
        assert markdown_row(out, u.robot_id) == list(row.values())
    totals = ", ".join(f"{k} {sum(getattr(u, 'chunks_' + k) for u in record.units)}"
                       for k in ("sent", "acked", "stored", "lost", "unsent"))
    for text in ((out / MARKDOWN_FILE).read_text(), (out / HTML_FILE).read_text()):
        assert f"chunks: {totals}" in text
    assert "unsent 3" in totals


def _write_raw(run_dir, raw):
    (run_dir / RESULTS_FILE).write_text(json.dumps(raw))  # allow_nan: what a broken writer could leave


def test_nan_returns_and_a_missing_sim_oracle_show_as_missing_never_as_a_number(tmp_path):
    raw = asdict(demo_record(seed=14))
    for ep in raw["units"][0]["episodes"]:
        ep["episode_return"] = float("nan")  # this unit has no usable episode at all
    raw["units"][1]["episodes"][0]["episode_return"] = float("inf")
    raw["units"][1]["chunks_lost"] = "lots"
    del raw["sim_oracle"]["cartpole"]
    raw["sim_oracle"]["cartpole_long"]["mean"] = float("nan")
    raw["pretrain_curve"] = {"cartpole": [[0, float("nan"), 1.0]]}
    raw["learner_curve"], raw["rollout"], raw["faults"] = [], [], []
    _write_raw(tmp_path, raw)
    out = build_report(tmp_path)
    for text in ((out / MARKDOWN_FILE).read_text(), (out / HTML_FILE).read_text()):
        assert not NUMBER_WORDS.search(text)
    page = read_page(out)
    first = table_row(page, "units", raw["units"][0]["robot_id"])
    assert first["zero-shot"] == f"missing (no episode on trunk v{PRETRAINED} without an adapter)"
    assert first["fleet-updated"] == f"missing (no episode on the final trunk v{FINAL})"
    assert table_row(page, "units", raw["units"][1]["robot_id"])["lost"] == "missing (not a count)"
    assert table_row(page, "sim_to_real", "cartpole")["sim oracle"] == "missing (no sim oracle recorded for cartpole)"
    long = table_row(page, "sim_to_real", "cartpole_long")
    assert long["sim oracle"].startswith("missing (") and long["gap recovered (adapted)"] == "missing (no sim oracle)"
    md = (out / MARKDOWN_FILE).read_text()
    assert "sim pretraining curve: missing (the pretraining curves hold no finite" in md
    assert "fleet rounds: missing (no fleet-learn update recorded)" in md
    assert "roll-out timeline: missing (no roll-out step recorded)" in md
    assert f"{raw['units'][1]['robot_id']}: 1 episode(s) with a non-finite return" in md
    assert len(page.images) == 1 + len(raw["units"]) - 1  # the sim-to-real chart and the units with episodes


@pytest.mark.parametrize(("setup", "message"), [
    (lambda d: None, "no results.json"),
    (lambda d: (d / RESULTS_FILE).write_text("{not json"), "not a demo record"),
    (lambda d: _write_raw(d, {**asdict(demo_record()), "schema": 99}), "schema 99"),
    (lambda d: _write_raw(d, {k: v for k, v in asdict(demo_record()).items() if k != "units"}), "not a demo record"),
    (lambda d: _write_raw(d, {**asdict(demo_record()), "units": [{"robot_id": "x"}]}), "not a demo record"),
])
def test_a_run_dir_without_a_readable_record_is_refused_naming_it_and_writes_nothing(tmp_path, setup, message):
    setup(tmp_path)
    with pytest.raises(ReportError, match=message) as err:
        build_report(tmp_path)
    assert str(tmp_path) in str(err.value)
    assert not (tmp_path / "report").exists()
    with pytest.raises(ReportError, match="not a directory"):
        build_report(tmp_path / "nope")


def test_a_record_without_units_or_hardware_says_so_instead_of_drawing_empty_tables(tmp_path):
    record = demo_record(seed=15)
    record.units, record.hardware = [], []
    record.save(tmp_path)
    out = build_report(tmp_path)
    page = read_page(out)
    assert all(len(rows) > 1 for rows in page.tables.values()) and "units" not in page.tables
    md = (out / MARKDOWN_FILE).read_text()
    assert "units: missing (the record lists none)" in md
    assert "sim to real: missing (the record names no hardware type)" in md


def test_odd_values_anywhere_in_a_loadable_record_read_as_missing_and_never_crash_the_report(tmp_path):
    raw = asdict(demo_record(seed=16))
    raw.update(task=float("nan"), hardware=5, trunk_versions=[], wandb_dirs=None, learner_curve={"a": 1},
               pretrain_curve=[], faults=[{"what": None, "at_s": "soon", "extra": float("inf")}], summary_line=[1])
    unit = raw["units"][0]
    unit.update(robot_id=None, gap={"physics": {"motor_strength": float("nan")}}, canary="sometimes",
                final_trunk_version=float("nan"), outside_training_range=[float("nan"), "motor_strength"])
    unit["episodes"][0].update(trunk_version="one", adapter_version=None)
    raw["rollout"][0].update(version="x", time=None, fields=None)
    raw["sim_oracle"]["cartpole"]["episodes"] = "many"
    _write_raw(tmp_path, raw)
    out = build_report(tmp_path)
    for text in ((out / MARKDOWN_FILE).read_text(), (out / HTML_FILE).read_text()):
        assert not NUMBER_WORDS.search(text)
    page = read_page(out)
    row = table_row(page, "units", "missing (not a name)")
    assert row["reality gap"] == f"physics.motor_strength=missing (not a finite number){OUTSIDE_MARK}"
    assert row["canary"] == "missing (not a flag)" and row["final trunk / adapter"].startswith("missing (no version)")
    assert "missing (the record names no pretrained trunk version)" in row["zero-shot"]
    assert page.tables["rollout"][1][2:4] == ["published_candidate", "missing (no version)"]
    assert page.tables["faults"][1][:3] == ["missing (not a name)", "missing (not a finite number)",
                                             "missing (not a finite number)"]
    assert table_row(page, "sim_to_real", "cartpole")["sim oracle"].startswith("missing (")


def test_what_the_demo_says_of_its_outcome_phases_processes_and_problems_is_in_the_summary(tmp_path):
    # fleet-demo's newer record fields (outcome, problems, phase_times, processes), set on the record itself
    record = demo_record(seed=17)
    record.outcome = "trunk v2 promoted"
    record.problems = ["cartpole-1: sent 50, acked 49, stored 50, lost 0"]
    record.phase_times = {"pretrain": 61.5, "adapt": 120.25}
    record.processes = [{"name": "hub", "pid": 4242, "exit": 0}, {"name": "agent cartpole-0", "pid": 4243, "exit": -9}]
    (tmp_path / "report").mkdir()
    doc = build_document(record, tmp_path, tmp_path / "report", "not logged")
    (tmp_path / "report" / HTML_FILE).write_text(render_html(doc))
    page = read_page(tmp_path / "report")
    assert page.tables["phases"][1:] == [["pretrain", "61.5"], ["adapt", "120.2"]]
    assert page.tables["processes"][1:] == [["hub", "4242", "0"], ["agent cartpole-0", "4243", "-9"]]
    text = (tmp_path / "report" / HTML_FILE).read_text()
    assert "outcome: trunk v2 promoted" in text and record.problems[0] in text
