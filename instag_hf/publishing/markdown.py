"""Markdown for dataset cards: the one escaping rule, the template filters, the Environment.

LLM-written tags reach the card body as table cells. The Jinja2 Environment built here
escapes every string a template prints (its ``finalize`` is :func:`markdown_text`) unless a
filter returned :class:`Safe` text built for its context on purpose:

    md      markdown_text, explicitly       code   an inline code span (not in tables)
    py      a Python literal (repr)         sh     a shell word (shlex, or bash $'...')
    count   1,234                           pct    12.5%            dec    3.25

Templates load from the package ``instag_hf.publishing.templates`` with importlib.resources,
or from a user's file (:func:`load_template`; ``dataset_cards/`` holds the copy to start from).
"""

from __future__ import annotations

import importlib.resources
import os
import re
import shlex
import string
import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from instag_hf.errors import CardError

TEMPLATES_PACKAGE = "instag_hf.publishing.templates"
TEMPLATE_NAME = "instag_subset.md.jinja"

__all__ = ["Safe", "environment", "fmt_count", "fmt_dec", "fmt_pct", "markdown_text"]


class Safe(str):
    """Text already escaped or built for its context; ``finalize`` leaves it alone.

    A ``str`` subclass whose operations return plain ``str``: anything derived from it is
    escaped again, so forgetting a filter can only over-escape, never inject.
    """


_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_BACKSLASHED = frozenset(string.punctuation) - frozenset(_ENTITIES)


def markdown_text(value: object) -> str:
    """Escape any text for a Markdown paragraph or table cell (the card's one escaping rule).

    Line breaks and other control or separator characters become spaces (a value is one
    line: it cannot end a table row or start a block); ``&``, ``<`` and ``>`` become HTML
    entities (no HTML, no ``<autolink>``); every other ASCII punctuation character gets a
    backslash, which CommonMark and GFM define as that literal character, so no table cell
    (``|``), link or image (``[``, ``]``, ``(``), emphasis, code span (backtick), math
    (``$``), bare autolink (``:``, ``@``, ``.``) or setext line (``-``) can start inside it.

    Example:
        >>> markdown_text("a|b <script> [x](http://evil)")
        'a\\\\|b &lt;script&gt; \\\\[x\\\\]\\\\(http\\\\:\\\\/\\\\/evil\\\\)'
    """
    if isinstance(value, Safe):
        return value
    text = "".join(" " if _breaks_line(c) else c for c in str(value))
    text = " ".join(text.split())
    return Safe("".join(_ENTITIES.get(c) or ("\\" + c if c in _BACKSLASHED else c) for c in text))


def _breaks_line(char: str) -> bool:
    # Control, format (bidi overrides, zero-width), surrogate, private and line/paragraph
    # separator characters; plain spaces are kept.
    return char != " " and unicodedata.category(char)[0] in "CZ"


def _finalize(value: object) -> str:
    if value is None:
        return Safe("n/a")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Safe(str(value))
    return markdown_text(value)


def _code(value: object) -> str:
    """An inline code span holding ``value`` literally (not for table cells: ``|`` splits them)."""
    text = " ".join("".join(" " if _breaks_line(c) else c for c in str(value)).split())
    if not text:
        return Safe("")
    longest = max(map(len, re.findall("`+", text)), default=0)
    fence = "`" * (longest + 1)
    padded = f" {text} " if text.startswith("`") or text.endswith("`") or longest else text
    return Safe(f"{fence}{padded}{fence}")


def _py(value: object) -> str:
    # repr() of str/int/float/None/bool is a one-line Python literal: it cannot end the fence.
    return Safe(repr(value))


def _sh(value: object) -> str:
    text = str(value)
    if not any(_breaks_line(c) for c in text):
        return Safe(shlex.quote(text))
    # bash's $'...' keeps the value exact without putting a line break into the block.
    escaped = "".join(f"\\u{ord(c):04x}" if _breaks_line(c) else ("\\" + c if c in "\\'" else c) for c in text)
    return Safe(f"$'{escaped}'")


def fmt_count(value: int | None) -> str:
    return Safe("n/a" if value is None else f"{value:,}")


def fmt_pct(value: float | None, digits: int = 1) -> str:
    return Safe("n/a" if value is None else f"{100 * value:.{digits}f}%")


def fmt_dec(value: float | None, digits: int = 2) -> str:
    return Safe("n/a" if value is None else f"{value:.{digits}f}")


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The Environment card templates render in (cached; templates are package data)."""

    def load(name: str) -> str:
        return importlib.resources.files(TEMPLATES_PACKAGE).joinpath(name).read_text(encoding="utf-8")

    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(load),
        undefined=jinja2.StrictUndefined,
        finalize=_finalize,
        autoescape=False,  # HTML escaping is not Markdown escaping; finalize does the latter
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(md=markdown_text, code=_code, py=_py, sh=_sh, count=fmt_count, pct=fmt_pct, dec=fmt_dec)
    return env


def load_template(path: str | os.PathLike[str] | None = None) -> jinja2.Template:
    """The packaged card template, or the file at ``path`` (read now, so a typo fails at once).

    Raises:
        CardError: The file cannot be read, or is not a valid Jinja2 template.
    """
    if path is None:
        return environment().get_template(TEMPLATE_NAME)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise CardError(
            f"Cannot read the card template {os.fspath(path)!r} ({error}): "
            "start from a copy of dataset_cards/instag_subset.md.jinja"
        ) from None
    try:
        return environment().from_string(text)
    except jinja2.TemplateSyntaxError as error:
        raise CardError(f"Card template {os.fspath(path)!r}, line {error.lineno}: {error.message}") from None


def render(template: jinja2.Template, where: str | os.PathLike[str] | None, context: dict[str, Any]) -> str:
    """The card text; ``where`` is the template's path (None: the packaged one).

    Raises:
        CardError: The template fails (an unknown name, a bad filter argument), or a template
            of the user's drops the YAML header.
    """
    try:
        content = template.render(**context)
    except jinja2.TemplateError as error:
        names = ", ".join(sorted(context))
        raise CardError(
            f"Card template {os.fspath(where or TEMPLATE_NAME)!r}: {error}. A template can use {names}"
        ) from None
    if where is not None and not content.startswith(f"---\n{context['card_data']}"):
        # The Hub reads where the data files are (`configs`) from the header: without it
        # the pushed dataset would not load by its split.
        raise CardError(
            f"Card template {os.fspath(where)!r} must start with the YAML header: "
            "the lines ---, {{ card_data }}, --- as in dataset_cards/instag_subset.md.jinja"
        )
    return content
