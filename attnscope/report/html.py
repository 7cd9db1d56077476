"""Small builders for a self-contained HTML page: every text escaped, figures inlined.

Each function returns an HTML fragment (``str``). Text arguments are always
passed through :func:`html.escape`; only fragments made by these functions
are inserted unescaped, so prompts and other user text cannot inject markup.
"""

from __future__ import annotations

import base64
import html
import io
import math
from typing import Any, Callable, Mapping, Sequence

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 72em;
       padding: 0 1.5em; color: #1a1a1a; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #d5d5d5; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0; } figure img { max-width: 100%; } figcaption { color: #555; font-size: 0.9em; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 0.5em 1em; }
.pair { display: flex; gap: 1em; flex-wrap: wrap; align-items: flex-start; }
.pair figure { flex: 1 1 30em; } code, pre { font-size: 0.9em; background: #f6f6f6; }
pre { padding: 0.6em; overflow-x: auto; } details { margin: 0.5em 0; }
"""


def text(value: Any) -> str:
    """``value`` as escaped text."""
    return html.escape(str(value), quote=True)


VOID = frozenset({"img", "meta", "br", "hr"})  # elements without a closing tag


def tag(name: str, *children: str, **attributes: Any) -> str:
    """``<name attr="...">children</name>``; attribute values are escaped, children are fragments.

    Attribute names drop a trailing ``_`` and turn ``_`` into ``-`` (``class_``, ``data_run``).
    """
    attrs = "".join(f' {k.rstrip("_").replace("_", "-")}="{text(v)}"' for k, v in attributes.items() if v is not None)
    if name in VOID:
        return f"<{name}{attrs}>"
    return f"<{name}{attrs}>{''.join(children)}</{name}>"


def paragraph(value: Any, **attributes: Any) -> str:
    return tag("p", text(value), **attributes)


def heading(level: int, value: Any, anchor: str | None = None) -> str:
    return tag(f"h{level}", text(value), id=anchor)


def number(value: Any, digits: int = 3) -> str:
    """Floats rounded, NaN/None as an empty cell, everything else as text."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str] | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    formats: Mapping[str, Callable[[Mapping[str, Any]], str]] | None = None,
) -> str:
    """An HTML table of dict rows.

    ``columns``: which keys, in order (default: all, first-seen order);
    ``headers``: display names; ``formats[column](row)`` gives a cell's text
    (escaped here) instead of the raw value.
    """
    if columns is None:
        seen: dict[str, None] = {}
        for row in rows:
            seen.update(dict.fromkeys(row))
        columns = list(seen)
    headers, formats = headers or {}, formats or {}
    head = tag("tr", *(tag("th", text(headers.get(c, c))) for c in columns))
    body = []
    for row in rows:
        cells = []
        for c in columns:
            value = formats[c](row) if c in formats else number(row.get(c))
            numeric = isinstance(row.get(c), (int, float)) and not isinstance(row.get(c), bool)
            cells.append(tag("td", text(value), class_="num" if numeric else None))
        body.append(tag("tr", *cells))
    return tag("table", tag("thead", head), tag("tbody", *body))


def png_data_uri(figure_or_png: Any) -> str:
    """A ``data:image/png;base64,...`` URI from PNG bytes or a matplotlib figure (saved at 150 dpi)."""
    if isinstance(figure_or_png, (bytes, bytearray)):
        data = bytes(figure_or_png)
    else:
        buffer = io.BytesIO()
        figure_or_png.savefig(buffer, format="png", dpi=150, bbox_inches="tight")
        data = buffer.getvalue()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def figure(png: bytes, caption: str = "", alt: str = "", width: int | None = None) -> str:
    """An inlined PNG with an (escaped) caption, shown ``width`` CSS pixels wide (default: natural size)."""
    style = f"width: {int(width)}px" if width else None
    return tag("figure", tag("img", src=png_data_uri(png), alt=alt or caption, style=style),
               tag("figcaption", text(caption)) if caption else "")


def details(summary: str, body: str) -> str:
    """A collapsed block: ``summary`` is text, ``body`` a fragment."""
    return tag("details", tag("summary", text(summary)), body)


def preformatted(value: Any) -> str:
    return tag("pre", text(value))


def page(title: str, body: Sequence[str]) -> str:
    """A complete, self-contained HTML document."""
    head = tag("head", tag("meta", charset="utf-8"), tag("title", text(title)), tag("style", STYLE))
    return "<!DOCTYPE html>\n" + tag("html", head, tag("body", *body), lang="en") + "\n"
