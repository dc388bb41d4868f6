"""The report as one offline HTML page: inline CSS, no scripts, no network assets, figures by relative path."""

from __future__ import annotations

from html import escape

from fleet.report.document import Block, Code, Document, Figure, Items, Table, Text

CSS = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; border-bottom: 1px solid #ccc; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .85em; }
th, td { border: 1px solid #ccc; padding: .25em .5em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; } caption { caption-side: top; text-align: left; font-weight: 600; padding: .3em 0; }
figure { display: inline-block; vertical-align: top; margin: .5em 1em .5em 0; width: min-content; }
figure img { max-width: 95vw; border: 1px solid #eee; }  /* a percentage would make min-content 0 */
figcaption { font-size: .9em; color: #555; }
pre { background: #f6f6f6; padding: .6em; overflow-x: auto; white-space: pre-wrap; word-break: break-all; }
"""


def _block(b: Block) -> str:
    if isinstance(b, Text):
        return f"<p>{escape(b.text)}</p>"
    if isinstance(b, Items):
        return "<ul>" + "".join(f"<li>{escape(line)}</li>" for line in b.lines) + "</ul>"
    if isinstance(b, Code):
        return f"<pre><code>{escape(b.text)}</code></pre>"
    if isinstance(b, Table):
        head = "".join(f"<th>{escape(h)}</th>" for h in b.header)
        body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in b.rows)
        caption = f"<caption>{escape(b.caption)}</caption>" if b.caption else ""
        return f'<table id="{escape(b.name)}">{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    if isinstance(b, Figure):
        return (f'<figure><img src="{escape(b.file)}" alt="{escape(b.caption)}">'
                f"<figcaption>{escape(b.caption)}</figcaption></figure>")
    raise TypeError(f"not a report block: {b!r}")


def render_html(doc: Document) -> str:
    """The page."""
    parts = [f"<h1>{escape(doc.title)}</h1>"]
    for s in doc.sections:
        parts.append(f"<h2>{escape(s.title)}</h2>")
        parts += [_block(b) for b in s.blocks]
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(doc.title)}</title>'
            f"<style>{CSS}</style></head>\n<body>\n{body}\n</body></html>\n")
