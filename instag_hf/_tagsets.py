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
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset, DatasetDict, IterableDataset, IterableDatasetDict

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

    @cached_property
    def lengths(self) -> np.ndarray:
        """Tags per row (int64)."""
        return np.diff(self.offsets)


def require_column(ds: AnyDataset, tag_column: str) -> None:
    """Raise :class:`MissingColumnError` when ``tag_column`` is known to be absent.

    An ``IterableDataset`` may not know its columns before reading; then the first batch
    is checked instead (see :func:`iter_encoded_batches`).
    """
    if isinstance(ds, (DatasetDict, IterableDatasetDict)):
        raise ConfigurationError(
            f"Got a {type(ds).__name__} of splits {', '.join(ds)}; pass one split, e.g. ds[{next(iter(ds), 'train')!r}]."
        )
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


class Vocabulary:
    """Tag strings in order of first appearance; a tag's id is its position in that order.

    Chunks are mapped onto it with Arrow's hash kernels: ``index_in`` for the tags already
    known (one hash per occurrence, no Python per tag), ``dictionary_encode`` only for the
    occurrences of new ones.
    """

    def __init__(self) -> None:
        self._chunks: list[pa.Array] = []
        self._array: pa.Array | None = None
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def array(self) -> pa.Array:
        if self._array is None:
            chunks = [chunk.cast(pa.large_string()) for chunk in self._chunks]
            self._array = pa.concat_arrays(chunks) if chunks else pa.array([], pa.large_string())
        return self._array

    def tags(self) -> tuple[str, ...]:
        return tuple(self.array().to_pylist())

    def encode(self, values: pa.Array) -> np.ndarray:
        """Ids (int32) of the non-null strings ``values``, adding tags not seen before."""
        if self._size:
            known = self.array() if values.type == pa.large_string() else self.array().cast(values.type)
            found = pc.index_in(values, value_set=known).fill_null(-1)
            ids = found.to_numpy(zero_copy_only=False).astype(np.int32)
        else:
            ids = np.full(len(values), -1, dtype=np.int32)
        new = ids < 0
        if new.any():
            encoded = pc.dictionary_encode(values.filter(pa.array(new)))
            ids[new] = self._size + encoded.indices.to_numpy(zero_copy_only=False)
            self._chunks.append(encoded.dictionary)
            self._size += len(encoded.dictionary)
            self._array = None
        return ids


def iter_encoded_batches(
    ds: AnyDataset, tag_column: str, vocabulary: Vocabulary, batch_size: int = BATCH_SIZE
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(lengths, tag_ids)`` per Arrow chunk, growing ``vocabulary`` as tags appear.

    Args:
        ds: dataset to read (only ``tag_column`` is read).
        tag_column: list-of-strings column.
        vocabulary: updated in place; new tags get the next id.
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
    # Chunks are encoded as they are: combining a batch that straddles two record batches
    # of the Arrow file would copy it.
    chunks = (chunk for batch in reader.iter(batch_size=batch_size) for chunk in _checked(batch, tag_column))
    for chunk in chunks:
        yield _encode(chunk, vocabulary)


def _checked(batch: pa.Table, tag_column: str) -> list[pa.Array]:
    if tag_column not in batch.column_names:
        raise MissingColumnError(_missing_message(tag_column, batch.column_names), column=tag_column)
    column = batch.column(tag_column)
    _check_type(tag_column, column.type)
    return column.chunks


def _encode(column: pa.Array, vocabulary: Vocabulary) -> tuple[np.ndarray, np.ndarray]:
    """Tags per row and the rows' tag ids, one after the other."""
    rows = len(column)
    if pa.types.is_null(column.type) or rows == 0:
        return np.zeros(rows, dtype=np.int64), np.zeros(0, dtype=np.int32)
    flat = pc.list_flatten(column)
    parents = pc.list_parent_indices(column)
    if flat.null_count:
        valid = flat.is_valid()
        flat, parents = flat.filter(valid), parents.filter(valid)
        lengths = np.bincount(parents.to_numpy(zero_copy_only=False), minlength=rows).astype(np.int64)
    else:
        # Read from the list offsets: no pass over the occurrences.
        lengths = pc.list_value_length(column).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    ids = vocabulary.encode(flat)
    parent = parents.to_numpy(zero_copy_only=False)
    if _has_repeats(parent, ids, len(vocabulary)):
        repeated = _repeats_within_rows(ids, lengths)
        ids, parent = ids[~repeated], parent[~repeated]
        lengths = np.bincount(parent, minlength=rows).astype(np.int64, copy=False)
    return lengths, ids


def _has_repeats(parent: np.ndarray, local: np.ndarray, distinct: int) -> bool:
    # One sort of (row, tag) keys answers "any repeat at all?" in a few ms per batch
    # (numpy's SIMD sort); the common answer is no, and then nothing else runs.
    if local.size < 2:
        return False
    dtype = np.int32 if len(parent) * max(distinct, 1) < 2**31 else np.int64
    keys = np.sort(parent.astype(dtype) * dtype(distinct) + local.astype(dtype))
    return bool(np.any(keys[1:] == keys[:-1]))


def _repeats_within_rows(tags: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Mask of occurrences whose tag already appeared earlier in the same row.

    Compares each occurrence with the ones 1, 2, ... places before it in its row: the work
    is the number of pairs inside rows (about 10 per row at 4.5 tags), and the first
    occurrence of each tag keeps its place.
    """
    repeated = np.zeros(tags.size, dtype=bool)
    starts = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    position = np.arange(tags.size, dtype=np.int64) - np.repeat(starts, lengths)
    candidates = np.flatnonzero(position >= 1)
    distance = 1
    while candidates.size:
        repeated[candidates[tags[candidates] == tags[candidates - distance]]] = True
        distance += 1
        candidates = candidates[position[candidates] >= distance]
    return repeated


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
    vocabulary = Vocabulary()
    all_lengths, all_ids = [], []
    for lengths, ids in iter_encoded_batches(ds, tag_column, vocabulary, batch_size):
        all_lengths.append(lengths)
        all_ids.append(ids)
    lengths = np.concatenate(all_lengths) if all_lengths else np.zeros(0, dtype=np.int64)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    tag_ids = np.concatenate(all_ids) if all_ids else np.zeros(0, dtype=np.int32)
    logger.debug("read %d rows, %d tag occurrences, %d tags", len(lengths), len(tag_ids), len(vocabulary))
    return TagSets(offsets=offsets, tag_ids=tag_ids, vocabulary=vocabulary.tags())
