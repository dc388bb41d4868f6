"""fleet-demo: the whole loop in one command (what ``make demo`` runs).

    fleet-demo                              4 stand-in units, cart-pole + a second type, ~10 min on 2 cores
    fleet-demo robots=8 agents.adapt_s=300  a bigger fleet, longer adaptation
    fleet-demo --config-name demo_locomotion

Pretrains a trunk in sim on the demo's hardware types, evaluates it in sim (what sim promised), makes the hub's
keys and enrols the units, publishes the trunk as v1, starts the hub (CURVE) and one robot agent per stand-in
unit (each its own reality gap), lets them adapt on-robot and stream, kills and restarts the hub and one agent
halfway, runs one fleet learning round whose candidate goes through the canaries to every unit, shuts everything
down cleanly, writes ``<run>/results.json`` (fleet/demo/record.py) and the report (``fleet-eval report``, a part
like the others, killed past ``report_timeout_s``). Every part is a separate process with its log in
``<run>/logs``; the terminal shows phases and live numbers (fleet/demo/progress.py).

Exit codes: 0 the loop ran and nothing was lost (also when the gate or the canaries turned the new trunk down:
the demo says so); 1 something broke (a part failed, a chunk was lost, a process was left behind, the demo's own
code failed: each is recorded, and the last line is still printed); 2 bad config.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
import traceback
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from configs import CONFIG_DIR
from fleet.demo import commands
from fleet.demo.collect import collect
from fleet.demo.config import DemoConfig, register_configs
from fleet.demo.phases import DemoRun
from fleet.demo.processes import PartFailed, ProcessGroups
from fleet.demo.progress import Progress
from fleet.demo.record import DemoRecord
from fleet.demo.units import plan_units
from fleet.report.build import HTML_FILE, REPORT_SUBDIR

register_configs()
EXIT_OK, EXIT_BROKEN, EXIT_CONFIG = 0, 1, 2
PHASES = ("pretrain in sim", "sim oracle", "keys + hub", "robot agents", "on-robot adaptation (faults halfway)",
          "fleet round + canary roll-out", "clean shutdown", "collect", "report")


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _held(*_: object) -> None:
    """A stop signal while the demo holds them: nothing to do (see hold_stop_signals)."""


def hold_stop_signals() -> None:
    """From here on SIGINT and SIGTERM do not stop the demo: nothing may cut the shutdown that stops every part,
    the collect or the report short. A handler that does nothing, not SIG_IGN: an ignored signal stays ignored in
    every process started after it (the report's W&B service would then outlive a SIGTERM), while a handler is
    reset to the default in a child when it execs."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, _held)


def _interrupt(*_: object) -> None:
    hold_stop_signals()  # once: a second Ctrl-C / SIGTERM must not cut the shutdown short
    raise KeyboardInterrupt


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the restarted hub binds the same one)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(cfg: DemoConfig, run: Path) -> dict[str, str]:
    """The parts' environment: W&B offline (unless WANDB_MODE says otherwise) into <run>/wandb."""
    env = dict(os.environ)
    if cfg.wandb:
        env.setdefault("WANDB_MODE", "offline")
        env["WANDB_DIR"] = str(run / "wandb")
        (run / "wandb").mkdir(parents=True, exist_ok=True)
    else:
        env["WANDB_MODE"] = "disabled"
    return env


def summary_line(record: DemoRecord, report: str) -> str:
    """The demo's last line."""
    acked = sum(u.chunks_acked for u in record.units)
    stored = sum(u.chunks_stored for u in record.units)
    lost = sum(u.chunks_lost for u in record.units)
    return (f"demo robots={len(record.units)} chunks_acked={acked} chunks_stored={stored} lost={lost} "
            f"trunk=v{record.trunk_versions['final']} report={report}")


def process_rows(procs: ProcessGroups) -> list[dict[str, object]]:
    """Every process the demo started, for the record: name, pid, exit code."""
    return [{"name": c.name, "pid": c.pid, "exit": c.popen.returncode} for c in procs.children]


def build_report_part(procs: ProcessGroups, run: Path, timeout_s: float) -> tuple[bool, list[str]]:
    """The report as a part of its own (``fleet-eval report``), killed past ``timeout_s``; then whatever it left
    (its W&B service) is found by its mark. Whether it was built, and what went wrong."""
    built, problems = True, []
    try:
        procs.run("report", [commands.script("fleet-eval"), "report", str(run.resolve())], timeout_s)
    except (PartFailed, OSError) as exc:
        built = False
        problems.append(f"report not built: {type(exc).__name__}: {exc}")
    return built, problems + [f"left behind: {p}" for p in procs.leftovers(grace_s=10.0)]


def run_demo(cfg: DemoConfig, run: Path, progress: Progress | None = None) -> int:
    """Run every phase in ``run``; returns the exit code (module docstring)."""
    cfg.validate()
    units = plan_units(cfg)
    run.mkdir(parents=True, exist_ok=True)
    progress = progress or Progress(every_s=cfg.progress_every_s, log=run / "demo.log")
    procs = ProcessGroups(run / "logs", child_env(cfg, run), run)
    demo = DemoRun(cfg, run, units, procs, progress, cfg.hub.port or free_port())
    started, times, problems, phase = time.time(), {}, [], PHASES[0]
    for sig in STOP_SIGNALS:  # a stopped demo still stops every part it started
        signal.signal(sig, _interrupt)
    steps = [demo.pretrain, demo.oracle, demo.hub_up, demo.agents_up, demo.adapt, demo.fleet_round]
    progress.note(f"run directory {run.resolve()} (logs in {run / 'logs'})")
    try:
        for i, step in enumerate(steps):
            phase = PHASES[i]
            progress.phase(i + 1, len(PHASES), phase)
            t = time.monotonic()
            step()
            times[phase] = round(time.monotonic() - t, 1)
    except PartFailed as exc:
        problems.append(str(exc))
        progress.note(f"ERROR: {exc}")
    except KeyboardInterrupt:
        problems.append("interrupted (SIGINT / SIGTERM): every part stopped")
        progress.note("interrupted: stopping every part")
    except Exception as exc:  # noqa: BLE001 - the demo's own failure (a bug, a file it cannot write): still stop every part, record and say it
        problems.append(f"the demo failed in phase {phase!r}: {type(exc).__name__}: {exc}")
        progress.note(f"ERROR: {problems[-1]} (traceback on stderr)")
        traceback.print_exc()
    finally:
        hold_stop_signals()
        progress.phase(7, len(PHASES), PHASES[6])
        t = time.monotonic()
        stop_problems = demo.shutdown()
        times[PHASES[6]] = round(time.monotonic() - t, 1)
        for p in stop_problems:
            progress.note(f"ERROR: {p}")
        problems += stop_problems
        progress.done("no process left" if not stop_problems else f"{len(stop_problems)} problem(s)")
    problems += demo.problems  # what broke on the way without stopping the run (a fault that did not recover)
    progress.phase(8, len(PHASES), PHASES[7])
    record = collect(run, cfg.task_name, units, demo.spool_starts, demo.sim_oracle, demo.faults, started, time.time())
    record.phase_times, record.outcome = times, demo.outcome
    record.processes = process_rows(procs)
    for u in record.units:
        if u.chunks_lost:
            problems.append(f"{u.robot_id}: sent {u.chunks_sent}, acked {u.chunks_acked}, stored {u.chunks_stored}, "
                            f"lost {u.chunks_lost}")
        if u.chunks_unsent:  # on the robot's disk, not lost: the drain ran out of time
            progress.note(f"{u.robot_id}: {u.chunks_unsent} chunks still in its spool (sent at its next start)")
    progress.note(demo.outcome or "no fleet-updated trunk (see above)")
    # the line names where the report goes, so the report (built from the saved record) quotes it as printed
    report = str((run / REPORT_SUBDIR / HTML_FILE).resolve()) if cfg.report else "(not built)"
    record.problems = problems
    record.summary_line = summary_line(record, report)
    record.save(run)
    progress.done(f"{run / 'results.json'}")
    if cfg.report:
        progress.phase(9, len(PHASES), PHASES[8])
        built, report_problems = build_report_part(procs, run, cfg.report_timeout_s)
        report = report if built else "(not built)"  # the run's record is saved: `fleet-eval report` can try again
        problems += report_problems
        record.processes = process_rows(procs)
        record.summary_line = summary_line(record, report)
        record.save(run)
        progress.done(report)
    for p in problems:
        progress.note(f"ERROR: {p}")
    progress.note("phase times: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()))
    print(record.summary_line, flush=True)
    return EXIT_BROKEN if problems else EXIT_OK


def demo_config(dcfg: DictConfig) -> tuple[DemoConfig, Path]:
    """The typed config and the run directory from a composed config."""
    cfg = OmegaConf.to_object(dcfg)
    assert isinstance(cfg, DemoConfig)
    return cfg, Path(cfg.run_dir)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="demo")
def demo_main(dcfg: DictConfig) -> None:
    """fleet-demo (module docstring)."""
    try:
        cfg, run = demo_config(dcfg)
        cfg.validate()
        plan_units(cfg)  # a config error found while planning (e.g. a type without a reality gap)
    except ValueError as exc:
        print(f"fleet-demo: {exc}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    sys.exit(run_demo(cfg, run))


if __name__ == "__main__":
    demo_main()
