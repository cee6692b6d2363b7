"""HTML primitives of the report page: escaping, tables, cards, figures, the page skeleton and
number formatting.

Every piece of text read from files goes through `esc`, so a class name or a log line can
never become markup. The page is static: CSS is inline and images are relative file paths,
so the folder can be zipped, moved and opened from the file system.
"""

from __future__ import annotations

import html
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from meddistill import __version__
from meddistill.report import analyses

ANALYSIS_DIR = "analysis"
BANNER_COLOR = "#1d4e89"  # the tests look for this colour in a screenshot

CSS = f"""
* {{ box-sizing: border-box; }}
body {{ margin: 0; font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; color: #1b1f24;
  background: #f6f7f9; font-size: 15px; line-height: 1.45; }}
header.banner {{ background: {BANNER_COLOR}; color: #ffffff; padding: 22px 32px 18px; }}
header.banner h1 {{ margin: 0 0 4px; font-size: 28px; font-weight: 600; }}
header.banner p {{ margin: 0; opacity: 0.85; font-size: 14px; }}
main {{ padding: 8px 32px 40px; max-width: 1400px; }}
section {{ background: #ffffff; border: 1px solid #dde1e6; border-radius: 6px;
  padding: 14px 20px 18px; margin: 18px 0; }}
h2 {{ font-size: 20px; margin: 4px 0 12px; color: {BANNER_COLOR}; }}
h3 {{ font-size: 16px; margin: 16px 0 8px; }}
.cards {{ display: flex; flex-wrap: wrap; gap: 12px; }}
.card {{ border: 1px solid #dde1e6; border-left: 4px solid {BANNER_COLOR}; border-radius: 4px;
  padding: 8px 14px; min-width: 170px; background: #fbfcfd; }}
.card .label {{ font-size: 12px; color: #5b6570; text-transform: uppercase;
  letter-spacing: 0.04em; }}
.card .value {{ font-size: 20px; font-weight: 600; }}
.grids {{ display: flex; flex-wrap: wrap; gap: 14px 22px; align-items: flex-start; }}
figure {{ margin: 0; }}
figure img {{ max-width: 100%; height: auto; display: block; border: 1px solid #e3e6ea; }}
figure.grid {{ max-width: 100%; }}
figure.grid img {{ image-rendering: pixelated; }}
figure.grid figcaption {{ max-width: 210px; }}
figcaption {{ font-size: 13px; color: #3b4450; margin-top: 4px; max-width: 460px; }}
.figures {{ display: flex; flex-wrap: wrap; gap: 18px; }}
.tables {{ display: flex; flex-wrap: wrap; gap: 4px 28px; align-items: flex-start; }}
table {{ border-collapse: collapse; margin: 6px 0 12px; font-size: 14px; }}
th, td {{ border: 1px solid #d3d8de; padding: 4px 9px; text-align: center; }}
thead th {{ background: #eef2f7; }}
tbody th {{ text-align: left; font-weight: 600; background: #fafbfc; }}
tr.rule td, tr.rule th {{ border-bottom: 2px solid #8a939d; }}
p.note code {{ display: block; margin-top: 4px; color: #1b1f24; white-space: pre-wrap;
  word-break: break-all; }}
p.note {{ color: #6b4e00; background: #fff7dc; border: 1px solid #f0dc9a; padding: 6px 10px;
  border-radius: 4px; }}
details {{ margin: 6px 0; }}
summary {{ cursor: pointer; font-weight: 600; }}
pre {{ background: #f2f4f7; border: 1px solid #dde1e6; padding: 10px; overflow-x: auto;
  font-size: 12.5px; line-height: 1.35; }}
footer {{ color: #6a737d; font-size: 12px; padding: 0 32px 24px; }}
"""


def esc(value: Any) -> str:
    """Any value as HTML text, quotes included, so file contents never become markup."""
    return html.escape(str(value), quote=True)


def src_ref(folder: Path, file: Path) -> str:
    """A relative, URL-quoted reference from the page in `folder` to `file`, so the page
    still works after the folder moves."""
    rel = Path(os.path.relpath(Path(file).resolve(), Path(folder).resolve())).as_posix()
    return esc(quote(rel))


@dataclass
class Cell:
    """A table cell: text (escaped when written), bold, spanning `span` columns."""

    text: Any
    bold: bool = False
    span: int = 1


def _cell(tag: str, value: Any) -> str:
    c = value if isinstance(value, Cell) else Cell(value)
    text = esc(c.text)
    if c.bold:
        text = f"<strong>{text}</strong>"
    span = f' colspan="{c.span}"' if c.span > 1 else ""
    return f"<{tag}{span}>{text}</{tag}>"


def html_table(
    header: Sequence[Any],
    rows: Iterable[Sequence[Any]],
    *,
    table_id: str,
    caption: str | None = None,
    row_headers: bool = True,
    group_header: Sequence[Cell] | None = None,
    rules_after: Sequence[int] = (),
) -> str:
    """A <table> with a header row (and optional group row above it); the first cell of each
    body row is a <th> when row_headers."""
    out = [f'<table id="{esc(table_id)}">']
    if caption:
        out.append(f"<caption>{esc(caption)}</caption>")
    out.append("<thead>")
    if group_header:
        out.append("<tr>" + "".join(_cell("th", c) for c in group_header) + "</tr>")
    out.append("<tr>" + "".join(_cell("th", h) for h in header) + "</tr></thead><tbody>")
    for i, row in enumerate(rows):
        cells = [_cell("th" if (j == 0 and row_headers) else "td", v) for j, v in enumerate(row)]
        cls = ' class="rule"' if i in rules_after else ""
        out.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def cards(items: Sequence[tuple[str, Any]]) -> str:
    """The 'key numbers' row: one labelled card per (label, value)."""
    body = "".join(
        f'<div class="card"><div class="label">{esc(k)}</div><div class="value">{esc(v)}</div>'
        "</div>"
        for k, v in items
    )
    return f'<div class="cards" id="key-numbers">{body}</div>'


def figure(folder: Path, result: analyses.Analysis, caption: str) -> str:
    """An analysis figure with a link to the numbers it was drawn from."""
    return (
        f'<figure class="analysis"><img src="{src_ref(folder, result.png)}" alt="{esc(caption)}">'
        f'<figcaption>{esc(caption)} (numbers: <a href="{src_ref(folder, result.data)}">'
        f"{esc(result.data.name)}</a>)</figcaption></figure>"
    )


def grid_figure(folder: Path, png: Path, caption: str) -> str:
    """An image grid, drawn pixelated so small synthetic images stay sharp."""
    return (
        f'<figure class="grid"><img src="{src_ref(folder, png)}" alt="{esc(caption)}">'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def block(css_class: str, parts: Iterable[str]) -> str:
    """A flex <div> that lays out figures, grids or tables side by side."""
    return f'<div class="{css_class}">{"".join(parts)}</div>'


def note(text: str, command: str | None = None) -> str:
    """A highlighted line saying why something is missing and what to do (a command to copy,
    on its own line, when given)."""
    code = f"<code>{esc(command)}</code>" if command else ""
    return f'<p class="note">{esc(text)}{code}</p>'


def details(summary: str, text: str) -> str:
    """Long text (config, log) folded away under a summary line."""
    return f"<details><summary>{esc(summary)}</summary><pre>{esc(text)}</pre></details>"


def section(section_id: str, heading: str, parts: Sequence[str]) -> str:
    """A titled box of the page; the id lets tests and links find it."""
    return (
        f'<section id="{esc(section_id)}"><h2>{esc(heading)}</h2>' + "\n".join(parts) + "</section>"
    )


def page(title: str, subtitle: str, body: Sequence[str]) -> str:
    """The whole document: inline CSS, banner, the sections, a footer; no script at all."""
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{esc(title)}</title>",
            f"<style>{CSS}</style></head><body>",
            f'<header class="banner" id="banner"><h1>{esc(title)}</h1>'
            f"<p>{esc(subtitle)}</p></header>",
            "<main>",
            *body,
            "</main>",
            f"<footer>Made by meddistill {esc(__version__)}. A static page: it reads only files "
            "in this folder and needs no network.</footer>",
            "</body></html>",
            "",
        ]
    )


def pct(mean: Any, std: Any) -> str:
    """An accuracy fraction as '62.50 ± 2.04' percent; '-' when there is none."""
    if not isinstance(mean, int | float):
        return "-"
    return f"{100 * mean:.2f} ± {100 * (std or 0.0):.2f}"


def frac(mean: Any, std: Any) -> str:
    """An AUC as '0.800 ± 0.010'; '-' when there is none."""
    if not isinstance(mean, int | float):
        return "-"
    return f"{mean:.3f} ± {(std or 0.0):.3f}"


def duration(seconds: float) -> str:
    """12 s, 4 min 6 s, 2 h 05 min."""
    s = int(round(float(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def slug(text: str) -> str:
    """A lower-case, dash-separated id or file name part ('BloodMNIST 28' -> 'bloodmnist-28')."""
    out = "".join(ch if ch.isalnum() else "-" for ch in str(text).lower())
    return "-".join(p for p in out.split("-") if p) or "x"
