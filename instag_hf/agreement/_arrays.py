"""Tag lists as flat numpy arrays, and the vectorised steps of :mod:`.matching` on them.

A side (the predictions, or the references) is held as two parallel arrays: the distinct tag
ids of every row, rows in order, and the row of each. Exact matches, candidate pairs and
the figures are then whole-array numpy operations instead of a Python loop per row, which
is what keeps 100K rows x 5 tags to seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from instag_hf.errors import ConfigurationError
from instag_hf.normalization.steps.rule import rule_key


class Side:
    """One side's rows as flat arrays of distinct tag ids (CSR-like: ``ids`` + ``rows``)."""

    def __init__(self, ids: np.ndarray, rows: np.ndarray, n_rows: int) -> None:
        self.ids, self.rows = ids, rows
        self.sizes = np.bincount(rows, minlength=n_rows) if n_rows else np.zeros(0, dtype=np.int64)

    def mapped(self, table: np.ndarray) -> Side:
        """The same rows with ids translated by ``table`` (-1 drops), deduplicated per row."""
        ids = table[self.ids]
        keep = ids >= 0
        ids, rows = ids[keep], self.rows[keep]
        width = int(table.max(initial=0)) + 1
        codes = distinct(rows.astype(np.int64) * width + ids)
        return Side((codes % width).astype(np.int64), (codes // width).astype(np.int64), len(self.sizes))


def encode_side(rows: Sequence[Sequence[str | None] | None], side: str, spellings: dict[str, int]) -> Side:
    """Each row's distinct tags as ids; ``spellings`` (tag -> id) grows with unseen tags.

    Raises:
        ConfigurationError: A row is a bare string, or a tag is not a string.
    """
    ids: list[int] = []
    row_of: list[int] = []
    for index, tags in enumerate(rows):
        if tags is None:
            continue
        if isinstance(tags, str):
            raise ConfigurationError(
                f"{side}[{index}] is the string {tags[:40]!r}: each row must be a list of tags, e.g. [{tags[:40]!r}]."
            )
        seen: set[int] = set()
        for tag in tags:
            if tag is None:
                continue
            if not isinstance(tag, str):
                raise ConfigurationError(f"{side}[{index}] holds {tag!r} ({type(tag).__name__}): tags are strings.")
            if not tag.strip():
                continue
            tag_id = spellings.setdefault(tag, len(spellings))
            if tag_id not in seen:
                seen.add(tag_id)
                ids.append(tag_id)
                row_of.append(index)
    return Side(np.asarray(ids, dtype=np.int64), np.asarray(row_of, dtype=np.int64), len(rows))


def rule_keys(texts: list[str], counts: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Spelling id -> key id (-1: no key), and each key's name: its most frequent spelling (ties: smallest)."""
    key_ids: dict[str, int] = {}
    table = np.full(max(len(texts), 1), -1, dtype=np.int64)
    best: list[tuple[int, str]] = []
    for i, text in enumerate(texts):
        key = rule_key(text)
        if not key:
            continue
        k = key_ids.setdefault(key, len(key_ids))
        table[i] = k
        candidate = (-int(counts[i]), text)
        if k == len(best):
            best.append(candidate)
        elif candidate < best[k]:
            best[k] = candidate
    return table, [text for _, text in best]


def ranked(ids: np.ndarray, names: list[str]) -> list[tuple[str, int]]:
    """``(name, occurrences)`` of ``ids``, most frequent first, ties by name."""
    counts = np.bincount(ids, minlength=len(names))
    found = np.flatnonzero(counts)
    return sorted(((names[i], int(counts[i])) for i in found), key=lambda item: (-item[1], item[0]))


def distinct(codes: np.ndarray) -> np.ndarray:
    """Sorted distinct values (a sort and a comparison: faster than ``np.unique`` here)."""
    codes = np.sort(codes)
    return codes[np.concatenate([[True], codes[1:] != codes[:-1]])] if codes.size else codes


def found_in(values: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """Which ``values`` are in ``pool`` (by binary search in its sorted copy)."""
    pool = np.sort(pool)
    if pool.size == 0:
        return np.zeros(values.shape, dtype=bool)
    at = np.minimum(np.searchsorted(pool, values), pool.size - 1)
    return pool[at] == values


def exact_hits(p: Side, r: Side) -> tuple[np.ndarray, np.ndarray]:
    """Which tags of each side have an equal id in the same row of the other side."""
    width = int(max(p.ids.max(initial=-1), r.ids.max(initial=-1))) + 1
    p_codes = p.rows * width + p.ids
    r_codes = r.rows * width + r.ids
    return found_in(p_codes, r_codes), found_in(r_codes, p_codes)


def candidate_pairs(p: Side, r: Side) -> tuple[np.ndarray, np.ndarray]:
    """Every (predicted element, reference element) pair of the same row, as flat indexes."""
    starts = np.concatenate([[0], np.cumsum(r.sizes)[:-1]]) if len(r.sizes) else np.zeros(0, dtype=np.int64)
    counts = r.sizes[p.rows] if len(p.rows) else np.zeros(0, dtype=np.int64)
    total = int(counts.sum())
    pair_p = np.repeat(np.arange(len(p.ids)), counts)
    offsets = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    pair_r = np.repeat(starts[p.rows] if len(p.rows) else counts, counts) + offsets
    return pair_p, pair_r


def figures(p: Side, r: Side, pred_hit: np.ndarray, n_rows: int) -> dict[str, Any]:
    """Micro and macro precision, recall and F1 and the counts behind them (see the matching rules)."""
    matched = np.bincount(p.rows[pred_hit], minlength=n_rows).astype(np.float64)
    a = p.sizes.astype(np.float64)
    b = r.sizes.astype(np.float64)
    scored = (a + b) > 0
    m, a, b = matched[scored], a[scored], b[scored]
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(a > 0, m / a, 0.0)
        recall = np.where(b > 0, m / b, 0.0)
        f1 = 2 * m / (a + b)
    total_m, total_a, total_b = float(m.sum()), float(a.sum()), float(b.sum())
    rows = int(scored.sum())
    return dict(
        micro_precision=total_m / total_a if total_a else 0.0,
        micro_recall=total_m / total_b if total_b else 0.0,
        micro_f1=2 * total_m / (total_a + total_b) if total_a + total_b else 0.0,
        macro_precision=float(precision.mean()) if rows else 0.0,
        macro_recall=float(recall.mean()) if rows else 0.0,
        macro_f1=float(f1.mean()) if rows else 0.0,
        matched=int(total_m),
        predicted=int(total_a),
        referenced=int(total_b),
        rows=rows,
        empty_rows=n_rows - rows,
    )
