"""fleet_round's settings: the hub's roll-out judges at the stated tolerance unless told otherwise."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # the scripts import their neighbours
from fleet_round import parse_args  # noqa: E402


def test_the_hubs_roll_out_tolerance_defaults_to_the_stated_tolerance():
    assert parse_args([]).canary_tolerance == 0.10
    assert parse_args(["--tolerance", "0.05"]).canary_tolerance == 0.05


def test_an_explicit_roll_out_tolerance_wins_and_the_smoke_run_keeps_its_own():
    assert parse_args(["--canary-tolerance", "0.25"]).canary_tolerance == 0.25
    assert parse_args(["--quick"]).canary_tolerance == 0.99  # one canary episode: the smoke run must promote
    # --quick sets every setting it names, an explicit one too (its help says so)
    assert parse_args(["--quick", "--canary-tolerance", "0.25"]).canary_tolerance == 0.99
