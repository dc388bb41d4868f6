"""The report's derived numbers, from a demo record's raw episodes (fleet/demo/record.py).

Per unit, from its episodes in the order the record lists them (the order the hub stored them):

- zero-shot: mean return of its episodes on the pretrained trunk (``trunk_versions["pretrained"]``) with no
  adapter yet (adapter version 0);
- adapted: mean return of its last ``ADAPTED_LAST_K`` episodes on the pretrained trunk with an adapter
  (adapter version > 0): where on-robot adaptation got to before the fleet round;
- fleet-updated: mean return of its episodes on the final trunk (``trunk_versions["final"]``).

A cell without such episodes is *missing*, with the reason; an episode whose return is not a finite number is
left out and counted. Per hardware type: the mean over its units of each column with a 95% t interval, the sim
oracle (the sim-pretrained trunk in sim: what sim promised), and the fraction of the sim-to-real gap recovered,
``(adapted - zero_shot) / (sim - zero_shot)`` over the units that have both cells. The sim figure is not a
ceiling: a unit can beat it, so the fraction can exceed 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fleet.demo.record import DemoRecord, EpisodeRow, UnitRecord, finite
from fleet.report.stats import Interval, mean_interval

ADAPTED_LAST_K = 3  # episodes that make a unit's "adapted" return: the last K with an adapter, before the swap
COLUMNS = ("zero_shot", "adapted", "fleet_updated")


@dataclass(frozen=True)
class Cell:
    """One derived return: its value and how many episodes made it, or None with the reason it is missing."""

    value: float | None
    episodes: int = 0
    reason: str = ""


@dataclass
class UnitReturns:
    """A unit's three derived returns and what was wrong with its data."""

    zero_shot: Cell
    adapted: Cell
    fleet_updated: Cell
    problems: list[str] = field(default_factory=list)


def version(record: DemoRecord, name: str) -> int | None:
    """``record.trunk_versions[name]`` if it is a version number, else None."""
    v = record.trunk_versions.get(name) if isinstance(record.trunk_versions, dict) else None
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _mean_cell(returns: list[float], why_missing: str) -> Cell:
    if not returns:
        return Cell(None, 0, why_missing)
    return Cell(sum(returns) / len(returns), len(returns))


def unit_returns(record: DemoRecord, unit: UnitRecord) -> UnitReturns:
    """The zero-shot, adapted and fleet-updated returns of one unit (module docstring)."""
    problems: list[str] = []
    good: list[EpisodeRow] = []
    for ep in unit.episodes:
        versions_ok = all(isinstance(v, int) and not isinstance(v, bool) for v in (ep.trunk_version, ep.adapter_version))
        if versions_ok and finite(ep.episode_return):
            good.append(ep)
    if len(good) < len(unit.episodes):
        problems.append(f"{len(unit.episodes) - len(good)} episode(s) with a non-finite return or a bad version "
                        "left out")
    pre, final = version(record, "pretrained"), version(record, "final")
    if pre is None:
        none = Cell(None, 0, "the record names no pretrained trunk version")
        zero, adapted = none, none
    else:
        zero = _mean_cell([e.episode_return for e in good if e.trunk_version == pre and e.adapter_version == 0],
                          f"no episode on trunk v{pre} without an adapter")
        with_adapter = [e.episode_return for e in good if e.trunk_version == pre and e.adapter_version > 0]
        adapted = _mean_cell(with_adapter[-ADAPTED_LAST_K:], f"no episode on trunk v{pre} with an adapter")
    if final is None:
        fleet = Cell(None, 0, "the record names no final trunk version")
    elif final == pre:
        fleet = Cell(None, 0, f"no fleet-updated trunk: the final trunk is the pretrained one (v{final})")
    else:
        fleet = _mean_cell([e.episode_return for e in good if e.trunk_version == final],
                           f"no episode on the final trunk v{final}")
    return UnitReturns(zero, adapted, fleet, problems)


@dataclass
class HardwareRow:
    """One row of the sim-to-real table: a hardware type's units summarised."""

    hardware: str
    units: int
    columns: dict[str, Interval | None]  # COLUMNS -> mean over units with a 95% t interval (None: no unit has it)
    sim: Interval | None  # the sim oracle (its interval is over sim episodes); None when not recorded
    sim_reason: str
    recovered: dict[str, Cell]  # "adapted" / "fleet_updated" -> fraction of the gap recovered


def gap_recovered(pairs: list[tuple[float, float]], sim: Interval | None) -> Cell:
    """``(mean(after) - mean(zero_shot)) / (sim - mean(zero_shot))`` over units with both (zero_shot, after)."""
    if sim is None:
        return Cell(None, 0, "no sim oracle")
    if not pairs:
        return Cell(None, 0, "no unit has both returns")
    zero = sum(p[0] for p in pairs) / len(pairs)
    after = sum(p[1] for p in pairs) / len(pairs)
    if sim.mean - zero <= 0:
        return Cell(None, len(pairs), f"no gap to recover: zero-shot {zero:.1f} >= sim {sim.mean:.1f}")
    return Cell((after - zero) / (sim.mean - zero), len(pairs))


def _sim_oracle(record: DemoRecord, hardware: str) -> tuple[Interval | None, str]:
    s = record.sim_oracle.get(hardware) if isinstance(record.sim_oracle, dict) else None
    if s is None:
        return None, f"no sim oracle recorded for {hardware}"
    if not (finite(s.mean) and finite(s.ci95) and isinstance(s.episodes, int) and s.episodes > 0):
        return None, f"sim oracle for {hardware} is not a finite return over episodes"
    return Interval(float(s.mean), float(s.ci95), s.episodes), ""


def hardware_types(record: DemoRecord) -> list[str]:
    """The record's hardware types, then any a unit names that the list left out."""
    names = [h for h in record.hardware if isinstance(h, str)] if isinstance(record.hardware, list) else []
    return names + sorted({u.hardware for u in record.units if isinstance(u.hardware, str)} - set(names))


def sim_to_real(record: DemoRecord, per_unit: list[UnitReturns]) -> list[HardwareRow]:
    """The sim-to-real table: one row per hardware type (``per_unit`` in the order of ``record.units``)."""
    rows = []
    for hw in hardware_types(record):
        units = [r for u, r in zip(record.units, per_unit, strict=True) if u.hardware == hw]
        cols = {c: mean_interval([getattr(r, c).value for r in units if getattr(r, c).value is not None])
                for c in COLUMNS}
        sim, sim_reason = _sim_oracle(record, hw)
        recovered = {}
        for c in ("adapted", "fleet_updated"):
            pairs = [(r.zero_shot.value, getattr(r, c).value) for r in units
                     if r.zero_shot.value is not None and getattr(r, c).value is not None]
            recovered[c] = gap_recovered(pairs, sim)
        rows.append(HardwareRow(hw, len(units), cols, sim, sim_reason, recovered))
    return rows
