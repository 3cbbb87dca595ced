"""Where a row's user queries live, and how to read them out of a ``Dataset.map`` batch.

Recognised without configuration; the first column present (in this order) decides:

* ``conversations``: ShareGPT, a list of ``{from, value}``; queries are the turns from
  ``human`` / ``user``.
* ``messages``: chat messages, a list of ``{role, content}``; queries are the ``user``
  turns. A content given as a list of parts gives its text parts joined by newlines.
* ``instruction``: Alpaca; the query is the instruction, plus ``"\\n\\n" + input`` when an
  ``input`` column holds a non-empty string.
* ``prompt``, ``query``, ``question``, ``text``: a plain prompt column, the cell is the query.

System and assistant turns are context and are never queries. A ``column=`` override with
no ``format=`` reads the format from the column's name (``conversations`` -> sharegpt,
``messages`` -> messages, ``instruction`` -> alpaca) and treats any other column as a
plain prompt column; pass ``format=`` as well when such a column holds conversations.

    >>> detect_format(["id", "conversations"]).kind
    'sharegpt'
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from instag_hf.errors import ConfigurationError, FormatError

FORMAT_NAMES = ("sharegpt", "messages", "alpaca", "prompt")

#: Detection order: the first column present decides the format.
_DETECTION = (
    ("conversations", "sharegpt"),
    ("messages", "messages"),
    ("instruction", "alpaca"),
    ("prompt", "prompt"),
    ("query", "prompt"),
    ("question", "prompt"),
    ("text", "prompt"),
)
_PROMPT_COLUMNS = ("instruction", "prompt", "query", "question", "text")
_DEFAULT_COLUMN = {"sharegpt": "conversations", "messages": "messages", "alpaca": "instruction"}
_FORMAT_OF_COLUMN = {"conversations": "sharegpt", "messages": "messages", "instruction": "alpaca"}
_INPUT_COLUMN = "input"

#: Speaker names (lowercase) of both conversation formats -> user / assistant / system.
#: Only ``user`` turns are queries; unknown speakers (tools, functions) are skipped too.
ROLES: Mapping[str, str] = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "model": "assistant",
    "system": "system",
}
# Both conversation formats share one reader: datasets in the wild mix the two key pairs
# (ShareGPT rows with role/content, chat rows with from/value), so each turn tries both.
_USER_ROLES = frozenset(name for name, role in ROLES.items() if role == "user")


@dataclass(frozen=True)
class RowFormat:
    """How one dataset stores its queries.

    Args:
        kind: ``"sharegpt"``, ``"messages"``, ``"alpaca"`` or ``"prompt"``.
        column: The column holding the conversation or the query.
        input_column: Alpaca only: the optional ``input`` column appended to the query.

    Raises:
        ConfigurationError: An unknown kind, an empty column name, or an input column on a
            format other than alpaca.

    Example:
        >>> RowFormat("alpaca", "instruction", "input").input_column
        'input'
    """

    kind: Literal["sharegpt", "messages", "alpaca", "prompt"]
    column: str
    input_column: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in FORMAT_NAMES:
            raise ConfigurationError(_unknown_format(self.kind))
        if not isinstance(self.column, str) or not self.column:
            raise ConfigurationError(f"RowFormat needs a column name, got {self.column!r}")
        if self.input_column is not None and self.kind != "alpaca":
            raise ConfigurationError(
                f"input_column={self.input_column!r} only applies to format='alpaca', not {self.kind!r}: drop it"
            )


class RowQueries(NamedTuple):
    """The user queries of one row.

    ``queries`` holds ``(turn, text)`` pairs, ``turn`` being the query's index among the
    row's user turns (0 for single-turn rows; bad turns are counted, so indexes stay
    true). ``problem`` says what could not be read, or is None.
    """

    queries: list[tuple[int, str]]
    problem: str | None


def _unknown_format(name: object) -> str:
    return f"Unknown format {name!r}: use one of {', '.join(repr(n) for n in FORMAT_NAMES)}"


def _missing_column(column: str, names: list[str]) -> str:
    return f"Column {column!r} is not in the dataset (columns: {names}): name one of them with Tagger(column=...)"


def detect_format(column_names: Iterable[str], format: str | None = None, column: str | None = None) -> RowFormat:
    """Decide which column holds the queries, and in which format.

    Args:
        column_names: The dataset's columns (``ds.column_names``).
        format: Force a format: ``"sharegpt"``, ``"messages"``, ``"alpaca"`` or
            ``"prompt"``. Without ``column``, that format's usual column is used (for
            ``"prompt"``: the first of instruction, prompt, query, question, text present).
        column: Force the column. Without ``format``, ``conversations`` means sharegpt,
            ``messages`` means messages, ``instruction`` means alpaca, and any other name
            a plain prompt column.

    Returns:
        The :class:`RowFormat`; alpaca picks up an ``input`` column when there is one.

    Raises:
        ConfigurationError: ``format`` is not a known format name.
        FormatError: No column to tag could be found, or an override names a column the
            dataset lacks.

    Example:
        >>> detect_format(["instruction", "input", "output"])
        RowFormat(kind='alpaca', column='instruction', input_column='input')
        >>> detect_format(["id", "body"], column="body").kind
        'prompt'
    """
    names = list(column_names)
    present = set(names)
    kind: str | None = None
    if format is not None:
        kind = format.strip().lower() if isinstance(format, str) else None
        if kind not in FORMAT_NAMES:
            raise ConfigurationError(_unknown_format(format))

    if column is None and kind is None:
        for candidate, candidate_kind in _DETECTION:
            if candidate in present:
                column, kind = candidate, candidate_kind
                break
        else:
            raise FormatError(
                f'No column to tag among {names}: name one with Tagger(column="...") (and '
                f'format="sharegpt"|"messages"|"alpaca"|"prompt" if it is not a plain '
                f"prompt column)"
            )
    elif column is None:
        if kind == "prompt":
            column = next((c for c in _PROMPT_COLUMNS if c in present), None)
            if column is None:
                raise FormatError(
                    f"format='prompt' found none of the prompt columns {list(_PROMPT_COLUMNS)} "
                    f"among {names}: name the column with Tagger(column=...)"
                )
        else:
            column = _DEFAULT_COLUMN[kind]  # type: ignore[index]
    elif kind is None:
        kind = _FORMAT_OF_COLUMN.get(column, "prompt")

    if column not in present:
        raise FormatError(_missing_column(column, names))
    input_column = _INPUT_COLUMN if kind == "alpaca" and _INPUT_COLUMN in present else None
    return RowFormat(kind, column, input_column)  # type: ignore[arg-type]


def extract_queries(batch: Mapping[str, list[Any]], fmt: RowFormat) -> list[RowQueries]:
    """Read the user queries of every row of a batched ``Dataset.map`` batch.

    A bad row never raises: it gets a ``problem`` and no queries (or, in a conversation
    where only some user turns are bad, the good turns and a ``problem`` naming the bad
    ones). Queries are stripped at both ends.

    Args:
        batch: Column name -> list of values, as ``Dataset.map(batched=True)`` passes it.
        fmt: The format from :func:`detect_format`.

    Returns:
        One :class:`RowQueries` per row, in row order.

    Raises:
        FormatError: The batch lacks the format's column.

    Example:
        >>> rows = extract_queries({"prompt": [" Hi ", None]}, RowFormat("prompt", "prompt"))
        >>> rows[0]
        RowQueries(queries=[(0, 'Hi')], problem=None)
        >>> rows[1].problem
        'query is None'
    """
    try:
        values = batch[fmt.column]
    except KeyError:
        raise FormatError(_missing_column(fmt.column, list(batch))) from None
    if fmt.kind == "prompt":
        return [_single(value) for value in values]
    if fmt.kind == "alpaca":
        inputs = batch.get(fmt.input_column) if fmt.input_column else None
        if inputs is None:
            return [_single(value) for value in values]
        return [_alpaca(value, extra) for value, extra in zip(values, inputs, strict=True)]
    return [_conversation(value, fmt.column) for value in values]


def _clean(value: Any) -> tuple[str | None, str | None]:
    """(query, None) for a usable query, else (None, what is wrong with it)."""
    if type(value) is str:
        query = value.strip()
        return (query, None) if query else (None, "query is empty")
    if value is None:
        return None, "query is None"
    if isinstance(value, str):
        return _clean(str(value))
    return None, f"query is not a string (got {type(value).__name__})"


def _clean_parts(parts: list[Any]) -> tuple[str | None, str | None]:
    # Chat content as a list of parts: only text parts are the query; images and other
    # media are not tagged.
    texts = []
    for part in parts:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, Mapping):
            text = part.get("text")
            if isinstance(text, str) and part.get("type") in ("text", None):
                texts.append(text)
    if not texts:
        return None, "query has no text part"
    return _clean("\n".join(texts))


def _single(value: Any) -> RowQueries:
    query, problem = _clean(value)
    if query is None:
        if isinstance(value, list):
            problem = f"{problem}; if this column holds conversations, pass format='sharegpt' or format='messages'"
        return RowQueries([], problem)
    return RowQueries([(0, query)], None)


def _alpaca(instruction: Any, extra: Any) -> RowQueries:
    if type(instruction) is str and type(extra) is str and extra.strip():
        return _single(instruction + "\n\n" + extra)
    row = _single(instruction)
    if extra is not None and type(extra) is not str and row.queries:
        return RowQueries(
            row.queries,
            f"input is not a string (got {type(extra).__name__}): tagged the instruction alone",
        )
    return row


def _conversation(turns: Any, column: str) -> RowQueries:
    if not isinstance(turns, list):
        if turns is None:
            return RowQueries([], f"{column} is None")
        return RowQueries([], f"{column} is not a list of turns (got {type(turns).__name__})")
    queries: list[tuple[int, str]] = []
    problems: list[str] = []
    user_turn = 0
    for position, turn in enumerate(turns):
        if not isinstance(turn, Mapping):
            problems.append(f"message {position} is not an object (got {type(turn).__name__})")
            continue
        role = turn.get("from")
        if role is None:
            role = turn.get("role")
        # Exact role names are the common case; only odd spellings pay for strip/lower.
        if type(role) is not str or (role not in _USER_ROLES and role.strip().lower() not in _USER_ROLES):
            continue
        text = turn.get("value")
        if text is None:
            text = turn.get("content")
        query, problem = _clean_parts(text) if isinstance(text, list) else _clean(text)
        if query is None:
            problems.append(f"turn {user_turn}: {problem}")
        else:
            queries.append((user_turn, query))
        user_turn += 1
    if user_turn == 0:
        roles = sorted({str(t.get("from") or t.get("role")) for t in turns if isinstance(t, Mapping)})
        problems.append(f"no user turn in {column}" + (f" (roles seen: {roles})" if roles else ""))
    elif user_turn == 1 and len(problems) == 1 and problems[0].startswith("turn 0: "):
        # A single-turn conversation reads like a prompt row: the turn number adds nothing.
        problems[0] = problems[0][len("turn 0: ") :]
    return RowQueries(queries, "; ".join(problems) if problems else None)


__all__ = ["FORMAT_NAMES", "ROLES", "RowFormat", "RowQueries", "detect_format", "extract_queries"]
