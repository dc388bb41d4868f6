"""The report's index.html in a real headless browser (Debian's Chromium): every table renders rows and every
figure loads, offline; and the check itself catches a missing figure or an empty table."""

from __future__ import annotations

import re

import pytest

from fleet.report import build_report
from tests.report.browser import render_problems, rendered
from tests.report.pages import read_page
from tests.report.records import demo_record


@pytest.mark.timeout(180)
def test_chromium_renders_every_table_with_rows_and_every_figure(tmp_path):
    record = demo_record(seed=31)
    record.save(tmp_path)
    out = build_report(tmp_path)
    page = read_page(out)
    result = rendered(out, tmp_path / "profile")
    assert render_problems(result) == []
    assert {t["id"]: t["rows"] for t in result["tables"]} == {k: len(rows) - 1 for k, rows in page.tables.items()}
    assert result["tables"][0]["rows"] == len(record.units)
    assert sorted(i["src"] for i in result["images"]) == sorted(page.images) and len(page.images) >= 4


@pytest.mark.timeout(180)
def test_the_browser_check_fails_on_a_missing_figure_and_an_empty_table(tmp_path):
    demo_record(seed=32).save(tmp_path)
    out = build_report(tmp_path)
    (out / "learner.png").unlink()
    html = (out / "index.html").read_text()
    html = re.sub(r'(<table id="faults">.*?<tbody>).*?(</tbody>)', r"\1\2", html, flags=re.S)
    (out / "index.html").write_text(html)
    problems = render_problems(rendered(out, tmp_path / "profile"))
    assert problems == ["table 'faults' has no rendered row", "image 'learner.png' did not render"]
