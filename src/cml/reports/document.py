"""A report as a list of blocks, rendered once as Markdown and once as self-contained HTML.

The HTML needs nothing outside the file: styles are inline and images are base64 PNG data URIs, so it opens
offline and can be mailed or archived as one file. Markdown links images as files, since most Markdown viewers
(GitHub's among them) refuse data URIs.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: Sequence[str]


@dataclass(frozen=True)
class Cell:
    text: str
    best: bool = False


@dataclass(frozen=True)
class Table:
    header: Sequence[str]
    rows: Sequence[Sequence[Cell]]
    caption: str = ""
    labels: int = 1  # leading columns that name the row (left-aligned); the rest are numbers


@dataclass(frozen=True)
class Image:
    name: str  # a file stem, unique in the report
    png: bytes
    alt: str
    caption: str = ""


Block = Heading | Paragraph | Bullets | Table | Image

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1280px; margin: 2em auto;
       padding: 0 1em; color: #1f2328; line-height: 1.45; }
h1, h2, h3 { line-height: 1.2; }
table { border-collapse: collapse; margin: 0.5em 0 0.3em; font-size: 0.9em; }
th, td { border: 1px solid #d0d7de; padding: 0.25em 0.5em; text-align: right; }
td { white-space: nowrap; }
th { background: #f6f8fa; vertical-align: bottom; }
.label { text-align: left; }
td.best { font-weight: bold; background: #dafbe1; }
p.caption { color: #59636e; font-size: 0.85em; margin-top: 0.2em; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; }
figcaption { color: #59636e; font-size: 0.85em; }
.scroll { overflow-x: auto; }
"""


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|")


def to_markdown(blocks: Sequence[Block], image_path: Callable[[Image], str]) -> str:
    """Markdown; best cells in bold, images linked at ``image_path(image)``."""
    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"{'#' * block.level} {block.text}")
        elif isinstance(block, Paragraph):
            parts.append(block.text)
        elif isinstance(block, Bullets):
            parts.append("\n".join(f"- {item}" for item in block.items))
        elif isinstance(block, Table):
            lines = ["| " + " | ".join(map(_markdown_cell, block.header)) + " |",
                     "|" + "|".join(["---"] * block.labels + ["---:"] * (len(block.header) - block.labels)) + "|"]
            lines += ["| " + " | ".join(f"**{_markdown_cell(cell.text)}**" if cell.best else _markdown_cell(cell.text)
                                        for cell in row) + " |" for row in block.rows]
            parts.append("\n".join(lines) + (f"\n\n_{block.caption}_" if block.caption else ""))
        else:
            parts.append(f"![{block.alt}]({image_path(block)})" + (f"\n\n_{block.caption}_" if block.caption else ""))
    return "\n\n".join(parts) + "\n"


def _html_row(cells: Sequence[Cell], labels: int, tag: str = "td") -> str:
    parts = []
    for position, cell in enumerate(cells):
        classes = " ".join(name for name, on in (("label", position < labels), ("best", cell.best)) if on)
        attribute = f' class="{classes}"' if classes else ""
        parts.append(f"<{tag}{attribute}>{html.escape(cell.text)}</{tag}>")
    return "<tr>" + "".join(parts) + "</tr>"


def to_html(blocks: Sequence[Block], title: str) -> str:
    """One self-contained HTML page; best cells carry the CSS class ``best``."""
    body = []
    for block in blocks:
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            body.append(f"<p>{html.escape(block.text)}</p>")
        elif isinstance(block, Bullets):
            body.append("<ul>" + "".join(f"<li>{html.escape(item)}</li>" for item in block.items) + "</ul>")
        elif isinstance(block, Table):
            head = _html_row([Cell(text) for text in block.header], block.labels, "th")
            rows = "".join(_html_row(row, block.labels) for row in block.rows)
            caption = f'<p class="caption">{html.escape(block.caption)}</p>' if block.caption else ""
            body.append(f'<div class="scroll"><table><thead>{head}</thead><tbody>{rows}</tbody></table>'
                        f"</div>{caption}")
        else:
            data = base64.b64encode(block.png).decode("ascii")
            caption = f"<figcaption>{html.escape(block.caption)}</figcaption>" if block.caption else ""
            body.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(block.alt)}">'
                        f"{caption}</figure>")
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")
