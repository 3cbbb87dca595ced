"""Diversity, complexity and tag counts of a tagged dataset (InsTag, section 3).

    stats = instag_hf.analyze(ds)                    # the pool
    sub_stats = instag_hf.analyze(subset, pool=ds)   # a subset, compared with its pool
    sub_stats.to_dict()                              # JSON for the dataset card

Rows are read as Arrow batches of the tag column only and reduced to counts batch by
batch (numpy ``bincount`` over dictionary-encoded tags), so memory grows with the number
of distinct tags, not rows; ``Dataset`` and ``IterableDataset`` are both accepted.

The same measures are available as an ``evaluate`` measurement:
``evaluate.load(instag_hf.analysis.stats.MEASUREMENT_PATH)``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np

from instag_hf.analysis.tagsets import AnyDataset, iter_local_batches, merge_vocabularies
from instag_hf.errors import ConfigurationError

logger = logging.getLogger(__name__)

#: Folder of the ``evaluate`` measurement module (``evaluate.load(MEASUREMENT_PATH)``).
MEASUREMENT_PATH = str(Path(__file__).parent / "measurements" / "instag")

__all__ = ["MEASUREMENT_PATH", "LongTail", "TagStats", "analyze"]


@dataclass(frozen=True)
class LongTail:
    """Tags carried by at most ``max_count`` rows.

    Attributes:
        max_count: the threshold (1 = tags seen in a single row).
        tags: how many distinct tags are that rare.
        tag_share: their share of the distinct tags.
        occurrence_share: their share of all tag occurrences.
    """

    max_count: int
    tags: int
    tag_share: float
    occurrence_share: float


@dataclass(frozen=True)
class TagStats:
    """Diversity and complexity of one dataset's tags.

    Attributes:
        tag_column: column the tags were read from.
        rows: rows in the dataset.
        rows_without_tags: rows whose tag list is empty or null.
        tag_occurrences: tags summed over rows (each row's tags counted as a set).
        unique_tags: distinct tags (the paper's diversity).
        vocabulary_source: ``"dataset"`` (its own tags), ``"pool"`` or ``"given"``.
        vocabulary_size: size of the vocabulary coverage is measured against.
        vocabulary_covered: distinct tags of the dataset that are in that vocabulary.
        coverage: ``vocabulary_covered / vocabulary_size`` (0.0 for an empty vocabulary).
        out_of_vocabulary_tags: distinct tags of the dataset outside the vocabulary.
        mean_tags: mean tags per row (the paper's complexity; 0.0 without rows).
        median_tags: median tags per row.
        max_tags: most tags on one row.
        tags_per_row: tag count -> number of rows with that many tags, ascending.
        tag_counts: every ``(tag, rows carrying it)``, most common first, ties by tag.
        top_k: how many of ``tag_counts`` :attr:`top_tags` returns.
        long_tail: one :class:`LongTail` per threshold, ascending.
        pool: the pool's own statistics, when a pool was given.
        comparison: ratios of this dataset against the pool (``None`` without a pool).
    """

    tag_column: str
    rows: int
    rows_without_tags: int
    tag_occurrences: int
    unique_tags: int
    vocabulary_source: str
    vocabulary_size: int
    vocabulary_covered: int
    coverage: float
    out_of_vocabulary_tags: int
    mean_tags: float
    median_tags: float
    max_tags: int
    tags_per_row: dict[int, int]
    tag_counts: tuple[tuple[str, int], ...]
    top_k: int
    long_tail: tuple[LongTail, ...]
    pool: TagStats | None = None
    comparison: dict[str, float] | None = field(default=None)

    @property
    def diversity(self) -> int:
        """Distinct tags, the paper's measure of diversity."""
        return self.unique_tags

    @property
    def complexity(self) -> float:
        """Mean tags per row, the paper's measure of complexity."""
        return self.mean_tags

    @property
    def top_tags(self) -> tuple[tuple[str, int], ...]:
        """The ``top_k`` most common tags with their counts."""
        return self.tag_counts[: self.top_k]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict in a fixed key order (tags most common first).

        Integer keys of ``tags_per_row`` become strings, as JSON requires. Dump it without
        ``sort_keys`` to keep tags in count order.

        Example:
            >>> instag_hf.analyze(ds).to_dict()["unique_tags"]  # doctest: +SKIP
            6398
        """
        data: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "tags_per_row":
                value = {str(k): v for k, v in value.items()}
            elif f.name == "tag_counts":
                data["top_tags"] = dict(self.top_tags)
                value = dict(value)
            elif f.name == "long_tail":
                value = [vars(tail).copy() for tail in value]
            elif f.name == "pool":
                value = value.to_dict() if value is not None else None
            elif f.name == "comparison":
                value = dict(value) if value is not None else None
            data[f.name] = value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TagStats:
        """Rebuild from :meth:`to_dict` output (e.g. a JSON file written by the CLI)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["tags_per_row"] = {int(k): v for k, v in values["tags_per_row"].items()}
        values["tag_counts"] = tuple((tag, count) for tag, count in values["tag_counts"].items())
        values["long_tail"] = tuple(LongTail(**tail) for tail in values["long_tail"])
        if values.get("pool") is not None:
            values["pool"] = cls.from_dict(values["pool"])
        return cls(**values)


PoolLike: TypeAlias = AnyDataset | TagStats


def analyze(
    ds: AnyDataset,
    tag_column: str = "instag_tags",
    vocabulary: Iterable[str] | None = None,
    pool: PoolLike | None = None,
    top_k: int = 20,
    *,
    tail_counts: tuple[int, ...] = (1, 5, 10),
) -> TagStats:
    """Measure diversity, coverage, complexity and tag counts of ``ds``.

    Coverage is measured against, in order of precedence: ``vocabulary`` if given, the
    pool's distinct tags if ``pool`` is given, else the dataset's own tags (coverage 1.0).
    With a pool, its statistics are nested in the result and ``comparison`` holds
    ``rows_ratio``, ``unique_tags_ratio``, ``pool_tags_covered``, ``pool_coverage``,
    ``tags_not_in_pool``, ``mean_tags_ratio`` and ``mean_tags_difference``.

    Each row's tags are counted as a set (a tag repeated in a row counts once; nulls are
    skipped), so ``tag_counts`` are numbers of rows carrying each tag.

    Args:
        ds: a ``Dataset`` or ``IterableDataset`` with a list-of-strings ``tag_column``.
        tag_column: column holding each row's tags.
        vocabulary: tags to measure coverage against.
        pool: the dataset ``ds`` was selected from, or its :class:`TagStats`.
        top_k: how many tags :attr:`TagStats.top_tags` lists.
        tail_counts: thresholds of the long-tail figures (tags carried by at most that
            many rows).

    Returns:
        A :class:`TagStats`; an empty dataset gives zeros throughout.

    Raises:
        MissingColumnError: ``tag_column`` is missing (the message names the step that adds it).
        ConfigurationError: a bad argument, or the column is not a list of strings.

    Example:
        >>> ds = Dataset.from_dict({"instag_tags": [["math", "code"], ["math"], []]})
        >>> stats = instag_hf.analyze(ds)
        >>> stats.unique_tags, stats.mean_tags, stats.top_tags
        (2, 1.0, (('math', 2), ('code', 1)))
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise ConfigurationError(f"top_k must be a non-negative integer, got {top_k!r}.")
    if not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in tail_counts):
        raise ConfigurationError(f"tail_counts must be positive integers, got {tail_counts!r}.")
    if isinstance(vocabulary, str):
        raise ConfigurationError("vocabulary must be an iterable of tags, not a single string.")
    given = frozenset(vocabulary) if vocabulary is not None else None
    pool_stats = None
    if pool is not None:
        pool_stats = (
            pool
            if isinstance(pool, TagStats)
            else analyze(pool, tag_column, vocabulary=given, top_k=top_k, tail_counts=tail_counts)
        )
    counts, tags, histogram = _count(ds, tag_column)
    if given is not None:
        reference, source = given, "given"
    elif pool_stats is not None:
        reference, source = frozenset(tag for tag, _ in pool_stats.tag_counts), "pool"
    else:
        reference, source = None, "dataset"
    stats = _build(tag_column, counts, tags, histogram, reference, source, top_k, sorted(set(tail_counts)))
    if pool_stats is None:
        return stats
    return _with_pool(stats, pool_stats)


def _count(ds: AnyDataset, tag_column: str) -> tuple[np.ndarray, list[str], np.ndarray]:
    # Counted per batch under the batch's own ids; only the batches' distinct tags are merged.
    distinct, local_counts = [], []
    histogram = np.zeros(1, dtype=np.int64)
    for batch in iter_local_batches(ds, tag_column):
        local_counts.append(np.bincount(batch.ids, minlength=len(batch.distinct)))
        distinct.append(batch.distinct)
        histogram = _add(histogram, np.bincount(batch.lengths))
    vocabulary, remaps = merge_vocabularies(distinct)
    counts = np.zeros(len(vocabulary), dtype=np.int64)
    for remap, part in zip(remaps, local_counts):
        counts[remap] += part  # a batch's tags are distinct: no id twice in remap
    return counts, vocabulary.to_pylist(), histogram


def _add(total: np.ndarray, part: np.ndarray) -> np.ndarray:
    if part.size > total.size:
        total = np.concatenate([total, np.zeros(part.size - total.size, dtype=total.dtype)])
    total[: part.size] += part
    return total


def _ratio(a: float, b: float) -> float:
    return float(a) / float(b) if b else 0.0


def _median(histogram: np.ndarray, rows: int) -> float:
    if rows == 0:
        return 0.0
    cumulative = np.cumsum(histogram)
    low = int(np.searchsorted(cumulative, (rows - 1) // 2, side="right"))
    high = int(np.searchsorted(cumulative, rows // 2, side="right"))
    return (low + high) / 2


def _build(
    tag_column: str,
    counts: np.ndarray,
    tags: list[str],
    histogram: np.ndarray,
    reference: frozenset[str] | None,
    source: str,
    top_k: int,
    tail_counts: list[int],
) -> TagStats:
    rows = int(histogram.sum())
    occurrences = int(counts.sum())
    ranked = tuple(sorted(zip(tags, (int(c) for c in counts)), key=lambda item: (-item[1], item[0])))
    present = [tag for tag, _ in ranked]
    if reference is None:
        in_vocabulary, vocabulary_size = len(present), len(present)
    else:
        in_vocabulary, vocabulary_size = sum(tag in reference for tag in present), len(reference)
    tails = tuple(
        LongTail(
            max_count=limit,
            tags=int(np.count_nonzero(counts <= limit)),
            tag_share=_ratio(int(np.count_nonzero(counts <= limit)), len(tags)),
            occurrence_share=_ratio(counts[counts <= limit].sum(), occurrences),
        )
        for limit in tail_counts
    )
    return TagStats(
        tag_column=tag_column,
        rows=rows,
        rows_without_tags=int(histogram[0]),
        tag_occurrences=occurrences,
        unique_tags=len(tags),
        vocabulary_source=source,
        vocabulary_size=vocabulary_size,
        vocabulary_covered=in_vocabulary,
        coverage=_ratio(in_vocabulary, vocabulary_size),
        out_of_vocabulary_tags=len(present) - in_vocabulary,
        mean_tags=_ratio(occurrences, rows),
        median_tags=_median(histogram, rows),
        max_tags=int(np.flatnonzero(histogram)[-1]) if rows else 0,
        tags_per_row={int(k): int(v) for k, v in enumerate(histogram) if v},
        tag_counts=ranked,
        top_k=top_k,
        long_tail=tails,
    )


def _with_pool(stats: TagStats, pool: TagStats) -> TagStats:
    pool_tags = {tag for tag, _ in pool.tag_counts}
    shared = sum(tag in pool_tags for tag, _ in stats.tag_counts)
    comparison = {
        "rows_ratio": _ratio(stats.rows, pool.rows),
        "unique_tags_ratio": _ratio(stats.unique_tags, pool.unique_tags),
        "pool_tags_covered": shared,
        "pool_coverage": _ratio(shared, pool.unique_tags),
        "tags_not_in_pool": stats.unique_tags - shared,
        "mean_tags_ratio": _ratio(stats.mean_tags, pool.mean_tags),
        "mean_tags_difference": stats.mean_tags - pool.mean_tags,
    }
    # One level of nesting only: a pool's own pool would make the card's JSON recursive.
    nested = replace(pool, pool=None, comparison=None)
    return replace(stats, pool=nested, comparison=comparison)
