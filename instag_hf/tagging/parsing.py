"""Reading intention tags out of a model's answer.

The expected answer is a JSON list of ``{"tag": str, "explanation": str}``. Models also
answer with prose or code fences around it, a single object, an object wrapping the list,
a list cut off by the token limit, plain strings, or other key spellings: whatever is
valid is kept, and the result says what was not.

JSON is found by trying :meth:`json.JSONDecoder.raw_decode` at each ``[`` / ``{`` in turn
(not by a greedy regex, which would swallow prose between two lists); a list that does
not decode whole is re-read item by item, so the whole items before a cut survive.

Whatever comes out is valid text (it must go into Arrow, SQLite and JSON files): a lone
surrogate or a NUL — in the answer itself, or decoded from a JSON escape such as
``\ud800`` — never leaves this module. A tag holding one is dropped, an explanation gets
U+FFFD in its place, and the result says so.

    >>> parse_tags('Sure! [{"tag": "Cosplay", "explanation": "role play"}]').tags
    [('Cosplay', 'role play')]
"""

from __future__ import annotations

import json
import re
from typing import Any, NamedTuple

#: Longer than this, a "tag" is a sentence or a whole answer, not a tag.
MAX_TAG_CHARS = 200
#: Characters of the raw answer quoted in an error.
EXCERPT_CHARS = 200
# Bounds the work on hostile answers (thousands of brackets): real answers hold their JSON
# within the first few candidates.
_MAX_ATTEMPTS = 64
# Wrappers seen in practice are one or two levels deep ({"result": {"tags": [...]}}).
_MAX_WRAPPER_DEPTH = 3

_DECODER = json.JSONDecoder()
_CANDIDATE = re.compile(r"[\[{]")
_WHITESPACE = re.compile(r"\s*")
# Lone surrogates and NUL: no UTF-8 writer takes the first, C-based tools cut at the second.
_INVALID = re.compile("[\x00\ud800-\udfff]")
# A tag that holds U+FFFD lost characters on the way (see valid_text): it is not kept either.
_INVALID_IN_TAG = re.compile("[\x00\ud800-\udfff\ufffd]")

_TAG_KEYS = ("tag", "tags", "tag_name", "tagname", "name", "title", "label", "intention")
_EXPLANATION_KEYS = ("explanation", "explanations", "description", "explain", "reason", "desc")


class ParseResult(NamedTuple):
    """What :func:`parse_tags` recovered.

    ``tags`` holds ``(tag, explanation)`` pairs (explanation may be ``""``). ``error`` is set
    when nothing could be recovered (asking again may help); ``warning`` when tags were
    recovered but part of the answer was dropped.
    """

    tags: list[tuple[str, str]]
    error: str | None
    warning: str | None


def valid_text(text: str) -> str:
    """``text`` with every lone surrogate and NUL replaced by U+FFFD: valid UTF-8 to store.

    Example:
        >>> valid_text("ok\\ud800\\x00") == "ok\\ufffd\\ufffd"
        True
    """
    return _INVALID.sub("\ufffd", text)


def parse_tags(text: str | None) -> ParseResult:
    """Recover the tags from one model answer. Never raises.

    Args:
        text: The model's answer (None when there was none).

    Returns:
        A :class:`ParseResult`. Tags are stripped, inner whitespace is collapsed, blank
        tags and tags longer than ``MAX_TAG_CHARS`` are dropped, and duplicates
        (case-insensitive) are merged, keeping the first spelling and the first non-empty
        explanation.

    Example:
        >>> parse_tags('```json\\n{"tags": ["Math", "math "]}\\n```')
        ParseResult(tags=[('Math', '')], error=None, warning=None)
        >>> parse_tags("I cannot help with that.").error
        "no JSON list of tags in the answer: 'I cannot help with that.'"
    """
    if text is None:
        return ParseResult([], "no answer", None)
    if not isinstance(text, str):
        return ParseResult([], f"answer is not text (got {type(text).__name__})", None)
    text = valid_text(text)  # a raw NUL would also make the JSON undecodable
    if not text.strip():
        return ParseResult([], f"empty answer: {_excerpt(text)}", None)

    found_json = False
    dropped_notes: list[str] = []
    attempts = 0
    resume = 0
    for match in _CANDIDATE.finditer(text):
        start = match.start()
        if start < resume:
            continue
        attempts += 1
        if attempts > _MAX_ATTEMPTS:
            break
        opener = match.group()
        try:
            value, end = _DECODER.raw_decode(text, start)
        except (ValueError, RecursionError):
            value, end = None, -1
        if end >= 0:
            found_json = True
            resume = end
            items = _items_of(value)
            if opener == "{" and len(items) == 1 and items[0] is value:
                # Answers to a prompt that shows one object often give several, one per
                # line or comma-separated: read on while objects follow.
                items, resume, cut = _read_items(text, end, [value])
                result = _finish(items, cut, dropped_notes, one_object=len(items) == 1)
            else:
                result = _finish(items, None, dropped_notes)
        elif opener == "[":
            items, stop, cut = _read_items(text, start + 1, [])
            if not items:
                continue
            found_json = True
            resume = stop
            result = _finish(items, cut, dropped_notes)
        else:
            continue
        if result is not None:
            return result

    if found_json:
        what = "no usable tag in the JSON of the answer"
    else:
        what = "no JSON list of tags in the answer"
    if dropped_notes:
        what += f" ({'; '.join(dropped_notes)})"
    return ParseResult([], f"{what}: {_excerpt(text)}", None)


def _excerpt(text: str) -> str:
    # repr keeps newlines on one line, so the error stays one line in logs and columns.
    return repr(text[:EXCERPT_CHARS] + ("..." if len(text) > EXCERPT_CHARS else ""))


def _read_items(text: str, pos: int, items: list[Any]) -> tuple[list[Any], int, str | None]:
    """Read JSON values one by one from ``pos``, appending to ``items``.

    With an empty ``items`` this reads the inside of a list whose ``[`` is just before
    ``pos``; with a first object already in ``items`` it reads further objects that follow
    it. Returns the items, where reading stopped, and why it stopped early (None when the
    list closed or the objects ended normally).
    """
    in_list = not items
    end = len(text)
    while True:
        pos = _WHITESPACE.match(text, pos).end()  # type: ignore[union-attr]
        if pos < end and text[pos] == ",":
            pos = _WHITESPACE.match(text, pos + 1).end()  # type: ignore[union-attr]
        if pos >= end:
            return items, pos, "cut" if in_list else None
        char = text[pos]
        if in_list and char == "]":
            return items, pos + 1, None
        if not in_list and char != "{":
            return items, pos, None
        try:
            item, pos = _DECODER.raw_decode(text, pos)
        except (ValueError, RecursionError):
            rest = text[pos:]
            # More openers than closers left: the answer stops inside this item (cut off
            # by the token limit) rather than holding a malformed one.
            opener, closer = ("[", "]") if in_list else ("{", "}")
            unclosed = rest.count(opener) + (1 if in_list else 0) > rest.count(closer)
            return items, pos, "cut" if unclosed else f"invalid JSON at character {pos}"
        items.append(item)


def _items_of(value: Any, depth: int = 0) -> list[Any]:
    """The candidate tag items inside one decoded JSON value."""
    if isinstance(value, list):
        return value
    if not isinstance(value, dict):
        return []
    if isinstance(value.get("tag"), str):
        return [value]
    # A wrapper is looked for before other key spellings: {"name": "Result", "tags": [...]}
    # is a list of tags under a title, not one tag called "Result".
    if depth < _MAX_WRAPPER_DEPTH:
        for inner in value.values():
            if isinstance(inner, (list, dict)):
                items = _items_of(inner, depth + 1)
                if any(_tag_item(item) is not None for item in items):
                    return items
    return [value] if _tag_item(value) is not None else []


def _lookup(item: dict[str, Any], exact: str, keys: tuple[str, ...]) -> Any:
    if exact in item:
        return item[exact]
    spelled = {key.strip().lower(): value for key, value in item.items() if isinstance(key, str)}
    for key in keys:
        if key in spelled:
            return spelled[key]
    return None


def _tag_item(item: Any) -> tuple[str, str] | None:
    """(tag, explanation) from one list item, or None when it is not a tag."""
    if isinstance(item, str):
        return item, ""
    if not isinstance(item, dict):
        return None
    tag = _lookup(item, "tag", _TAG_KEYS)
    if not isinstance(tag, str):
        return None
    explanation = _lookup(item, "explanation", _EXPLANATION_KEYS)
    if explanation is None:
        return tag, ""
    if not isinstance(explanation, str):
        explanation = _as_text(explanation)
    return tag, explanation.strip()


def _as_text(value: Any) -> str:
    # JSON spelling (true, 1.5, [..]) reads better than Python's repr for a JSON answer.
    try:
        return json.dumps(value, ensure_ascii=False)
    except (ValueError, TypeError, RecursionError):
        return ""


def _finish(
    items: list[Any], cut: str | None, dropped_notes: list[str], *, one_object: bool = False
) -> ParseResult | None:
    """Clean and merge the items of one candidate; None when no tag survives.

    Notes on what was dropped are appended to ``dropped_notes`` when nothing survives, so
    the final error can say why. ``one_object``: the answer was a single object where a
    list was asked for, which the result says like any other repair.
    """
    tags: list[tuple[str, str]] = []
    index: dict[str, int] = {}
    not_tags = blank = too_long = invalid = fixed = 0
    for item in items:
        pair = _tag_item(item)
        if pair is None:
            not_tags += 1
            continue
        tag = " ".join(pair[0].split())
        if not tag:
            blank += 1
            continue
        if len(tag) > MAX_TAG_CHARS:
            too_long += 1
            continue
        if _INVALID_IN_TAG.search(tag):  # JSON escapes such as \ud800 decode to such characters
            invalid += 1
            continue
        explanation = pair[1]
        if _INVALID.search(explanation):
            explanation, fixed = valid_text(explanation), fixed + 1
        key = tag.casefold()
        seen = index.get(key)
        if seen is None:
            index[key] = len(tags)
            tags.append((tag, explanation))
        elif not tags[seen][1] and explanation:
            tags[seen] = (tags[seen][0], explanation)

    notes = []
    if cut == "cut":
        notes.append(f"answer was cut off: kept the {len(items)} whole {_plural(len(items), 'item')} before the cut")
    elif cut:
        notes.append(f"dropped the rest of the list after {len(items)} {_plural(len(items), 'item')} ({cut})")
    if not_tags:
        notes.append(
            "dropped 1 item that is not a tag" if not_tags == 1 else f"dropped {not_tags} items that are not tags"
        )
    if blank:
        notes.append(f"dropped {blank} blank {_plural(blank, 'tag')}")
    if too_long:
        notes.append(f"dropped {too_long} {_plural(too_long, 'tag')} longer than {MAX_TAG_CHARS} characters")
    if invalid:
        notes.append(
            f"dropped {invalid} {_plural(invalid, 'tag')} that {'is' if invalid == 1 else 'are'} not valid text "
            "(lone surrogate or NUL)"
        )
    if fixed:
        notes.append(f"replaced invalid characters in {fixed} {_plural(fixed, 'explanation')}")
    if not tags:
        dropped_notes.extend(note for note in notes if note not in dropped_notes)
        return None
    if one_object:
        notes.insert(0, "answer was one object, not a list: kept it as one tag")
    return ParseResult(tags, None, "; ".join(notes) if notes else None)


def _plural(count: int, noun: str) -> str:
    return noun if count == 1 else noun + "s"


__all__ = ["EXCERPT_CHARS", "MAX_TAG_CHARS", "ParseResult", "parse_tags", "valid_text"]
