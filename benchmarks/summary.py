"""Print every benchmark's last recorded summary line, with its commit and whether the code has changed since.

    python benchmarks/summary.py              # a plain table
    python benchmarks/summary.py --markdown   # the table BENCHMARKS.md starts with

A result is *current* when none of the code it measures (the packages, configs and its own script) has
changed between the commit it was measured at and HEAD, and *stale* otherwise: rerun it before quoting it.
A file added since does not count (the measured code cannot have used it); a Python file whose syntax tree is the same once docstrings are set aside (only comments, docstrings or
layout changed) has not changed what runs; any other change, in any file, counts, except in the docs generator
and the demo app, which no benchmark runs (``NOT_RUN_BY_BENCHMARKS``).
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
from pathlib import Path
from typing import Any

from result_record import MEASURED_PATHS, ROOT  # beside this script

RESULTS = ROOT / "benchmarks" / "results"
# inside the measured paths but run by no benchmark: the docs generator (writes docs/config.md), the demo app
# and its report (fleet-demo, fleet-eval report). A change there leaves every result as current as it was; a
# test pins that nothing outside them imports them and that no benchmark launches their commands.
NOT_RUN_BY_BENCHMARKS = ("configs/reference.py", "fleet/demo/", "fleet/report/")


def not_run_by_benchmarks(name: str) -> bool:
    """Whether the repository path ``name`` lies in :data:`NOT_RUN_BY_BENCHMARKS`."""
    return any(name == p or (p.endswith("/") and name.startswith(p)) for p in NOT_RUN_BY_BENCHMARKS)


def load_results(directory: Path = RESULTS) -> list[dict[str, Any]]:
    """Every result file's record, by file name."""
    rows = []
    for path in sorted(directory.glob("*.json")):
        rec = json.loads(path.read_text())
        rec["file"] = path.name
        rows.append(rec)
    return rows


def freshness(rec: dict[str, Any]) -> str:
    """'current', 'stale (...)' or 'unknown (...)' for one result record."""
    commit = rec.get("commit")
    if not commit:
        return "unknown (no commit recorded)"
    script = rec.get("command", "").split(" ")[1:2]
    paths = [*MEASURED_PATHS, *script]
    # files added since cannot have run at the commit: a change that makes old code use one shows elsewhere
    run = subprocess.run(["git", "diff", "--name-only", "--diff-filter=a", commit, "HEAD", "--", *paths], cwd=ROOT,
                         capture_output=True, text=True)
    if run.returncode != 0:
        return "unknown (commit not in this clone)"
    changed = [name for name in run.stdout.split() if not not_run_by_benchmarks(name) and not _same_code(commit, name)]
    if changed:
        return f"stale (changed since: {', '.join(changed[:2])}{' ...' if len(changed) > 2 else ''})"
    return "stale (uncommitted changes when measured)" if rec.get("dirty") else "current"


def _code(source: str | None) -> str | None:
    """A Python source's syntax tree without docstrings, as text (None if absent or not Python)."""
    if source is None:
        return None
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


def _same_code(commit: str, name: str) -> bool:
    """Whether ``name`` runs the same at ``commit`` and HEAD (a .py file: the same syntax tree)."""
    if not name.endswith(".py"):
        return False

    def show(rev: str) -> str | None:
        out = subprocess.run(["git", "show", f"{rev}:{name}"], cwd=ROOT, capture_output=True, text=True)
        return out.stdout if out.returncode == 0 else None

    old, new = _code(show(commit)), _code(show("HEAD"))
    return old is not None and old == new

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    rows = load_results()
    if args.markdown:
        print("| result file | summary line | measured | commit | at HEAD |")
        print("|---|---|---|---|---|")
    for rec in rows:
        line = rec.get("summary_line", "(no summary line recorded)")
        commit = (rec.get("commit") or "?")[:7]
        date = rec.get("date", "?")[:16].replace("T", " ")
        if args.markdown:
            print(f"| `{rec['file']}` | `{line}` | {date} | {commit} | {freshness(rec)} |")
        else:
            print(f"{rec['file']:28s} {date} {commit} {freshness(rec):40s} {line}")


if __name__ == "__main__":
    main()
