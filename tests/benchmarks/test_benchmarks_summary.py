"""BENCHMARKS.md's summary table is what the benchmark scripts recorded, not what someone typed."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROW = re.compile(r"^\| `(?P<file>[^`]+\.json)` \| `(?P<line>[^`]*)` \| (?P<date>[^|]+) \| (?P<commit>[^|]+) \|")


def _doc_rows() -> dict[str, tuple[str, str]]:
    rows = {}
    for text in (ROOT / "BENCHMARKS.md").read_text().splitlines():
        m = ROW.match(text)
        if m:
            rows[m["file"]] = (m["line"], m["commit"].strip())
    return rows


def test_every_result_file_has_its_recorded_summary_line_in_benchmarks_md():
    doc = _doc_rows()
    results = sorted((ROOT / "benchmarks" / "results").glob("*.json"))
    assert results, "no result files under benchmarks/results"
    for path in results:
        rec = json.loads(path.read_text())
        line = rec.get("summary_line", "(no summary line recorded)")
        assert path.name in doc, f"BENCHMARKS.md's summary table has no row for {path.name}: run benchmarks/summary.py"
        assert doc[path.name][0] == line, (
            f"BENCHMARKS.md quotes {doc[path.name][0]!r} for {path.name}, but the script recorded {line!r}")
        assert doc[path.name][1] == (rec.get("commit") or "?")[:7], f"{path.name}: commit differs from the record"


def test_benchmarks_md_quotes_no_summary_row_without_a_result_file():
    names = {p.name for p in (ROOT / "benchmarks" / "results").glob("*.json")}
    stray = set(_doc_rows()) - names
    assert not stray, f"BENCHMARKS.md quotes results that no file records: {sorted(stray)}"


def test_only_a_change_to_what_runs_makes_a_result_stale():
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from summary import _code

    base = 'def f(x):\n    """Twice x."""\n    return 2 * x  # double\n'
    assert _code(base) == _code('def f(x):\n    """Two times x, reworded."""\n    # a new comment\n    return 2 * x\n')
    assert _code(base) != _code('def f(x):\n    """Twice x."""\n    return 3 * x\n')
    assert _code("def f(:\n") is None  # not Python: counts as changed


def test_the_docs_only_files_are_imported_by_nothing_that_runs():
    # summary.DOCS_ONLY files change no result: that holds only while no measured code imports them
    import re
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from result_record import MEASURED_PATHS
    from summary import DOCS_ONLY

    modules = [name.removesuffix(".py").replace("/", ".") for name in DOCS_ONLY]
    pattern = re.compile("|".join(rf"\b{re.escape(m)}\b|from {re.escape(m.rsplit('.', 1)[0])} import "
                                  rf"(\(?[^\n]*\b)?{re.escape(m.rsplit('.', 1)[1])}\b" for m in modules))
    users = [str(path.relative_to(ROOT)) for top in [*MEASURED_PATHS, "benchmarks"] if (ROOT / top).is_dir()
             for path in (ROOT / top).rglob("*.py")
             if str(path.relative_to(ROOT)) not in DOCS_ONLY and pattern.search(path.read_text())]
    assert users == []
    assert all((ROOT / name).is_file() for name in DOCS_ONLY)
