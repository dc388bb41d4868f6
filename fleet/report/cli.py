"""``fleet-eval``: ``fleet-eval report RUN_DIR [--out DIR]`` writes a demo run's report; anything else is the
policy evaluation app (sim.cli.eval_main, a Hydra app, imported only then)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_BAD_RUN_DIR = 2


def report_main(argv: list[str]) -> int:
    """``fleet-eval report``: build the report and print where it is; 2 on a bad run directory."""
    ap = argparse.ArgumentParser(prog="fleet-eval report",
                                 description="Write the sim-to-real report of a fleet-demo run directory.")
    ap.add_argument("run_dir", type=Path, help="a fleet-demo run directory (holding results.json)")
    ap.add_argument("--out", type=Path, default=None, help="report directory (default RUN_DIR/report)")
    args = ap.parse_args(argv)
    from fleet.report.build import ReportError, build_report

    try:
        out = build_report(args.run_dir, args.out)
    except ReportError as exc:
        print(f"fleet-eval report: {exc}", file=sys.stderr)
        return EXIT_BAD_RUN_DIR
    print(f"report: {out / 'index.html'} (also report.md)")
    return 0


def eval_main() -> None:
    """The console script: dispatch on the first argument."""
    if len(sys.argv) > 1 and sys.argv[1] == "report":
        sys.exit(report_main(sys.argv[2:]))
    from sim.cli import eval_main as hydra_eval_main

    hydra_eval_main()


if __name__ == "__main__":
    eval_main()
