"""Applying a fitted mapping to an Arrow ``instag_raw_tags`` column, without per-row Python.

``ds.map(normalizer, batched=True)`` and Ray Data's ``map_batches(normalizer,
batch_format="pyarrow")`` hand the normalizer an Arrow table. Reading its list-of-struct
column as Python (a dict per tag, a list per row) cost more than everything else the
normalizer does; here the column is flattened with pyarrow compute, only the batch's
distinct raw spellings go through Python (the same lookup as one row at a time), and the
per-row union is a numpy "first occurrence of (row, tag)".

    >>> normalized_column(table.column("instag_raw_tags"), normalizer.canonical)
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


def normalized_column(column: pa.Array | pa.ChunkedArray, lookup: Callable[[str], str | None]) -> pa.Array:
    """Per row, the canonical tags of its raw tags: de-duplicated, in order of first appearance.

    Args:
        column: An ``instag_raw_tags`` column (list<struct<turn, tag, explanation>>, or
            all nulls).
        lookup: Raw spelling -> canonical tag, ``None`` when it is dropped; called once per
            distinct non-empty spelling of the column.

    Returns:
        A ``list<string>`` array with one entry per row (an empty list for a null row).

    Raises:
        NormalizationError: The column has another type than the tagger writes.
    """
    offsets, names, ids = _canonical_ids(column, lookup)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(names, pa.string()).take(pa.array(ids)))


def normalized_rows(column: pa.Array | pa.ChunkedArray, lookup: Callable[[str], str | None]) -> list[np.ndarray]:
    """As :func:`normalized_column`, as one NumPy string array per row.

    ``Dataset.map`` accepts lists, NumPy arrays and pandas Series from a batched function,
    not Arrow arrays; a list of NumPy arrays it turns into one Arrow list array at once, and
    the rows are views of one array, so no Python string is made per tag.

    Raises:
        NormalizationError: The column has another type than the tagger writes.
    """
    offsets, names, ids = _canonical_ids(column, lookup)
    # An empty row is an empty *string* array: datasets reads its dtype, never list<null>.
    values = np.array(names, dtype=str)[ids] if names else np.array([], dtype=str)
    return np.split(values, offsets[1:-1])


def _canonical_ids(
    column: pa.Array | pa.ChunkedArray, lookup: Callable[[str], str | None]
) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(int32 row offsets, canonical names, name id of every kept tag, row after row)."""
    rows = len(column)
    if pa.types.is_null(column.type):  # a column of nulls only: rows without tags
        return np.zeros(rows + 1, np.int32), [], np.zeros(0, np.int64)
    check_column_type(column.type)
    lists = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    items = pc.list_flatten(lists)  # null rows hold no items
    parents = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False).astype(np.int64)
    tags = pc.struct_field(items, "tag")  # null for a null item
    # The row path skips null and empty spellings before looking anything up.
    present = pc.fill_null(pc.greater(pc.binary_length(tags), 0), False)
    encoded = pc.dictionary_encode(tags.filter(present))
    canonical: dict[str, int] = {}
    ids_of_spelling = np.fromiter(
        (
            -1 if (found := lookup(spelling)) is None else canonical.setdefault(found, len(canonical))
            for spelling in encoded.dictionary.to_pylist()
        ),
        dtype=np.int64,
        count=len(encoded.dictionary),
    )
    ids = ids_of_spelling[encoded.indices.to_numpy(zero_copy_only=False)]
    owners = parents[present.to_numpy(zero_copy_only=False)]
    kept = ids >= 0
    ids, owners = ids[kept], owners[kept]
    # First occurrence of each (row, tag), in occurrence order: rows stay in order, and
    # within a row the tags keep the order they first appear in.
    _, first = np.unique(owners * max(len(canonical), 1) + ids, return_index=True)
    first.sort()
    offsets = np.zeros(rows + 1, dtype=np.int32)
    np.cumsum(np.bincount(owners[first], minlength=rows), out=offsets[1:])
    return offsets, list(canonical), ids[first]
