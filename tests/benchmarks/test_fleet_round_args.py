"""fleet_round's settings: the hub's roll-out judges at the stated tolerance unless told otherwise."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

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


def test_a_second_run_in_the_same_workdir_is_refused_naming_it(tmp_path):
    from fleet_round import lock_workdir

    held = lock_workdir(tmp_path / "w")
    try:
        with pytest.raises(SystemExit, match="another run holds the workdir .*/w"):
            lock_workdir(tmp_path / "w")
        lock_workdir(tmp_path / "other").close()  # another workdir is free
    finally:
        held.close()
    lock_workdir(tmp_path / "w").close()  # free again once the first run ends


def test_the_units_run_the_fleet_adapter_preset_and_the_flags_override_it(tmp_path):
    # fleet_round.main builds AgentSettings this way; the result records the adapter settings the units ran
    from fleet_units import AgentSettings, Unit, agent_config

    def adapter(*argv):
        args = parse_args(list(argv))
        settings = AgentSettings(tmp_path / "v1", "tcp://127.0.0.1:1", None, adapter_preset=args.adapter_preset,
                                 guard_floor=args.guard_floor, learn_log_std=False if args.hold_log_std else None)
        a = agent_config(Unit("cartpole", 300), tmp_path, settings, max_episodes=1).adapter
        return (a.learn_log_std, a.guard_floor) if a.learn else ("deployed", a.explore)

    assert adapter() == (False, 0.1)  # the fleet preset: a unit in a fleet
    assert adapter("--adapter-preset", "solo") == (True, 0.0)  # the daemon's default, as the runs before 12-05
    assert adapter("--adapter-preset", "solo", "--hold-log-std") == (False, 0.0)
    assert adapter("--guard-floor", "0") == (False, 0.0)
    assert adapter("--adapter-preset", "deployed") == ("deployed", False)  # mean actions, no on-robot learning
    with pytest.raises(SystemExit):
        parse_args(["--adapter-preset", "swarm"])
