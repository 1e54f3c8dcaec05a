"""Render the run report as one self-contained HTML file.

Images are inlined as base64 ``data:`` URIs and the CSS is inline, so ``report.html`` can be
mailed, attached to a tracker or opened from an archive without the PNGs beside it.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1200px;
color:#222;padding:0 16px}
h1{margin-bottom:4px}h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
.sub{color:#666;margin-top:0}
table{border-collapse:collapse;margin:8px 0 16px;font-size:14px}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}
tr.stack td{background:#fff3f3;font-weight:600}
td.best{text-decoration:underline}
figure{margin:16px 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:13px}
.note{color:#8a6d3b;background:#fcf8e3;border:1px solid #faebcc;padding:6px 10px;border-radius:4px}
pre{background:#f7f7f7;padding:8px;overflow:auto;font-size:12px}
"""


@dataclass
class FigureSection:
    """One figure of the report: PNG bytes when it could be drawn, else a note saying why not."""

    key: str
    title: str
    caption: str
    png: bytes | None = None
    note: str | None = None


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def fmt(value: Any, digits: int = 4) -> str:
    """Format numbers for tables: floats rounded, None/NaN as an em dash."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return "—" if value != value else f"{value:.{digits}f}"
    return str(value)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, left: int = 1,
          row_classes: Sequence[str] | None = None, best_cols: Sequence[int] = ()) -> str:
    """An HTML table; the first ``left`` columns are left-aligned text, the rest numbers.

    ``best_cols``: column indexes whose maximum numeric value gets underlined.
    """
    rows = [list(r) for r in rows]
    best = {}
    for c in best_cols:
        values = [r[c] for r in rows if isinstance(r[c], (int, float)) and r[c] == r[c]]
        if values:
            best[c] = max(values)
    head = "".join(f'<th class="{"l" if i < left else ""}">{esc(h)}</th>' for i, h in enumerate(headers))
    body = []
    for k, row in enumerate(rows):
        cls = f' class="{row_classes[k]}"' if row_classes and row_classes[k] else ""
        cells = []
        for i, value in enumerate(row):
            classes = ["l"] if i < left else []
            if i in best and value == best[i]:
                classes.append("best")
            attr = f' class="{" ".join(classes)}"' if classes else ""
            cells.append(f"<td{attr}>{esc(fmt(value))}</td>")
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def key_values(pairs: Mapping[str, Any]) -> str:
    return table(["key", "value"], ([k, v if not isinstance(v, (dict, list)) else json.dumps(v)] for k, v in pairs.items()),
                 left=2)


def figure(section: FigureSection) -> str:
    if section.png is None:
        return f'<h3>{esc(section.title)}</h3><p class="note">Not drawn: {esc(section.note)}</p>'
    data = base64.b64encode(section.png).decode("ascii")
    return (f'<figure id="fig-{esc(section.key)}"><h3>{esc(section.title)}</h3>'
            f'<img alt="{esc(section.title)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{esc(section.caption)}</figcaption></figure>")


def page(title: str, subtitle: str, sections: Sequence[tuple[str, str]], warnings: Sequence[str] = ()) -> str:
    """Assemble the document from (heading, inner HTML) pairs."""
    parts = [f"<h1>{esc(title)}</h1>", f'<p class="sub">{esc(subtitle)}</p>']
    if warnings:
        items = "".join(f"<li>{esc(w)}</li>" for w in warnings)
        parts.append(f'<div class="note"><b>Problems found while reading the run:</b><ul>{items}</ul></div>')
    for heading, inner in sections:
        parts.append(f"<section><h2>{esc(heading)}</h2>{inner}</section>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{esc(title)}</title>"
            f"<style>{_CSS}</style></head><body>{''.join(parts)}</body></html>\n")
