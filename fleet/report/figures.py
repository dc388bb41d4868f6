"""The report's PNG figures (matplotlib's object API on the Agg canvas: no display, no pyplot state).

Each function draws from raw record fields, leaves out points that are not finite numbers, and returns the
:class:`Figure` it wrote, or a string saying why there is nothing to draw (the report shows it as missing).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure

from fleet.demo.record import RolloutStep, UnitRecord, finite
from fleet.report.document import Figure
from fleet.report.formatting import label
from fleet.report.tables import COLUMNS, HardwareRow

DPI = 100
LABELS = {"zero_shot": "zero-shot", "adapted": "adapted", "fleet_updated": "fleet-updated"}
EVENT_STYLE = {  # roll-out event -> (marker, colour)
    "published": ("o", "tab:blue"), "published_candidate": ("o", "tab:cyan"), "sent_to_canaries": ("^", "tab:orange"),
    "canary_verdict": ("d", "tab:purple"), "promoted": ("*", "tab:green"), "rolled_back": ("X", "tab:red"),
    "rollback": ("X", "tab:red")}


def _save(fig: MplFigure, out_dir: Path, file: str, name: str, caption: str) -> Figure:
    FigureCanvasAgg(fig)
    fig.savefig(out_dir / file, dpi=DPI, bbox_inches="tight")
    return Figure(name, file, caption)


def file_stem(text: str) -> str:
    """``text`` made safe as part of a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", str(text))[:60] or "_"


def pretrain_figure(curves: Any, out_dir: Path) -> Figure | str:
    """Sim pretraining: mean return against env steps, one line per hardware type."""
    if not isinstance(curves, dict) or not curves:
        return "no pretraining curve recorded"
    fig = MplFigure(figsize=(7, 3.5))
    ax = fig.add_subplot()
    drawn = 0
    for hw, rows in sorted(curves.items()):
        pts = [(r[1], r[2]) for r in (rows if isinstance(rows, list) else [])
               if isinstance(r, list | tuple) and len(r) >= 3 and finite(r[1]) and finite(r[2])]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=str(hw))
            drawn += 1
    if not drawn:
        return "the pretraining curves hold no finite [iteration, env steps, return] row"
    ax.set(xlabel="env steps", ylabel="mean episode return", title="Sim pretraining")
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, out_dir, "pretrain.png", "pretrain", "Sim pretraining: mean return against env steps, per "
                 "hardware type")


def adapter_figure(unit: UnitRecord, index: int, pretrained: int | None, out_dir: Path) -> Figure | str:
    """One unit's episodes: return against episode index, coloured by adapter version, hollow after the trunk
    swap (a trunk other than the pretrained one), the swap marked."""
    robot = label(unit.robot_id)
    pts = [(i, e) for i, e in enumerate(unit.episodes)
           if finite(e.episode_return) and isinstance(e.adapter_version, int) and isinstance(e.trunk_version, int)]
    if not pts:
        return "no episode with a finite return"
    fig = MplFigure(figsize=(6, 3))
    ax = fig.add_subplot()
    ax.plot([i for i, _ in pts], [e.episode_return for _, e in pts], color="0.8", zorder=1)
    versions = sorted({e.adapter_version for _, e in pts})
    for k, v in enumerate(versions):
        colour = colormaps["viridis"](k / max(len(versions) - 1, 1))
        for swapped in (False, True):
            sel = [(i, e) for i, e in pts if e.adapter_version == v and (e.trunk_version != pretrained) == swapped]
            if sel:
                ax.scatter([i for i, _ in sel], [e.episode_return for _, e in sel], zorder=2, s=24,
                           facecolors="none" if swapped else [colour], edgecolors=[colour],
                           label=f"adapter v{v}" + (" (new trunk)" if swapped else ""))
    for (i0, a), (i1, b) in zip(pts, pts[1:], strict=False):
        if a.trunk_version != b.trunk_version:
            ax.axvline((i0 + i1) / 2, color="tab:red", linestyle="--")
            ax.annotate(f"trunk v{a.trunk_version}->v{b.trunk_version}", ((i0 + i1) / 2, 1), xycoords=("data", "axes fraction"),
                        fontsize=8, color="tab:red", ha="left", va="top")
    ax.set(xlabel="episode", ylabel="episode return", title=f"{robot} ({label(unit.hardware)})")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    return _save(fig, out_dir, f"adapter_{index:02d}_{file_stem(robot)}.png", f"adapter/{index:02d}_{file_stem(robot)}",
                 f"On-robot adaptation of {robot}: episode return by adapter version; the dashed line is the "
                 "trunk swap")


def _round_starts(rows: list[dict]) -> list[float]:
    """The update index where each round after the first begins (rows with a ``round`` number)."""
    starts = []
    for i in range(1, len(rows)):
        a, b = rows[i - 1].get("round"), rows[i].get("round")
        if finite(a) and finite(b) and a != b:
            starts.append(rows[i]["update"] - 0.5 if finite(rows[i].get("update")) else i - 0.5)
    return starts


def _panel(key: str) -> str:
    """The panel a learner metric goes in: each kind of loss together over hardware types and sim."""
    parts = key.split("/")
    if len(parts) >= 2 and parts[-2] == "loss":  # sim/loss/policy
        return f"{parts[-1]} loss"
    return parts[-1].replace("_", " ") if parts[-1].endswith("_loss") else key


def learner_figure(rows: Any, out_dir: Path, max_panels: int = 6) -> Figure | str:
    """Fleet rounds: fleet-learn's losses (every numeric metric when it logs none) against the update index
    (``update`` if the rows have it), one panel per kind of loss with a line per hardware type and sim, a dashed
    line where a new ``round`` starts."""
    rows = [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []
    if not rows:
        return "no fleet-learn update recorded"
    keys = sorted({k for r in rows for k, v in r.items() if k not in ("update", "round") and finite(v)})
    keys = [k for k in keys if "loss" in k] or keys
    panels: dict[str, list[str]] = {}
    for k in keys:
        panels.setdefault(_panel(k), []).append(k)
    panels = dict(list(panels.items())[:max_panels])
    if not panels:
        return "the learner curve holds no finite metric"
    fig = MplFigure(figsize=(7, 2.4 * len(panels)))
    for n, (panel, members) in enumerate(panels.items()):
        ax = fig.add_subplot(len(panels), 1, n + 1)
        for key in members:
            pts = [(r["update"] if finite(r.get("update")) else i, r[key]) for i, r in enumerate(rows)
                   if finite(r.get(key))]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=key)
        for x in _round_starts(rows):
            ax.axvline(x, color="tab:red", linestyle="--", linewidth=0.8)
        ax.set(ylabel=panel)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.axes[0].set_title("Fleet rounds (fleet-learn)")
    fig.axes[-1].set_xlabel("update")
    return _save(fig, out_dir, "learner.png", "learner", "Fleet rounds: fleet-learn's losses per update (dashed: a "
                 "new round)")


def rollout_figure(steps: list[RolloutStep], started: float, out_dir: Path) -> Figure | str:
    """The roll-out timeline: one lane per kind of step, each step at seconds since the demo started, labelled
    with its trunk version (a failed canary verdict in red)."""
    pts = [s for s in steps if finite(s.time) and isinstance(s.version, int)]
    if not pts:
        return "no roll-out step recorded"
    t0 = started if finite(started) else min(s.time for s in pts)
    lanes = list(dict.fromkeys(str(s.event) for s in pts))
    fig = MplFigure(figsize=(7, 0.6 * len(lanes) + 1.2))
    ax = fig.add_subplot()
    for s in pts:
        marker, colour = EVENT_STYLE.get(str(s.event), ("s", "0.4"))
        if isinstance(s.fields, dict) and s.fields.get("passed") is False:
            colour = "tab:red"
        y = lanes.index(str(s.event))
        ax.scatter([s.time - t0], [y], marker=marker, color=colour, s=70, zorder=2)
        ax.annotate(f"v{s.version}", (s.time - t0, y), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8)
    ax.set_yticks(range(len(lanes)), lanes)
    ax.set_ylim(-0.6, len(lanes) - 0.4)
    ax.invert_yaxis()
    ax.set(xlabel="seconds since the demo started", title="Roll-out timeline")
    ax.grid(alpha=0.3, axis="x")
    return _save(fig, out_dir, "rollout.png", "rollout", "Roll-out timeline: versions published, sent to canaries, "
                 "judged (red: failed), promoted or rolled back")


def sim_to_real_figure(rows: list[HardwareRow], out_dir: Path) -> Figure | str:
    """Per hardware type: the mean of each column with its 95% interval, and the sim oracle."""
    if not rows:
        return "no hardware type"
    fig = MplFigure(figsize=(7, 3.5))
    ax = fig.add_subplot()
    width = 0.2
    drawn = 0
    for k, col in enumerate((*COLUMNS, "sim")):
        xs, ys, errs = [], [], []
        for i, row in enumerate(rows):
            iv = row.sim if col == "sim" else row.columns[col]
            if iv is not None:
                xs.append(i + (k - 1.5) * width)
                ys.append(iv.mean)
                errs.append(iv.half_width or 0.0)
        if xs:
            ax.bar(xs, ys, width, yerr=errs, capsize=3, label="sim oracle" if col == "sim" else LABELS[col])
            drawn += 1
    if not drawn:
        return "no unit has a derived return and no sim oracle was recorded"
    ax.set_xticks(range(len(rows)), [r.hardware for r in rows])
    ax.set(ylabel="episode return", title="Sim to real (mean over units, 95% interval)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, out_dir, "sim_to_real.png", "sim_to_real", "Sim to real per hardware type: mean over units "
                 "with its 95% t interval; the sim oracle's interval is over sim episodes")
