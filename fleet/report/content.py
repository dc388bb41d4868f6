"""The report's content: the sections built from a demo record, its derived numbers and its figures."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fleet.demo.record import DemoRecord, finite
from fleet.report import formatting as fmt
from fleet.report import run_sections
from fleet.report.document import Document, Figure, Items, Section, Table, Text, missing
from fleet.report.figures import adapter_figure, learner_figure, pretrain_figure, sim_to_real_figure
from fleet.report.tables import (
    ADAPTED_LAST_K,
    HardwareRow,
    UnitReturns,
    hardware_types,
    sim_to_real,
    unit_returns,
    version,
)


@dataclass
class Derived:
    """Every number the report derives from the record."""

    units: list[UnitReturns]  # in the order of record.units
    hardware: list[HardwareRow]


def derive(record: DemoRecord) -> Derived:
    """The per-unit returns and the sim-to-real rows."""
    units = [unit_returns(record, u) for u in record.units]
    return Derived(units, sim_to_real(record, units))


def _figure_or_missing(made: Figure | str, what: str) -> Figure | Text:
    return made if isinstance(made, Figure) else Text(f"{what}: {missing(made)}")


def summary_section(record: DemoRecord, derived: Derived, wandb_run: str) -> Section:
    """What ran, for how long, the demo's last line, the data totals and where the W&B run is."""
    totals = {k: sum(getattr(u, k) for u in record.units if isinstance(getattr(u, k), int))
              for k in ("chunks_sent", "chunks_acked", "chunks_stored", "chunks_lost", "chunks_unsent")}
    seconds = record.finished - record.started if finite(record.finished) and finite(record.started) else None
    lines = [f"task: {fmt.label(record.task)}; hardware types: {', '.join(hardware_types(record))}; "
             f"units: {len(record.units)}",
             f"started {fmt.utc(record.started)}, ran {fmt.number(seconds, 0)} s",
             f"trunk versions: pretrained {fmt.trunk(version(record, 'pretrained'))}, final "
             f"{fmt.trunk(version(record, 'final'))}",
             "chunks: " + ", ".join(f"{k.removeprefix('chunks_')} {v}" for k, v in totals.items()),
             f"report W&B run: {wandb_run}"]
    if record.summary_line:
        lines.append(f"the demo's last line: {fmt.label(record.summary_line)}")
    outcome = getattr(record, "outcome", "")  # the fields from here on are newer than schema 1's first cut
    if outcome:
        lines.append(f"outcome: {fmt.label(outcome)}")
    problems = sum(len(u.problems) for u in derived.units)
    if problems:
        lines.append(f"data problems: {problems} (listed under the per-unit table)")
    blocks: list = [Items(lines)]
    broke = getattr(record, "problems", None)
    if isinstance(broke, list):
        blocks.append(Text("What broke, as the demo recorded it: " + ("nothing" if not broke else "")))
        if broke:
            blocks.append(Items([fmt.value(p) for p in broke]))
    phases = getattr(record, "phase_times", None)
    if isinstance(phases, dict) and phases:
        blocks.append(Table("phases", ["phase", "seconds"], [[str(k), fmt.number(v)] for k, v in phases.items()],
                            "Time per demo phase"))
    procs = getattr(record, "processes", None)
    procs = [p for p in procs if isinstance(p, dict)] if isinstance(procs, list) else []
    if procs:
        blocks.append(Table("processes", ["process", "pid", "exit code"],
                            [[fmt.value(p.get("name")), fmt.value(p.get("pid")), fmt.value(p.get("exit"))] for p in procs],
                            "Every process the demo started"))
    return Section("Summary", blocks)


def units_section(record: DemoRecord, derived: Derived) -> Section:
    """The per-unit table."""
    header = ["robot", "hardware", "reality gap", "canary", "restarted", "zero-shot", f"adapted (last {ADAPTED_LAST_K})",
              "fleet-updated", "chunks sent", "acked", "stored", "lost", "unsent", "final trunk / adapter"]
    rows = []
    for u, r in zip(record.units, derived.units, strict=True):
        rows.append([fmt.label(u.robot_id), fmt.label(u.hardware), fmt.gap_text(u.gap, u.outside_training_range),
                     fmt.yes_no(u.canary), fmt.yes_no(u.restarted), fmt.cell(r.zero_shot), fmt.cell(r.adapted),
                     fmt.cell(r.fleet_updated), fmt.count(u.chunks_sent), fmt.count(u.chunks_acked),
                     fmt.count(u.chunks_stored), fmt.count(u.chunks_lost), fmt.count(u.chunks_unsent),
                     f"{fmt.trunk(u.final_trunk_version)} / {fmt.trunk(u.final_adapter_version)}"])
    blocks = [Text(f"Returns are means over a unit's episodes (n = episodes): zero-shot on the pretrained trunk with "
                   f"no adapter; adapted over its last {ADAPTED_LAST_K} episodes on the pretrained trunk with an "
                   "adapter; fleet-updated on the final trunk. "
                   f"{fmt.OUTSIDE_MARK} marks a reality-gap parameter outside the range the trunk was trained on. "
                   "Chunks: unsent ones are still in the robot's spool at the end (on its disk, sent at its next "
                   "start), not lost; lost = sent - stored - unsent."),
              Table("units", header, rows, "Per unit") if rows else Text(f"units: {missing('the record lists none')}")]
    problems = [f"{fmt.label(u.robot_id)}: {p}" for u, r in zip(record.units, derived.units, strict=True) for p in r.problems]
    if problems:
        blocks.append(Items(problems))
    return Section("Units", blocks)


def sim_to_real_section(derived: Derived, out_dir: Path) -> Section:
    """The sim-to-real table, what its columns mean, and its bar chart."""
    header = ["hardware", "units", "zero-shot", "adapted", "fleet-updated", "sim oracle", "gap recovered (adapted)",
              "gap recovered (fleet-updated)"]
    rows = [[h.hardware, str(h.units), *(fmt.interval(h.columns[c]) for c in ("zero_shot", "adapted", "fleet_updated")),
             fmt.interval(h.sim, h.sim_reason, over="sim episodes"), fmt.fraction(h.recovered["adapted"]),
             fmt.fraction(h.recovered["fleet_updated"])] for h in derived.hardware]
    return Section("Sim to real", [
        Text("Mean over a hardware type's units with a 95% Student-t interval (n = units). The sim oracle is the "
             "sim-pretrained trunk run in sim on that hardware type: what sim promised (its interval is over sim "
             "episodes). Gap recovered = (adapted - zero-shot) / (sim oracle - zero-shot), and likewise for "
             "fleet-updated, over the units that have both returns. The sim figure is not a ceiling: a unit can "
             "beat it, so the fraction can exceed 100%."),
        Table("sim_to_real", header, rows, "Sim to real per hardware type") if rows
        else Text(f"sim to real: {missing('the record names no hardware type')}"),
        _figure_or_missing(sim_to_real_figure(derived.hardware, out_dir), "sim-to-real chart")])


def curves_section(record: DemoRecord, out_dir: Path) -> Section:
    """Sim pretraining, each unit's adaptation, and the fleet rounds."""
    blocks = [_figure_or_missing(pretrain_figure(record.pretrain_curve, out_dir), "sim pretraining curve")]
    pre = version(record, "pretrained")
    blocks += [_figure_or_missing(adapter_figure(u, i, pre, out_dir), f"adaptation of {fmt.label(u.robot_id)}")
               for i, u in enumerate(record.units)]
    blocks.append(_figure_or_missing(learner_figure(record.learner_curve, out_dir), "fleet rounds"))
    return Section("Learning curves", blocks)


def build_document(record: DemoRecord, run_dir: Path, out_dir: Path, wandb_run: str) -> Document:
    """The whole report (figures are written into ``out_dir`` as it is built)."""
    derived = derive(record)
    return Document(f"Fleet demo report: {fmt.label(record.task)}", [
        summary_section(record, derived, wandb_run), units_section(record, derived),
        sim_to_real_section(derived, out_dir), curves_section(record, out_dir),
        run_sections.rollout_section(record, out_dir), run_sections.faults_section(record),
        run_sections.data_section(record, run_dir), run_sections.wandb_section(record, run_dir, wandb_run)])
