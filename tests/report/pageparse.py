"""A small reader of the report page (stdlib html.parser): what a test needs to check."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote


@dataclass
class ParsedTable:
    caption: str = ""
    head: list[list[str]] = field(default_factory=list)
    body: list[list[str]] = field(default_factory=list)
    colspans: list[list[int]] = field(default_factory=list)  # of body rows


class Page(HTMLParser):
    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.title = ""
        self.headings: list[tuple[str, str]] = []
        self.imgs: list[dict[str, str]] = []
        self.links: list[str] = []
        self.tables: dict[str, ParsedTable] = {}
        self.tags: list[str] = []
        self.figcaptions: list[str] = []
        self.summaries: list[str] = []
        self.pres: list[str] = []
        self.ids: list[str] = []
        self._buf: list[str] | None = None
        self._open: str | None = None
        self._table: ParsedTable | None = None
        self._row: list[str] | None = None
        self._spans: list[int] | None = None
        self._in_head = False
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.append(tag)
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "img":
            self.imgs.append(a)
        elif tag == "a":
            self.links.append(a.get("href", ""))
        elif tag == "table":
            self._table = ParsedTable()
            self.tables[a.get("id", f"table{len(self.tables)}")] = self._table
        elif tag == "thead":
            self._in_head = True
        elif tag == "tbody":
            self._in_head = False
        elif tag == "tr":
            self._row, self._spans = [], []
        elif tag in ("td", "th") and self._row is not None:
            self._spans.append(int(a.get("colspan", "1")))  # type: ignore[union-attr]
            self._start(tag)
        elif tag in ("title", "h1", "h2", "h3", "figcaption", "summary", "pre", "caption"):
            self._start(tag)

    def _start(self, tag: str) -> None:
        self._buf, self._open = [], tag

    def handle_data(self, data: str) -> None:
        if self._buf is not None:
            self._buf.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == self._open and self._buf is not None:
            text = " ".join("".join(self._buf).split())
            raw = "".join(self._buf)
            self._buf, self._open = None, None
            if tag == "title":
                self.title = text
            elif tag in ("h1", "h2", "h3"):
                self.headings.append((tag, text))
            elif tag == "figcaption":
                self.figcaptions.append(text)
            elif tag == "summary":
                self.summaries.append(text)
            elif tag == "pre":
                self.pres.append(raw)
            elif tag == "caption" and self._table is not None:
                self._table.caption = text
            elif tag in ("td", "th") and self._row is not None:
                self._row.append(text)
        if tag == "tr" and self._row is not None and self._table is not None:
            if self._in_head:
                self._table.head.append(self._row)
            else:
                self._table.body.append(self._row)
                self._table.colspans.append(self._spans or [])
            self._row = None
        elif tag == "table":
            self._table = None


def read_page(path: Path) -> Page:
    return Page(path.read_text(encoding="utf-8"))


def local_file(folder: Path, src: str) -> Path:
    """The file a relative src/href points to (URL-unquoted)."""
    assert not src.startswith(("/", "file:", "http:", "https:", "data:")), src
    return (folder / unquote(src)).resolve()
