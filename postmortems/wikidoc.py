"""A wiki page's structure, read by a CommonMark parser with GFM tables (markdown-it-py).

`read(lines)` gives what the post-mortem mapping needs, in source line numbers (1-based):
the YAML front matter, the real headings (a `# comment` inside a code block is none),
the lines inside fenced or indented code, and the tables with their cells. The mapping
to a post-mortem's fields is `markdown.parse`'s; nothing here knows about post-mortems.

markdown-it-py is the maintained Python port of markdown-it (CommonMark compliant, GFM
tables built in); PyYAML, already a dependency, reads the front matter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from markdown_it import MarkdownIt

_PARSER = MarkdownIt("commonmark").enable("table")
_FRONT_MATTER_END = re.compile(r"^(---|\.\.\.)\s*$")


@dataclass
class Table:
    line: int  # the header row's line
    end: int  # the last row's line
    header: list[str]
    rows: list[tuple[int, list[str]]]  # (line, cells as written, inline Markdown kept)


@dataclass
class Document:
    front_matter: dict[str, Any] = field(default_factory=dict)
    front_matter_lines: tuple[int, int] | None = None  # first and last line, the --- included
    headings: list[tuple[int, int, str]] = field(default_factory=list)  # (line, level, text)
    # The other lines of a heading: a setext heading's text lines above the first and its
    # ===/--- underline.
    heading_rest: set[int] = field(default_factory=set)
    code_lines: set[int] = field(default_factory=set)
    tables: list[Table] = field(default_factory=list)


class FrontMatterError(ValueError):
    def __init__(self, message: str, line: int):
        self.line = line
        super().__init__(message)


def _front_matter(lines: list[str]) -> tuple[dict[str, Any], tuple[int, int] | None]:
    if not lines or lines[0].strip() != "---":
        return {}, None
    for index in range(1, min(len(lines), 200)):
        if _FRONT_MATTER_END.match(lines[index]):
            text = "\n".join(lines[1:index])
            try:
                data = yaml.safe_load(text) if text.strip() else {}
            except yaml.YAMLError as exc:
                mark = getattr(exc, "problem_mark", None)
                line = 2 + (mark.line if mark is not None else 0)
                raise FrontMatterError(
                    "The front matter between the two '---' lines is not valid YAML.", line
                ) from None
            if not isinstance(data, dict):
                raise FrontMatterError(
                    "The front matter must be 'key: value' lines (e.g. title: …).", 2
                )
            return {str(k): v for k, v in data.items()}, (1, index + 1)
    return {}, None


def read(lines: list[str]) -> Document:
    front, span = _front_matter(lines)
    body = lines[span[1] :] if span else lines
    offset = span[1] if span else 0
    document = Document(front_matter=front, front_matter_lines=span)
    tokens = _PARSER.parse("\n".join(body))
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.type == "heading_open" and token.map:
            inline = tokens[i + 1]
            document.headings.append(
                (token.map[0] + 1 + offset, int(token.tag[1]), inline.content.strip())
            )
            document.heading_rest.update(
                range(token.map[0] + 2 + offset, token.map[1] + 1 + offset)
            )
        elif token.type in ("fence", "code_block") and token.map:
            document.code_lines.update(range(token.map[0] + 1 + offset, token.map[1] + 1 + offset))
        elif token.type == "table_open" and token.map:
            i = _table(tokens, i, document, offset)
            continue
        i += 1
    return document


def _table(tokens: list[Any], start: int, document: Document, offset: int) -> int:
    """Read the table opening at tokens[start]; the index after its table_close."""
    header: list[str] = []
    rows: list[tuple[int, list[str]]] = []
    cells: list[str] = []
    row_line = 0
    in_head = False
    i = start + 1
    while tokens[i].type != "table_close":
        token = tokens[i]
        if token.type == "thead_open":
            in_head = True
        elif token.type == "thead_close":
            in_head = False
        elif token.type == "tr_open":
            cells = []
            row_line = (token.map[0] + 1 + offset) if token.map else row_line
        elif token.type == "inline":
            cells.append(token.content.strip())
        elif token.type == "tr_close":
            if in_head:
                header = cells
            else:
                rows.append((row_line, cells))
        i += 1
    table_map = tokens[start].map
    document.tables.append(
        Table(
            line=table_map[0] + 1 + offset,
            end=table_map[1] + offset,
            header=header,
            rows=rows,
        )
    )
    return i + 1
