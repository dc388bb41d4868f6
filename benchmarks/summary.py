"""Print every benchmark's last recorded summary line, with its commit and whether the code has changed since.

    python benchmarks/summary.py              # a plain table
    python benchmarks/summary.py --markdown   # the table BENCHMARKS.md starts with

A result is *current* when none of the code it measures (the packages, configs and its own script) has
changed between the commit it was measured at and HEAD, and *stale* otherwise: rerun it before quoting it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path
from typing import Any

from result_record import MEASURED_PATHS, ROOT  # beside this script

RESULTS = ROOT / "benchmarks" / "results"


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
    run = subprocess.run(["git", "diff", "--quiet", commit, "HEAD", "--", *paths], cwd=ROOT, capture_output=True)
    if run.returncode == 0:
        return "stale (uncommitted changes when measured)" if rec.get("dirty") else "current"
    if run.returncode == 1:
        return "stale (measured code changed since)"
    return "unknown (commit not in this clone)"


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
