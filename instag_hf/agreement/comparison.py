"""``instag_hf.compare``: how well one tagger agrees with another on the same queries.

    cmp = instag_hf.compare(small, large)       # two tagged datasets of the same queries
    cmp.scores["semantic"].micro_f1             # the paper's InsTagger vs ChatGPT: 0.734
    cmp.missed[:5], cmp.invented[:5]            # where the candidate falls short
    print(cmp.summary())

``ds_a`` is the candidate (the tagger under test, usually the cheaper one), ``ds_b`` the
reference. Rows are aligned by their user queries (the text of every user turn, read as
the tagger reads it, see :mod:`instag_hf.tagging.rows`), never by position, so the two datasets
may be shuffled, filtered or hold other rows. The rules of the figures are those of
:mod:`instag_hf.agreement.matching`; on top of them:

- A row whose queries repeat an earlier row's is skipped (``duplicate_rows_a/b``); one
  with no readable query cannot be aligned (``rows_without_query_a/b``).
- A row that failed tagging on a side (no tag and an ``instag_error``, or a null tag
  value) is left out of the figures (``failed_rows``): that is an outage, not a
  disagreement.
- Tags come from ``instag_raw_tags`` when the dataset has it (each tagger's own words, per
  user turn), else ``instag_tags``; any column of tag lists, or of ``{turn, tag}``
  structs, can be named. Raw tags are the fair comparison: normalizers fitted on two
  pools map tags differently.
- Rows with several user turns are also scored turn by turn (``per_turn``), when both
  columns carry turn numbers (``instag_raw_tags`` does).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from instag_hf.agreement.matching import (
    DEFAULT_THRESHOLD,
    AgreementScores,
    Encoder,
    TagMatcher,
)
from instag_hf.columns import ERROR_COLUMN, RAW_TAGS_COLUMN, TAGS_COLUMN, missing_column
from instag_hf.errors import AgreementError, ConfigurationError, MissingColumnError
from instag_hf.tagging.rows import RowFormat, detect_format, extract_queries

_READ_BATCH = 1000

__all__ = ["Comparison", "RowTags", "TurnAgreement", "compare", "read_row_tags", "score_rows"]


@dataclass(frozen=True)
class RowTags:
    """One row's tags as the agreement measures read them.

    Attributes:
        tags: Every tag of the row (all turns), as written.
        turns: turn -> its tags, or ``None`` when the column carries no turn numbers.
        failed: The row failed tagging on this side (null tags, or none and an ``instag_error``).
        query_turns: The turn numbers of the row's user queries.
    """

    tags: list[str]
    turns: dict[int, list[str]] | None
    failed: bool
    query_turns: tuple[int, ...] = (0,)


@dataclass(frozen=True)
class TurnAgreement:
    """Agreement on the ``turn``-th user turn of the multi-turn rows that have it."""

    turn: int
    rows: int
    scores: dict[str, AgreementScores]

    def to_dict(self) -> dict[str, Any]:
        return {"turn": self.turn, "rows": self.rows, "scores": {k: s.to_dict() for k, s in self.scores.items()}}


@dataclass(frozen=True)
class Comparison:
    """What :func:`compare` found. ``a`` is the candidate, ``b`` the reference.

    Attributes:
        column_a, column_b: The tag columns compared.
        rows_a, rows_b: Rows read on each side.
        rows_compared: Aligned rows that were scored (both sides tagged).
        rows_only_a, rows_only_b: Rows whose queries the other side does not have.
        duplicate_rows_a, duplicate_rows_b: Rows skipped because an earlier row had the same queries.
        rows_without_query_a, rows_without_query_b: Rows with no readable user query.
        failed_rows: Aligned rows left out because tagging failed on a side.
        multi_turn_rows: Scored rows with more than one user query, both columns carrying turn numbers.
        scores: kind (``exact_raw``, ``exact``, ``semantic``) -> :class:`AgreementScores`.
        matched_by: The kind :attr:`missed` and :attr:`invented` come from (``semantic``
            when scored, else ``exact``).
        missed: ``(tag, rows)`` tags of B that A did not produce, most frequent first.
        invented: ``(tag, rows)`` tags of A that B did not produce, most frequent first.
        per_turn: Per user turn of the multi-turn rows, its agreement.
        threshold: The semantic similarity threshold (``None`` without semantic scores).
        embedding_model: The embedding model of semantic matching (``None`` without).
    """

    column_a: str
    column_b: str
    rows_a: int
    rows_b: int
    rows_compared: int
    rows_only_a: int
    rows_only_b: int
    duplicate_rows_a: int
    duplicate_rows_b: int
    rows_without_query_a: int
    rows_without_query_b: int
    failed_rows: int
    multi_turn_rows: int
    scores: dict[str, AgreementScores]
    matched_by: str
    missed: list[tuple[str, int]]
    invented: list[tuple[str, int]]
    per_turn: list[TurnAgreement] = field(default_factory=list)
    threshold: float | None = None
    embedding_model: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Every figure, JSON-ready (``instag compare --json`` writes this)."""
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["scores"] = {kind: s.to_dict() for kind, s in self.scores.items()}
        data["missed"] = [{"tag": t, "rows": n} for t, n in self.missed]
        data["invented"] = [{"tag": t, "rows": n} for t, n in self.invented]
        data["per_turn"] = [t.to_dict() for t in self.per_turn]
        return data

    def summary(self, top: int = 10) -> str:
        """A small table for a terminal."""
        lines = [
            f"compared {self.rows_compared:,} rows by query: A {self.column_a} ({self.rows_a:,} rows, "
            f"{self.rows_only_a:,} only in A), B {self.column_b} ({self.rows_b:,} rows, {self.rows_only_b:,} only "
            f"in B); {self.failed_rows:,} failed on a side, left out",
            f"{'match':<10} {'micro P':>8} {'micro R':>8} {'micro F1':>8} {'macro P':>8} {'macro R':>8} "
            f"{'macro F1':>8} {'rows':>8}",
        ]
        for kind, s in self.scores.items():
            figures = (s.micro_precision, s.micro_recall, s.micro_f1, s.macro_precision, s.macro_recall, s.macro_f1)
            lines.append(f"{kind:<10} " + " ".join(f"{100 * v:>7.1f}%" for v in figures) + f" {s.rows:>8,}")
        if self.threshold is not None:
            lines.append(f"semantic: cosine similarity > {self.threshold:g} with {self.embedding_model}")
        for label, items in (("missed (in B, not in A)", self.missed), ("invented (in A, not in B)", self.invented)):
            shown = ", ".join(f"{tag} ({n:,})" for tag, n in items[:top])
            lines.append(f"most often {label}: {shown or 'none'}")
        if self.per_turn:
            turns = "; ".join(
                f"turn {t.turn}: {t.rows:,} rows, "
                + ", ".join(f"{kind} F1 {100 * s.micro_f1:.1f}%" for kind, s in t.scores.items() if kind != "exact_raw")
                for t in self.per_turn[:top]
            )
            lines.append(f"per turn ({self.multi_turn_rows:,} multi-turn rows): {turns}")
        return "\n".join(lines)


def compare(
    ds_a: Any,
    ds_b: Any | None = None,
    *,
    column_a: str | None = None,
    column_b: str | None = None,
    mode: str = "all",
    threshold: float = DEFAULT_THRESHOLD,
    embedding_model: str | None = None,
    format: str | None = None,
    query_column: str | None = None,
    top_k: int = 20,
    encoder: Encoder | None = None,
) -> Comparison:
    """Agreement of the tags of ``ds_a`` (candidate) with those of ``ds_b`` (reference).

    Args:
        ds_a: The candidate's tagged ``datasets.Dataset`` (an ``IterableDataset`` works when its columns are known).
        ds_b: The reference's tagged dataset of the same queries; ``None`` compares two
            columns of ``ds_a`` (``column_a`` and ``column_b``), row by row.
        column_a, column_b: Tag columns; default ``instag_raw_tags``, else ``instag_tags``.
        mode: ``"all"``, ``"exact"`` or ``"semantic"`` (see :mod:`~instag_hf.agreement.matching`).
        threshold: Cosine similarity a semantic match must exceed (paper: 0.8).
        embedding_model: Embedding model of semantic matching (default: as the normalizer's).
        format, query_column: Force how queries are read (see :func:`~instag_hf.tagging.rows.detect_format`);
            detected per dataset by default.
        top_k: How many missed and invented tags to keep.
        encoder: A callable embedding texts, instead of ``embedding_model``.

    Returns:
        A :class:`Comparison`.

    Raises:
        AgreementError: The datasets share no query, or every shared row failed tagging.
        MissingColumnError: A tag column is missing.
        FormatError: A dataset has no column of queries.
        ConfigurationError: A bad mode, threshold or column choice.

    Example:
        >>> cmp = instag_hf.compare(tagged_by_7b, tagged_by_70b)  # doctest: +SKIP
        >>> round(cmp.scores["semantic"].micro_f1, 3)             # doctest: +SKIP
        0.734
    """
    if top_k < 0:
        raise ConfigurationError(f"top_k must be >= 0, got {top_k}")
    matcher = TagMatcher(mode, threshold, embedding_model, encoder)
    if ds_b is None:
        if not column_a or not column_b or column_a == column_b:
            raise ConfigurationError(
                "To compare two tag columns of one dataset, name both: compare(ds, column_a=..., column_b=...)."
            )
        ds_b = ds_a
    column_a = _tag_column(ds_a, column_a, "A")
    column_b = _tag_column(ds_b, column_b, "B")
    rows_a = _read_side(ds_a, column_a, format, query_column)
    rows_b = _read_side(ds_b, column_b, format, query_column)
    shared = [key for key in rows_a.rows if key in rows_b.rows]
    if not shared:
        raise AgreementError(
            f"The two datasets share no query ({rows_a.total} and {rows_b.total} rows; queries read from "
            f"{rows_a.where} and {rows_b.where}): compare needs the same queries tagged twice. If a query column "
            "was detected wrongly, pass format=/query_column= (`instag compare --format/--query-column`)."
        )
    result = score_rows([rows_a.rows[k] for k in shared], [rows_b.rows[k] for k in shared], matcher, top_k)
    return Comparison(
        column_a=column_a,
        column_b=column_b,
        rows_a=rows_a.total,
        rows_b=rows_b.total,
        rows_only_a=len(rows_a.rows) - len(shared),
        rows_only_b=len(rows_b.rows) - len(shared),
        duplicate_rows_a=rows_a.duplicates,
        duplicate_rows_b=rows_b.duplicates,
        rows_without_query_a=rows_a.unreadable,
        rows_without_query_b=rows_b.unreadable,
        **result,
    )


def score_rows(
    candidates: Sequence[RowTags], references: Sequence[RowTags], matcher: TagMatcher, top_k: int = 20
) -> dict[str, Any]:
    """Score aligned rows (``candidates[i]`` and ``references[i]`` are one query's tags).

    Returns:
        The :class:`Comparison` fields that come from scoring: ``rows_compared``,
        ``failed_rows``, ``multi_turn_rows``, ``scores``, ``matched_by``, ``missed``,
        ``invented``, ``per_turn``, ``threshold``, ``embedding_model``.

    Raises:
        AgreementError: Every row failed tagging on a side.
    """
    pairs = [(a, b) for a, b in zip(candidates, references, strict=True) if not (a.failed or b.failed)]
    if not pairs:
        raise AgreementError(
            f"All {len(candidates)} aligned rows failed tagging on one side (no tag and an instag_error): "
            "nothing to compare. Look at the instag_error column of each dataset."
        )
    matches = matcher.match([a.tags for a, _ in pairs], [b.tags for _, b in pairs])
    primary = "semantic" if matcher.semantic else "exact"
    # Turn by turn, for rows with several user queries whose both columns carry turn numbers.
    multi = [(a, b) for a, b in pairs if len(a.query_turns) > 1 and a.turns is not None and b.turns is not None]
    by_turn: dict[int, list[tuple[list[str], list[str]]]] = {}
    for a, b in multi:
        for turn in a.query_turns:
            by_turn.setdefault(turn, []).append((a.turns.get(turn, []), b.turns.get(turn, [])))  # type: ignore[union-attr]
    per_turn = [
        TurnAgreement(turn, len(rows), matcher.match([p for p, _ in rows], [r for _, r in rows]).scores)
        for turn, rows in sorted(by_turn.items())
    ]
    return {
        "rows_compared": len(pairs),
        "failed_rows": len(candidates) - len(pairs),
        "multi_turn_rows": len(multi),
        "scores": matches.scores,
        "matched_by": primary,
        "missed": matches.missed[primary][:top_k],
        "invented": matches.invented[primary][:top_k],
        "per_turn": per_turn,
        "threshold": matcher.threshold if matcher.semantic else None,
        "embedding_model": matcher.resolved_model_id(),
    }


def read_row_tags(value: Any, error: Any = None, turns: bool = True, query_turns: Sequence[int] = (0,)) -> RowTags:
    """A :class:`RowTags` from one cell of a tag column (and the row's ``instag_error``).

    Args:
        value: A list of tags, or of ``{turn, tag, ...}`` structs; ``None`` is a failed row.
        error: The row's ``instag_error``.
        turns: Whether the column carries turn numbers (a struct column does).
        query_turns: The turn numbers of the row's user queries.

    Example:
        >>> read_row_tags([{"turn": 1, "tag": "math", "explanation": ""}]).turns
        {1: ['math']}
    """
    if value is None:
        return RowTags([], None, True, tuple(query_turns))
    if isinstance(value, str):  # a column of single tags is a row with one tag
        value = [value]
    tags: list[str] = []
    per_turn: dict[int, list[str]] = {}
    for item in value:
        tag = item.get("tag") if isinstance(item, Mapping) else item
        if tag is None:
            continue
        tags.append(tag)
        if isinstance(item, Mapping):
            per_turn.setdefault(int(item.get("turn") or 0), []).append(tag)
        else:
            turns = False  # plain tags carry no turn numbers
    return RowTags(tags, per_turn if turns else None, not tags and bool(error), tuple(query_turns))


@dataclass
class _Side:
    rows: dict[tuple[str, ...], RowTags]
    total: int
    duplicates: int
    unreadable: int
    where: str


def _tag_column(ds: Any, column: str | None, side: str) -> str:
    names = list(ds.column_names or [])
    if column is None:
        column = RAW_TAGS_COLUMN if RAW_TAGS_COLUMN in names else TAGS_COLUMN
    if column not in names:
        raise MissingColumnError(
            missing_column(
                column,
                names,
                what=f"Dataset {side}",
                otherwise=f"Or name its tag column with column_{side.lower()}=...",
            ),
            column=column,
        )
    return column


def _read_side(ds: Any, column: str, format: str | None, query_column: str | None) -> _Side:
    fmt = detect_format(ds.column_names, format=format, column=query_column)
    wanted = [fmt.column, column] + [c for c in (fmt.input_column, ERROR_COLUMN) if c and c in ds.column_names]
    side = _Side({}, 0, 0, 0, _describe(fmt))
    turns = _has_turns(ds, column)
    for batch in _batches(ds, list(dict.fromkeys(wanted))):
        errors = batch.get(ERROR_COLUMN) or [None] * len(batch[column])
        for row, value, error in zip(extract_queries(batch, fmt), batch[column], errors, strict=True):
            side.total += 1
            key = tuple(text for _, text in row.queries)
            if not key:
                side.unreadable += 1
            elif key in side.rows:
                side.duplicates += 1
            else:
                side.rows[key] = read_row_tags(value, error, turns, [turn for turn, _ in row.queries])
    return side


def _has_turns(ds: Any, column: str) -> bool:
    # A list of {turn, tag, ...} structs, as instag_raw_tags is; a list of strings has no turns.
    # Unknown features (some IterableDatasets) leave it to the values.
    feature = (ds.features or {}).get(column) if getattr(ds, "features", None) is not None else None
    if feature is None:
        return True
    inner = getattr(feature, "feature", None)
    return isinstance(inner, Mapping) and "turn" in inner


def _batches(ds: Any, columns: list[str]) -> Iterator[dict[str, list]]:
    selected = ds.select_columns(columns)
    if hasattr(selected, "with_format"):
        selected = selected.with_format(None)
    yield from selected.iter(batch_size=_READ_BATCH)


def _describe(fmt: RowFormat) -> str:
    return f"{fmt.kind} column {fmt.column!r}"
