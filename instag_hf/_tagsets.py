"""Reading a list-of-strings tag column as integer tag sets (shared by analysis and sampling).

Rows are read as Arrow batches and turned into numpy arrays: per row the number of tags,
and per tag occurrence an integer tag id (ids index a vocabulary in order of first
appearance). Nothing here builds per-row Python objects, so memory grows with the number
of tag occurrences (4 bytes each), not with Python lists.

A row's tags are treated as a set: null items are dropped and a tag repeated inside one row
is kept once (``instag_tags`` is already de-duplicated by the normalizer; other columns
may not be).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset, IterableDataset

from instag_hf.errors import ConfigurationError, MissingColumnError

logger = logging.getLogger(__name__)

AnyDataset = Dataset | IterableDataset

#: Rows per Arrow batch: large enough that per-batch overhead vanishes, small enough that
#: the strings of one batch stay a few MB.
BATCH_SIZE = 65_536

#: Which step of the chain writes each of our columns, for errors that say what to do next.
_MADE_BY = {
    "instag_tags": "ds = ds.map(normalizer, batched=True) with normalizer = instag_hf.TagNormalizer().fit(ds)",
    "instag_raw_tags": "ds = ds.map(instag_hf.tag, batched=True)",
}


@dataclass(frozen=True)
class TagSets:
    """Tag sets of every row in CSR form.

    Attributes:
        offsets: int64 array of ``rows + 1`` offsets into ``tag_ids``.
        tag_ids: int32 array, the tag ids of every row one after the other.
        vocabulary: tag strings, ``vocabulary[i]`` is the tag with id ``i``.
    """

    offsets: np.ndarray
    tag_ids: np.ndarray
    vocabulary: tuple[str, ...]

    @property
    def rows(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def require_column(ds: AnyDataset, tag_column: str) -> None:
    """Raise :class:`MissingColumnError` when ``tag_column`` is known to be absent.

    An ``IterableDataset`` may not know its columns before reading; then the first batch
    is checked instead (see :func:`iter_encoded_batches`).
    """
    names = ds.column_names
    if names is not None and tag_column not in names:
        raise MissingColumnError(_missing_message(tag_column, names), column=tag_column)


def _missing_message(tag_column: str, names: list[str]) -> str:
    made_by = _MADE_BY.get(tag_column)
    hint = (
        f"It is written by an earlier step: {made_by}."
        if made_by
        else "Pass tag_column= naming a column that holds a list of strings per row."
    )
    return f"The dataset has no column {tag_column!r} (columns: {', '.join(names) or 'none'}). {hint}"


def _check_type(tag_column: str, type_: pa.DataType) -> None:
    listy = pa.types.is_list(type_) or pa.types.is_large_list(type_) or pa.types.is_fixed_size_list(type_)
    if listy and (pa.types.is_string(type_.value_type) or pa.types.is_large_string(type_.value_type)):
        return
    if pa.types.is_null(type_):  # a column with only nulls (e.g. from an empty pandas frame)
        return
    raise ConfigurationError(
        f"Column {tag_column!r} holds {type_}, not a list of strings per row; "
        "pass tag_column= naming a list<string> column such as 'instag_tags'.",
        column=tag_column,
    )


def iter_encoded_batches(
    ds: AnyDataset, tag_column: str, vocabulary: dict[str, int], batch_size: int = BATCH_SIZE
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(lengths, tag_ids)`` per Arrow batch, growing ``vocabulary`` as tags appear.

    Args:
        ds: dataset to read (only ``tag_column`` is read).
        tag_column: list-of-strings column.
        vocabulary: tag -> id mapping, updated in place; new tags get the next id.
        batch_size: rows per Arrow batch.

    Returns:
        An iterator of int64 ``lengths`` (tags per row) and int32 ``tag_ids`` (row after row).

    Raises:
        MissingColumnError: the column does not exist.
        ConfigurationError: the column is not a list of strings.
    """
    require_column(ds, tag_column)
    # Reading one column instead of whole rows keeps the other columns' pages untouched.
    reader = ds.select_columns([tag_column]).with_format("arrow")
    for batch in reader.iter(batch_size=batch_size):
        if tag_column not in batch.column_names:
            raise MissingColumnError(_missing_message(tag_column, batch.column_names), column=tag_column)
        column = batch.column(tag_column)
        _check_type(tag_column, column.type)
        yield _encode(column.combine_chunks(), vocabulary)


def _encode(column: pa.Array, vocabulary: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    rows = len(column)
    if pa.types.is_null(column.type) or rows == 0:
        return np.zeros(rows, dtype=np.int64), np.zeros(0, dtype=np.int32)
    flat = pc.list_flatten(column)
    parents = pc.list_parent_indices(column)
    if flat.null_count:
        valid = flat.is_valid()
        flat, parents = flat.filter(valid), parents.filter(valid)
    encoded = pc.dictionary_encode(flat)
    local = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    parent = parents.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    local_tags = encoded.dictionary.to_pylist()
    if len(local):
        # A hash-based distinct count is O(n); only when it finds duplicates do we pay a sort.
        keys = parent * len(local_tags) + local
        if pc.count_distinct(pa.array(keys)).as_py() != len(keys):
            _, first = np.unique(keys, return_index=True)
            keep = np.sort(first)
            local, parent = local[keep], parent[keep]
    to_global = np.fromiter(
        (vocabulary.setdefault(tag, len(vocabulary)) for tag in local_tags), dtype=np.int32, count=len(local_tags)
    )
    lengths = np.bincount(parent, minlength=rows).astype(np.int64, copy=False)
    return lengths, to_global[local]


def read_tag_sets(ds: AnyDataset, tag_column: str, batch_size: int = BATCH_SIZE) -> TagSets:
    """Read every row's tag set into :class:`TagSets`.

    Args:
        ds: dataset to read.
        tag_column: list-of-strings column.
        batch_size: rows per Arrow batch.

    Returns:
        The rows' tag sets, row ``i`` of the result being row ``i`` of ``ds``.

    Raises:
        MissingColumnError: the column does not exist.
        ConfigurationError: the column is not a list of strings.

    Example:
        >>> ts = read_tag_sets(Dataset.from_dict({"instag_tags": [["a", "b"], []]}), "instag_tags")
        >>> ts.lengths.tolist(), ts.vocabulary
        ([2, 0], ('a', 'b'))
    """
    vocabulary: dict[str, int] = {}
    all_lengths, all_ids = [], []
    for lengths, ids in iter_encoded_batches(ds, tag_column, vocabulary, batch_size):
        all_lengths.append(lengths)
        all_ids.append(ids)
    lengths = np.concatenate(all_lengths) if all_lengths else np.zeros(0, dtype=np.int64)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    tag_ids = np.concatenate(all_ids) if all_ids else np.zeros(0, dtype=np.int32)
    logger.debug("read %d rows, %d tag occurrences, %d tags", len(lengths), len(tag_ids), len(vocabulary))
    return TagSets(offsets=offsets, tag_ids=tag_ids, vocabulary=tuple(vocabulary))
