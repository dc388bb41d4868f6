"""How derived numbers and raw record values read in the report's tables (a value that is not a finite number
reads as missing, never as a figure)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fleet.demo.record import finite
from fleet.report.document import missing
from fleet.report.stats import Interval
from fleet.report.tables import Cell

OUTSIDE_MARK = "†"  # a reality-gap parameter outside the range the trunk was trained on


def number(v: Any, digits: int = 1) -> str:
    """A finite number with ``digits`` decimals, else missing."""
    return f"{v:.{digits}f}" if finite(v) else missing("not a finite number")


def count(v: Any) -> str:
    """A non-negative integer count, else missing."""
    return str(v) if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else missing("not a count")


def label(v: Any) -> str:
    """A name or text from the record (a string or an integer); anything else reads as missing."""
    return v if isinstance(v, str) else str(v) if isinstance(v, int) and not isinstance(v, bool) else \
        missing("not a name")


def trunk(v: Any) -> str:
    """A version number as ``vN``, else missing."""
    return f"v{v}" if isinstance(v, int) and not isinstance(v, bool) else missing("no version")


def value(v: Any) -> str:
    """Any JSON value from the record, with numbers that are not finite shown as missing."""
    if isinstance(v, float) and not finite(v):
        return missing("not a finite number")
    if isinstance(v, list | tuple):
        return "[" + ", ".join(value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {value(x)}" for k, x in v.items()) + "}"
    return str(v)


def utc(t: Any) -> str:
    """A Unix time as UTC clock time, else missing."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if finite(t) else missing("no time")


def cell(c: Cell) -> str:
    """A unit's derived return: the value and its episode count, or missing with the reason."""
    return f"{c.value:.1f} (n={c.episodes})" if c.value is not None else missing(c.reason)


def interval(iv: Interval | None, reason: str = "no unit has it", over: str = "units") -> str:
    """Mean +- 95% half-width (n), or the mean alone when n = 1."""
    if iv is None:
        return missing(reason)
    if iv.half_width is None:
        return f"{iv.mean:.1f} (n=1 {over.rstrip('s')}, no interval)"
    return f"{iv.mean:.1f} ± {iv.half_width:.1f} (n={iv.n} {over})"


def fraction(c: Cell) -> str:
    """A fraction of the gap recovered as a percentage, or missing with the reason."""
    return f"{c.value:.0%} (n={c.episodes} units)" if c.value is not None else missing(c.reason)


def _flat(gap: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if not isinstance(gap, dict):
        return [(prefix or "gap", gap)]
    out: list[tuple[str, Any]] = []
    for k, v in gap.items():
        out += _flat(v, f"{prefix}{k}.") if isinstance(v, dict) else [(f"{prefix}{k}", v)]
    return out


def gap_text(gap: Any, outside: Any) -> str:
    """A unit's reality-gap parameters as ``name=value`` pairs, those outside the training range marked."""
    names = [o for o in outside if isinstance(o, str)] if isinstance(outside, list) else []
    parts, seen = [], set()
    for key, v in _flat(gap):
        out = [o for o in names if key == o or key.endswith("." + o)]
        seen.update(out)
        parts.append(f"{key}={value(v)}{OUTSIDE_MARK if out else ''}")
    parts += [f"{o}{OUTSIDE_MARK}" for o in names if o not in seen]  # named outside but not in the gap given
    return ", ".join(parts) or "none"


def yes_no(v: Any) -> str:
    """A flag as yes / no (missing when the record holds something else)."""
    return ("yes" if v else "no") if isinstance(v, bool) else missing("not a flag")
