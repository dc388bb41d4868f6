"""The report as data: sections of text, tables, figures and code, rendered alike to HTML, Markdown and W&B
(one content, three outputs, so they cannot disagree)."""

from __future__ import annotations

from dataclasses import dataclass, field

MISSING = "missing"


@dataclass
class Text:
    """A paragraph of plain text."""

    text: str


@dataclass
class Items:
    """A bulleted list of plain-text lines."""

    lines: list[str]


@dataclass
class Code:
    """A command or code line, shown verbatim."""

    text: str


@dataclass
class Table:
    """A table of display strings; ``name`` keys it in W&B."""

    name: str
    header: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass
class Figure:
    """A PNG in the report directory (``file`` is relative to it); ``name`` keys it in W&B."""

    name: str
    file: str
    caption: str


Block = Text | Items | Code | Table | Figure


@dataclass
class Section:
    """A titled part of the report."""

    title: str
    blocks: list[Block] = field(default_factory=list)


@dataclass
class Document:
    """The whole report."""

    title: str
    sections: list[Section]

    def tables(self) -> list[Table]:
        """Every table, in order."""
        return [b for s in self.sections for b in s.blocks if isinstance(b, Table)]

    def figures(self) -> list[Figure]:
        """Every figure, in order."""
        return [b for s in self.sections for b in s.blocks if isinstance(b, Figure)]


def missing(reason: str) -> str:
    """The text of a cell or item that has no figure, with why."""
    return f"{MISSING} ({reason})" if reason else MISSING
