"""Reading a written report back as a reader sees it: the HTML page's tables and images, the Markdown's rows."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

from fleet.report.build import HTML_FILE, MARKDOWN_FILE


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.images: list[str] = []
        self.scripts = 0
        self.links: list[str] = []
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._table = a.get("id", f"table{len(self.tables)}")
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "img":
            self.images.append(a.get("src", ""))
        elif tag == "script":
            self.scripts += 1
        if tag in ("link", "script", "img", "iframe") and ("href" in a or "src" in a):
            self.links.append(a.get("href") or a.get("src") or "")

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def read_page(report_dir: Path) -> _Page:
    """index.html parsed: ``tables`` (id -> rows of cell text, header first), ``images`` (src), ``links``."""
    page = _Page()
    page.feed((report_dir / HTML_FILE).read_text(encoding="utf-8"))
    return page


def markdown_row(report_dir: Path, first_cell: str) -> list[str]:
    """The cells of report.md's table row whose first cell is ``first_cell``."""
    for line in (report_dir / MARKDOWN_FILE).read_text(encoding="utf-8").splitlines():
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f"report.md has no table row starting with {first_cell!r}")


def table_row(page: _Page, table: str, first_cell: str) -> dict[str, str]:
    """One row of an HTML table as {header: cell}."""
    header, *rows = page.tables[table]
    for row in rows:
        if row[0] == first_cell:
            return dict(zip(header, row, strict=True))
    raise AssertionError(f"table {table} has no row {first_cell!r}")
