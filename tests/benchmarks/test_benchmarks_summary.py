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



def test_a_change_in_the_demo_or_the_docs_generator_leaves_results_current_and_one_elsewhere_does_not():
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from summary import not_run_by_benchmarks

    assert not_run_by_benchmarks("configs/reference.py") and not_run_by_benchmarks("fleet/demo/config.py")
    assert not_run_by_benchmarks("fleet/report/tables.py")
    for name in ("fleet/hub.py", "configs/agent.yaml", "configs/adapter_preset/fleet.yaml", "fleet/demo_x.py",
                 "robot_agent/config.py", "fleet/rollout.py"):
        assert not not_run_by_benchmarks(name), name


def _imported_modules(path, package: str) -> set[str]:
    """Every module a Python file imports anywhere in it (inside functions too), relative imports resolved
    against ``package``; ``from a import b`` counts as both ``a`` and ``a.b``."""
    import ast

    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def test_nothing_a_benchmark_runs_imports_the_code_exempt_from_staleness():
    # summary.NOT_RUN_BY_BENCHMARKS changes no result only while no measured code imports it, in any form
    import re
    import subprocess
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from result_record import MEASURED_PATHS
    from summary import NOT_RUN_BY_BENCHMARKS, load_results, not_run_by_benchmarks

    modules = tuple(p.rstrip("/").removesuffix(".py").replace("/", ".") for p in NOT_RUN_BY_BENCHMARKS)

    def exempt(module: str) -> bool:
        return any(module == m or module.startswith(m + ".") for m in modules)

    launches = re.compile(r"""["']fleet-(demo|eval)["']""")  # their commands, started as processes
    users = []
    for top in [*MEASURED_PATHS, "benchmarks"]:
        for path in (ROOT / top).rglob("*.py") if (ROOT / top).is_dir() else []:
            name = str(path.relative_to(ROOT))
            if not_run_by_benchmarks(name):
                continue
            package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
            if any(exempt(m) for m in _imported_modules(path, package)) or launches.search(path.read_text()):
                users.append(name)
    # drivers and other classes named in configs are imported by name at run time
    users += [str(p.relative_to(ROOT)) for p in (ROOT / "configs").rglob("*.yaml")
              if any(m in p.read_text() for m in modules)]
    assert users == []
    # and at run time: every benchmark with a result, and every app a benchmark launches, imported as they run
    scripts = sorted({rec["command"].split(" ")[1] for rec in load_results()})
    probe = ("import importlib.util, sys\n"
             "sys.path.insert(0, 'benchmarks')\n"
             "for app in ('fleet.cli', 'fleet.learner_app', 'fleet.keys_cli', 'robot_agent.cli', 'sim.cli'):\n"
             "    importlib.import_module(app)\n"
             f"for path in {scripts!r}:\n"
             "    spec = importlib.util.spec_from_file_location(path.replace('/', '_')[:-3], path)\n"
             "    spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
             f"print(sorted(m for m in sys.modules if m.startswith({tuple(modules)!r})))\n")
    run = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == "[]"
    assert all((ROOT / p).exists() for p in NOT_RUN_BY_BENCHMARKS)
