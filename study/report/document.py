"""A report as a list of blocks, rendered twice: Markdown with its figures beside it, and one
self-contained HTML page with the figures inlined as data URIs (it opens without a network).

Both renderings come from the same blocks, so they say the same thing. Every string in a block is
plain text that the renderer escapes, so a study name or a parameter value can never become
markup (HTML, or Markdown: links, emphasis, headings, lists); text between backticks is shown as
code, and http(s) URLs become links.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Image:
    path: str  # relative to the report folder, e.g. figures/history.png
    caption: str


@dataclass(frozen=True)
class Code:
    text: str


@dataclass(frozen=True)
class Warn:
    text: str


Block = Heading | Paragraph | Bullets | Table | Image | Code | Warn

_NUMBER = re.compile(r"^[-+]?(\d[\d,]*\.?\d*|\.\d+)(e[-+]?\d+)?( ?%| s)?$|^–$", re.IGNORECASE)


def _numeric_columns(table: Table) -> list[bool]:
    """Columns whose every cell is a number (or – for none): right-aligned."""
    return [
        bool(table.rows) and all(_NUMBER.match(row[i].strip()) for row in table.rows)
        for i in range(len(table.header))
    ]


# an http(s) URL, less the punctuation that ends a sentence after it
_URL = re.compile(r"https?://[^\s<>\"']*[^\s<>\"'.,;:!?)\]]")
# what could open Markdown inline markup: links and images ([ ]), emphasis (* and _ where it is
# not inside a word), strikethrough (~), a backslash escape, # (headings), raw HTML and autolinks
# (< >) and character references (&name;)
_MD_SPECIAL = re.compile(r"[\\*\[\]~#<>]|(?<![^\W_])_|_(?![^\W_])|&(?=#?\w+;)")
_MD_ENTITIES = {"<": "&lt;", ">": "&gt;", "&": "&amp;"}
# what opens a block at the start of a line: a list item (- + 1. 1)) or a thematic break (---)
_MD_BLOCK_START = re.compile(r"[-+]|\d{1,9}[.)](?=\s|$)")


def _escape_md(text: str) -> str:
    """Plain text as Markdown that shows it as it is; http(s) URLs become autolinks."""
    parts = re.split(f"({_URL.pattern})", text)  # URLs at the odd places
    return "".join(
        f"<{part}>"
        if i % 2
        else _MD_SPECIAL.sub(lambda m: _MD_ENTITIES.get(m[0], "\\" + m[0]), part)
        for i, part in enumerate(parts)
    )


def _inline_md(text: str, cell: bool = False) -> str:
    text = text.replace("\n", " ").strip()
    parts = text.split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick is text
        parts = [text.replace("`", "'")]
    # a code span is literal in Markdown: markup cannot start inside it
    joined = "".join(f"`{part}`" if i % 2 else _escape_md(part) for i, part in enumerate(parts))
    if cell:  # a | in text is not a column
        return joined.replace("|", "\\|")
    start = _MD_BLOCK_START.match(joined)  # a block's text starts a line
    return joined if start is None else f"{joined[: start.end() - 1]}\\{joined[start.end() - 1 :]}"


def _inline_html(text: str) -> str:
    parts = text.split("`")
    if len(parts) % 2 == 0:
        parts = [text.replace("`", "'")]
    return "".join(
        f"<code>{html.escape(p)}</code>" if i % 2 else _linked(html.escape(p))
        for i, p in enumerate(parts)
    )


def _linked(escaped: str) -> str:
    """Escaped text with its http(s) URLs made links (a URL's escaped & stays valid in href)."""
    return _URL.sub(lambda m: f'<a href="{m[0]}">{m[0]}</a>', escaped)


def markdown(title: str, blocks: list[Block]) -> str:
    """The report as Markdown; figures are linked by their relative paths."""
    out = [f"# {_inline_md(title)}", ""]
    for b in blocks:
        if isinstance(b, Heading):
            out += [f"{'#' * b.level} {_inline_md(b.text)}", ""]
        elif isinstance(b, Paragraph):
            out += [_inline_md(b.text), ""]
        elif isinstance(b, Bullets):
            out += [f"- {_inline_md(item)}" for item in b.items] + [""]
        elif isinstance(b, Warn):
            out += [f"> **Warning:** {_inline_md(b.text)}", ""]
        elif isinstance(b, Table):
            align = ["---:" if n else "---" for n in _numeric_columns(b)]
            out.append("| " + " | ".join(_inline_md(h, cell=True) for h in b.header) + " |")
            out.append("| " + " | ".join(align) + " |")
            out += [
                "| " + " | ".join(_inline_md(c, cell=True) for c in row) + " |" for row in b.rows
            ]
            out.append("")
        elif isinstance(b, Image):
            alt = Path(b.path).stem.replace("_", " ")
            out += [f"![{alt}]({b.path})", "", f"*{_inline_md(b.caption)}*", ""]
        elif isinstance(b, Code):
            fence = "`" * max(3, 1 + max((len(m) for m in re.findall("`+", b.text)), default=0))
            out += [f"{fence}bash", b.text, fence, ""]
    return "\n".join(out)


_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; color: #222; max-width: 1180px; margin: 0 auto;
       padding: 1.5em 2em 4em; }
h1 { font-size: 1.7em; margin-bottom: .3em; }
h2 { font-size: 1.3em; border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
h3 { font-size: 1.1em; margin-top: 1.5em; }
table { border-collapse: collapse; margin: .6em 0 1.2em; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: .3em .65em; text-align: left; vertical-align: top; }
th { background: #f0f2f5; }
tr:nth-child(even) td { background: #fafbfc; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
code, pre { font-family: ui-monospace, monospace; font-size: 13px; }
code { background: #f3f3f3; padding: 0 .2em; border-radius: 3px; }
pre { background: #f6f8fa; border: 1px solid #ddd; padding: .7em 1em; overflow-x: auto;
      white-space: pre-wrap; word-break: break-all; }
.warn { background: #fff6dc; border-left: 4px solid #e0a800; padding: .5em 1em; margin: .6em 0; }
figure { margin: 1em 0 1.8em; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 14px; margin-top: .3em; }
"""


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def html_page(title: str, blocks: list[Block], folder: Path) -> str:
    """The report as one HTML page; the figures (read from ``folder``) are inlined."""
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{_inline_html(title)}</h1>",
    ]
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level}>{_inline_html(b.text)}</h{b.level}>")
        elif isinstance(b, Paragraph):
            out.append(f"<p>{_inline_html(b.text)}</p>")
        elif isinstance(b, Bullets):
            out.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Warn):
            out.append(f'<p class="warn"><strong>Warning:</strong> {_inline_html(b.text)}</p>')
        elif isinstance(b, Table):
            numeric = _numeric_columns(b)
            head = "".join(f"<th>{_inline_html(h)}</th>" for h in b.header)
            body = "".join(
                "<tr>"
                + "".join(
                    f"<td{' class=num' if n else ''}>{_inline_html(c)}</td>"
                    for c, n in zip(row, numeric, strict=True)
                )
                + "</tr>"
                for row in b.rows
            )
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif isinstance(b, Image):
            out.append(
                f'<figure><img src="{_data_uri(folder / b.path)}" '
                f'alt="{html.escape(b.caption)}">'
                f"<figcaption>{_inline_html(b.caption)}</figcaption></figure>"
            )
        elif isinstance(b, Code):
            out.append(f"<pre><code>{html.escape(b.text)}</code></pre>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
