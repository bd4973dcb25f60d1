"""HTML pieces for the report page and `workbench compare --html`: one self-contained document.

Everything is inline: the style sheet, figures as base64 PNG `<img>` data URIs, no script, no font, no
link outside the page. Every text that comes from a run (method names, problems, responses, recipe values)
passes through `esc` once, where it is placed.
"""

from __future__ import annotations

import base64
import html
import math
import re
from pathlib import Path

CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2329; margin: 0;
       background: #fff; }
header, main, footer { max-width: 1180px; margin: 0 auto; padding: 0 20px; }
header { padding-top: 18px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 30px 0 8px; padding-top: 6px; border-top: 2px solid #e4e8ec; }
h3 { font-size: 15px; margin: 18px 0 6px; }
nav a { margin-right: 14px; color: #1f5fa8; text-decoration: none; }
.meta { color: #56616b; font-size: 13px; margin: 2px 0 10px; }
.caption { color: #39434d; margin: 6px 0; }
table { border-collapse: collapse; margin: 6px 0 14px; font-size: 14px; }
th, td { border: 1px solid #d7dde3; padding: 3px 8px; vertical-align: top; }
th { background: #f1f4f7; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.ci { color: #6b7680; font-size: 12px; }
.sig { color: #b3261e; font-weight: 600; }
.note { color: #56616b; font-size: 13px; }
figure { margin: 8px 0 16px; }
figure img { max-width: 100%; height: auto; border: 1px solid #e4e8ec; }
figcaption { color: #56616b; font-size: 13px; }
pre { background: #f6f8fa; border: 1px solid #e4e8ec; padding: 8px; white-space: pre-wrap;
      word-break: break-word; font-size: 12.5px; max-height: 320px; overflow: auto; margin: 4px 0 10px; }
details summary { cursor: pointer; color: #1f5fa8; margin: 4px 0; }
code { background: #f1f4f7; padding: 0 3px; }
"""

CELL = re.compile(r"^(?P<v>[-+]?\d+(?:\.\d+)?)(?: \[(?P<lo>[^\]]+)\])?(?P<sig> \*)?(?P<dag> †)?$")
BOLD = re.compile(r"^\*\*(?P<b>[^*]+)\*\*(?P<rest>.*)$")
NUMERIC = re.compile(r"[-+*\d.,\[\]/()% e†]+")


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def inline_md(text: str) -> str:
    """`**bold**` and `code` of one markdown line, the rest escaped."""
    out = esc(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", out)


def _unbold(text: str) -> tuple[str, bool]:
    m = BOLD.match(text.strip())
    return (m["b"] + m["rest"], True) if m else (text.strip(), False)


def cell_html(text: str) -> str:
    """A table cell: `42.08 [39.2, 45.1] *` becomes the value, a grey interval and a red mark."""
    plain, bold = _unbold(text)
    m = CELL.match(plain)
    if not m:
        return inline_md(text.strip())
    out = f"<strong>{esc(m['v'])}</strong>" if bold else esc(m["v"])
    if m["lo"]:
        out += f' <span class="ci">[{esc(m["lo"])}]</span>'
    if m["sig"]:
        out += ' <span class="sig" title="differs significantly from the reference">*</span>'
    if m["dag"]:
        out += ' <span class="note" title="over the shared problems only">†</span>'
    return out


def _numeric(text: str) -> bool:
    plain = _unbold(text)[0]
    return bool(NUMERIC.fullmatch(plain)) and any(c.isdigit() for c in plain)


def table(header: list[str], rows: list[list], raw: bool = False) -> str:
    """An HTML table; numbers right-aligned. `raw`: the cells are already HTML."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for value in row:
            text = str(value)
            cls = ' class="num"' if _numeric(text) else ""
            cells.append(f"<td{cls}>{text if raw else cell_html(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def markdown(text: str) -> str:
    """The markdown our reports write (bold title lines, pipe tables, `- ` lists, paragraphs) as HTML."""
    out = []
    for block in re.split(r"\n\s*\n", text.strip()):
        lines = [line for line in block.splitlines() if line.strip()]
        if lines and all(line.lstrip().startswith("|") for line in lines):
            split = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
            rows = [r for r in split[1:] if not all(set(c) <= set("-: ") for c in r)]
            out.append(table(split[0], rows))
        elif lines and any(line.startswith("- ") for line in lines) and \
                all(line.startswith("- ") for line in lines[1:]):  # a list, maybe under a paragraph
            head = "" if lines[0].startswith("- ") else f'<p class="caption">{inline_md(lines[0])}</p>'
            items = lines if not head else lines[1:]
            out.append(head + "<ul>" + "".join(f"<li>{inline_md(i[2:])}</li>" for i in items) + "</ul>")
        elif lines:
            out.append(f'<p class="caption">{" ".join(inline_md(line) for line in lines)}</p>')
    return "\n".join(out)


def fmt(value) -> str:
    """A CSV value for a table: floats to 4 significant digits (2 decimals from 10, 3 significant digits
    from a million), ints as they are."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if abs(value) >= 1e6:
            return f"{value:.3g}"
        return f"{value:.2f}" if abs(value) >= 10 else f"{value:.4g}"
    return str(value)


def csv_table(path: Path, max_rows: int = 200) -> str:
    """Every column of a CSV file as a table (first `max_rows` rows, saying so when cut)."""
    import polars as pl

    frame = pl.read_csv(path, infer_schema_length=10000)
    rows = [[fmt(v) for v in r] for r in frame.head(max_rows).iter_rows()]
    cut = f'<p class="note">first {max_rows} of {frame.height} rows; all in {esc(path.name)}</p>' \
        if frame.height > max_rows else ""
    return table(frame.columns, rows) + cut


def figure(path: Path, caption: str) -> str:
    """A PNG inline, as a data URI."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{esc(caption)}">'
            f"<figcaption>{esc(caption)} ({esc(Path(path).name)})</figcaption></figure>")


def section(key: str, title: str, body: str) -> str:
    return f'<section id="{esc(key)}"><h2>{esc(title)}</h2>\n{body}\n</section>'


def document(title: str, meta: str, sections: list[tuple[str, str, str]]) -> str:
    """The whole page: `sections` are (id, title, body HTML), in order, each linked from the top."""
    nav = "".join(f'<a href="#{esc(k)}">{esc(t)}</a>' for k, t, _ in sections)
    body = "\n".join(section(k, t, b) for k, t, b in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head>\n<body>"
            f'<header><h1>{esc(title)}</h1><p class="meta">{meta}</p><nav>{nav}</nav></header>\n'
            f"<main>\n{body}\n</main>\n<footer><p class=\"meta\">One self-contained file: no script, "
            f"no request leaves it.</p></footer></body></html>\n")
