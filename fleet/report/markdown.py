"""The report as Markdown (the same content as index.html; figures by relative path)."""

from __future__ import annotations

from fleet.report.document import Block, Code, Document, Figure, Items, Table, Text


def _cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _block(b: Block) -> str:
    if isinstance(b, Text):
        return b.text
    if isinstance(b, Items):
        return "\n".join(f"- {line}" for line in b.lines)
    if isinstance(b, Code):
        fence = "````" if "```" in b.text else "```"
        return f"{fence}\n{b.text}\n{fence}"
    if isinstance(b, Table):
        lines = [f"**{_cell(b.caption)}**", ""] if b.caption else []
        lines += ["| " + " | ".join(_cell(h) for h in b.header) + " |", "|" + "---|" * len(b.header)]
        lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in b.rows]
        return "\n".join(lines)
    if isinstance(b, Figure):
        return f"![{_cell(b.caption)}]({b.file})\n\n*{b.caption}*"
    raise TypeError(f"not a report block: {b!r}")


def render_markdown(doc: Document) -> str:
    """The Markdown text."""
    parts = [f"# {doc.title}"]
    for s in doc.sections:
        parts.append(f"## {s.title}")
        parts += [_block(b) for b in s.blocks]
    return "\n\n".join(parts) + "\n"
