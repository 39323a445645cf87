"""Markdown escaping for text that comes from data (benchmark values, model names, prompts).

`md_text` makes a value plain text in a Markdown table cell, heading, list item or an HTML block
such as `<summary>`: `|` cannot split a table row, a line break cannot end it, and HTML tags
(`<img ...>`), links and code spans are shown as text. `md_code` wraps a value in a code span
that its own backticks cannot close.
"""

from __future__ import annotations

import re
from typing import Any

# what can change a table's or a line's structure, or start a code span or link (emphasis cannot)
_SPECIAL = re.compile(r"([\\`\[\]|])")
_ENTITY = re.compile(r"&(?=#?\w+;)")


def _one_line(value: Any) -> str:
    return " ".join(str(value).splitlines())


def md_text(value: Any) -> str:
    """`value` as literal text on one line: `<`, `>` (and `&` of an entity) as entities; `|`,
    `\\`, backticks and brackets backslash-escaped."""
    text = _ENTITY.sub("&amp;", _one_line(value)).replace("<", "&lt;").replace(">", "&gt;")
    return _SPECIAL.sub(r"\\\1", text)


def md_code(value: Any) -> str:
    """`value` as an inline code span (one line; `|` escaped, as GitHub tables need inside code)."""
    text = _one_line(value).replace("|", "\\|")
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    if longest or text.startswith(" ") or text.endswith(" "):
        return f"{fence} {text} {fence}"
    return f"{fence}{text}{fence}"
