"""Applying a fitted mapping to an Arrow ``instag_raw_tags`` column, without per-row Python.

``ds.map(normalizer, batched=True)`` and Ray Data's ``map_batches(normalizer,
batch_format="pyarrow")`` hand the normalizer an Arrow table. Reading its list-of-struct
column as Python (a dict per tag, a list per row) cost more than everything else the
normalizer does; here the column is flattened with pyarrow compute, only the batch's
distinct raw spellings are looked up, in the fitted spellings by Arrow's hash kernel (a
spelling it lacks by the same rule as one row at a time), and the per-row union is a
numpy "first occurrence of (row, tag)".

    >>> normalized_column(table.column("instag_raw_tags"), SpellingTable(mapping, dropped, lookup))
    <pyarrow.lib.ListArray object ...>
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from instag_hf.normalization.occurrences import check_column_type

#: The Arrow type of ``instag_tags`` as the normalizer writes it.
TAGS_TYPE = pa.list_(pa.string())


class SpellingTable:
    """Every spelling a fit saw and its canonical tag, as Arrow, for vectorised look-ups.

    Args:
        mapping: Raw spelling -> canonical tag (kept spellings).
        dropped: Spellings seen and dropped.
        lookup: The normalizer's own look-up, for spellings the table does not hold
            (unseen ones, or seen ones with surrounding whitespace).
    """

    def __init__(self, mapping: dict[str, str], dropped: frozenset[str], lookup: Callable[[str], str | None]) -> None:
        self.names = sorted(set(mapping.values()))
        self._index = {name: i for i, name in enumerate(self.names)}
        self.spellings = pa.array([*mapping, *dropped], pa.string())
        ids = [self._index[name] for name in mapping.values()] + [-1] * len(dropped)
        self.ids = np.array(ids, dtype=np.int64)
        self.lookup = lookup

    def ids_of(self, spellings: pa.Array) -> np.ndarray:
        """Canonical id (index into ``names``) of each distinct spelling, -1 when dropped."""
        found = pc.index_in(spellings, value_set=self.spellings.cast(spellings.type))
        out = np.full(len(spellings), -1, dtype=np.int64)
        hit = found.is_valid().to_numpy(zero_copy_only=False)
        out[hit] = self.ids[found.filter(hit).to_numpy(zero_copy_only=False)]
        misses = np.flatnonzero(~hit)
        # Not in the table: the one look-up rule, one call per distinct spelling.
        for position, spelling in zip(misses.tolist(), spellings.take(pa.array(misses)).to_pylist()):
            name = self.lookup(spelling)
            if name is not None:
                if name not in self._index:  # unknown="keep": a tag of its own
                    self._index[name] = len(self.names)
                    self.names.append(name)
                out[position] = self._index[name]
        return out


def normalized_column(column: pa.Array | pa.ChunkedArray, table: SpellingTable) -> pa.Array:
    """Per row, the canonical tags of its raw tags: de-duplicated, in order of first appearance.

    Args:
        column: An ``instag_raw_tags`` column (list<struct<turn, tag, explanation>>, or
            all nulls).
        table: The fitted spellings; a spelling it lacks goes through its ``lookup``.

    Returns:
        A ``list<string>`` array with one entry per row (an empty list for a null row).

    Raises:
        NormalizationError: The column has another type than the tagger writes.
    """
    offsets, ids = _canonical_ids(column, table)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(table.names, pa.string()).take(pa.array(ids)))


def _canonical_ids(column: pa.Array | pa.ChunkedArray, table: SpellingTable) -> tuple[np.ndarray, np.ndarray]:
    """(int32 row offsets, canonical id of every kept tag, row after row)."""
    rows = len(column)
    if pa.types.is_null(column.type):  # a column of nulls only: rows without tags
        return np.zeros(rows + 1, np.int32), np.zeros(0, np.int64)
    check_column_type(column.type)
    lists = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    items = pc.list_flatten(lists)  # null rows hold no items
    parents = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False).astype(np.int64)
    tags = pc.struct_field(items, "tag")  # null for a null item
    # The row path skips null and empty spellings before looking anything up.
    present = pc.fill_null(pc.greater(pc.binary_length(tags), 0), False)
    encoded = pc.dictionary_encode(tags.filter(present))
    ids = table.ids_of(encoded.dictionary)[encoded.indices.to_numpy(zero_copy_only=False)]
    owners = parents[present.to_numpy(zero_copy_only=False)]
    kept = ids >= 0
    ids, owners = ids[kept], owners[kept]
    # First occurrence of each (row, tag), in occurrence order: rows stay in order, and
    # within a row the tags keep the order they first appear in.
    _, first = np.unique(owners * max(len(table.names), 1) + ids, return_index=True)
    first.sort()
    offsets = np.zeros(rows + 1, dtype=np.int32)
    np.cumsum(np.bincount(owners[first], minlength=rows), out=offsets[1:])
    return offsets, ids[first]
