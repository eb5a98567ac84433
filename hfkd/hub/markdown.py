"""Text from users, datasets and files, put into Markdown so that it shows as itself.

A model card's body is Markdown that the Hub renders with raw HTML allowed: a dataset id, a folder name or a
hyper-parameter value written into it as is can start a heading, a table cell, a link or an ``<img onerror>``.
Every such value goes through one of these helpers (the card's YAML metadata is dumped by huggingface_hub and
needs none of them).
"""
from __future__ import annotations

import json
import re
from typing import Any

# Markdown punctuation that can start or end inline markup anywhere in a line (CommonMark backslash escapes).
_INLINE = re.compile(r"([\\`*\[\]()#!|~{}])")
# An underscore between two letters or digits never starts or ends emphasis (CommonMark): my_dataset stays as is.
_UNDERSCORE = re.compile(r"(?<![^\W_])_|_(?![^\W_])")
# What only matters at the start of a line: a list item marker (a block quote's ">" is an entity already).
_LINE_START = re.compile(r"^(\s*)([-+]|\d+[.)])(?=\s|$)")
_LINE_BREAKS = re.compile(r"[\r\n\x0b\x0c\x1c-\x1e\x85\u2028\u2029]+")
_BACKTICKS = re.compile(r"`+")


def _one_line(value: Any) -> str:
    """``str(value)`` on one line: a line break inside a value would end the paragraph, table row or list item."""
    return _LINE_BREAKS.sub(" ", str(value))


def markdown_text(value: Any) -> str:
    """``value`` as plain text in Markdown: HTML characters as entities, Markdown punctuation escaped."""
    text = _one_line(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = _UNDERSCORE.sub(r"\\_", _INLINE.sub(r"\\\1", text))
    return _LINE_START.sub(lambda m: m.group(1) + m.group(2)[:-1] + "\\" + m.group(2)[-1], text)


def code_span(value: Any, in_table: bool = False) -> str:
    """``value`` as an inline code span that nothing inside it can end.

    The fence is one backtick longer than the longest run of backticks in the value (CommonMark), padded
    with spaces when the value starts or ends with one.  Inside a table row a ``|`` is escaped as ``\\|``:
    GFM splits cells before it parses code spans.
    """
    text = _one_line(value)
    fence = "`" * (max((len(run) for run in _BACKTICKS.findall(text)), default=0) + 1)
    if text.startswith("`") or text.endswith("`") or (text.startswith(" ") and text.endswith(" ") and text.strip()):
        text = f" {text} "
    if in_table:
        text = text.replace("|", "\\|")
    return f"{fence}{text}{fence}"


def fenced(text: Any, info: str = "") -> str:
    """A fenced code block around ``text`` whose fence is longer than any run of backticks in it."""
    text = "" if text is None else str(text)
    longest = max((len(run) for run in _BACKTICKS.findall(text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{text}\n{fence}"


def python_string(value: Any) -> str:
    """``value`` as a Python string literal on one line (for the card's code examples)."""
    return json.dumps(_one_line(value))
