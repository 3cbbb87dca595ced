"""Reading a list-of-strings tag column as integer tag sets (shared by analysis and sampling).

Rows are read as Arrow batches and turned into numpy arrays: per row the number of tags,
and per tag occurrence an integer tag id (ids index a vocabulary in order of first
appearance). Nothing here builds per-row Python objects, so memory grows with the number
of tag occurrences (4 bytes each), not with Python lists. Batches are hashed in worker
threads, each on its own, and merged into one vocabulary in row order.

A row's tags are treated as a set: null items are dropped and a tag repeated inside one row
is kept once (``instag_tags`` is already de-duplicated by the normalizer; other columns
may not be).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from typing import TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset, DatasetDict, IterableDataset, IterableDatasetDict

from instag_hf.columns import missing_column
from instag_hf.errors import ConfigurationError, MissingColumnError

logger = logging.getLogger(__name__)

AnyDataset: TypeAlias = Dataset | IterableDataset

#: Rows per Arrow batch. Every batch adds its distinct tags to the one merge at the end
#: (~45K per batch on the 10M-row benchmark pool) and a worker holds one batch's ids
#: (~4.5 MB at 4.5 tags per row); a memory-mapped batch's strings are read in place, not copied.
BATCH_SIZE = 262_144


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


def row_ranges(offsets: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Occurrence positions of CSR ``rows``, row after row."""
    starts = offsets[rows]
    lengths = offsets[rows + 1] - starts
    before = np.zeros(len(rows), dtype=np.int64)
    np.cumsum(lengths[:-1], out=before[1:])
    return np.repeat(starts - before, lengths) + np.arange(int(lengths.sum()), dtype=np.int64)


def require_column(ds: AnyDataset, tag_column: str) -> None:
    """Raise :class:`MissingColumnError` when ``tag_column`` is known to be absent.

    An ``IterableDataset`` may not know its columns before reading; then the first batch
    is checked instead (see :func:`iter_local_batches`).
    """
    if isinstance(ds, (DatasetDict, IterableDatasetDict)):
        raise ConfigurationError(
            f"Got a {type(ds).__name__} of splits {', '.join(ds)}; pass one split, e.g. ds[{next(iter(ds), 'train')!r}]."
        )
    names = ds.column_names
    if names is not None and tag_column not in names:
        raise MissingColumnError(_missing_message(tag_column, names), column=tag_column)


def _missing_message(tag_column: str, names: list[str]) -> str:
    return missing_column(
        tag_column, names, otherwise="Or pass tag_column= naming a column that holds a list of strings per row."
    )


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


@dataclass(frozen=True)
class LocalBatch:
    """Tag sets of one Arrow batch, with ids local to the batch.

    Attributes:
        lengths: int64 tags per row (as sets: repeats and nulls not counted).
        ids: int32 local tag ids, row after row; local id ``i`` is ``distinct[i]``.
        distinct: the batch's tags in order of first appearance.
    """

    lengths: np.ndarray
    ids: np.ndarray
    distinct: pa.Array


#: Batches hashed ahead in worker threads (Arrow's hash kernels and most of numpy run
#: without the GIL); memory holds at most this many batches more than the caller keeps.
_LOOKAHEAD = max(1, min(4, pa.cpu_count()))
#: Below this many rows a dataset is read as one batch (splitting it saves less than it costs).
_MIN_SPLIT_ROWS = 32_768


def iter_local_batches(ds: AnyDataset, tag_column: str, batch_size: int = BATCH_SIZE) -> Iterator[LocalBatch]:
    """Yield each Arrow batch's tag sets, hashed in worker threads, in row order.

    Each batch is hashed on its own (one ``dictionary_encode``), so batches hash at once
    on as many cores as there are; :func:`merge_vocabularies` then gives the batches one
    vocabulary by looking up only their distinct tags (tens of thousands per batch, not
    millions of occurrences).

    Args:
        ds: dataset to read (only ``tag_column`` is read).
        tag_column: list-of-strings column.
        batch_size: rows per Arrow batch.

    Raises:
        MissingColumnError: the column does not exist.
        ConfigurationError: the column is not a list of strings.
    """
    require_column(ds, tag_column)
    # Reading one column instead of whole rows keeps the other columns' pages untouched.
    if isinstance(ds, Dataset):
        # Formatting to the column, rather than select_columns, builds no new table (whose
        # set-up walks every record batch: ~5 ms on a 10M-row file of 1,000-row batches).
        reader = ds.with_format("arrow", columns=[tag_column])
        if len(ds) > _MIN_SPLIT_ROWS:
            # At least one batch per worker: a pool smaller than two batches would hash in one thread.
            batch_size = min(batch_size, max(_MIN_SPLIT_ROWS, -(-len(ds) // _LOOKAHEAD)))
    else:
        reader = ds.select_columns([tag_column]).with_format("arrow")
    columns = (_checked(batch, tag_column) for batch in reader.iter(batch_size=batch_size))
    with ThreadPoolExecutor(max_workers=_LOOKAHEAD) as pool:
        pending: deque[Future[LocalBatch]] = deque()
        for column in columns:
            pending.append(pool.submit(_encode_locally, column))
            if len(pending) > _LOOKAHEAD:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def merge_vocabularies(distinct: list[pa.Array]) -> tuple[pa.Array, list[np.ndarray]]:
    """One vocabulary for batches read in order, and each batch's local-to-global ids.

    The batches' distinct tags, one after the other, are dictionary-encoded once: a tag's
    global id is then its rank of first appearance over the whole column, since each
    batch lists its tags in order of first appearance in it.

    Args:
        distinct: per batch, its tags (distinct, in order of first appearance).

    Returns:
        The vocabulary (``large_string``), and per batch an int32 array mapping local id
        ``i`` to its global id.
    """
    if not distinct:
        return pa.array([], pa.large_string()), []
    types = {array.type for array in distinct}
    if len(types) > 1:
        distinct = [array.cast(pa.large_string()) for array in distinct]
    encoded = pc.dictionary_encode(pa.chunked_array(distinct, distinct[0].type))
    vocabulary = _dictionary(encoded, pa.large_string())
    remaps = np.split(_indices(encoded), np.cumsum([len(array) for array in distinct])[:-1])
    return vocabulary.cast(pa.large_string()), remaps


def _dictionary(encoded: pa.ChunkedArray, type_: pa.DataType) -> pa.Array:
    """The dictionary every chunk of a dictionary-encoded ChunkedArray indexes into.

    Arrow gives all chunks the one dictionary of the whole array; the last chunk's is taken,
    which holds every value even if earlier chunks were ever given only a prefix of it.
    """
    return encoded.chunk(encoded.num_chunks - 1).dictionary if encoded.num_chunks else pa.array([], type_)


def _indices(encoded: pa.ChunkedArray) -> np.ndarray:
    """The int32 indices of a dictionary-encoded ChunkedArray, all chunks one after the other."""
    indices = [chunk.indices.to_numpy() for chunk in encoded.chunks]
    return np.concatenate(indices) if indices else np.zeros(0, dtype=np.int32)


def _checked(batch: pa.Table, tag_column: str) -> pa.ChunkedArray:
    if tag_column not in batch.column_names:
        raise MissingColumnError(_missing_message(tag_column, batch.column_names), column=tag_column)
    column = batch.column(tag_column)
    _check_type(tag_column, column.type)
    return column


def _encode_locally(column: pa.ChunkedArray) -> LocalBatch:
    """The batch's tag sets with local ids (each row's repeats dropped).

    One ``dictionary_encode`` over all the batch's chunks: files written by ``Dataset.map``
    hold record batches of 1,000 rows, and a hash table per chunk, or combining the
    chunks first (a copy of every string), made reading slower (10M rows: the copy alone
    took 0.5 s).
    """
    lengths, flat = _flatten(column)
    encoded = pc.dictionary_encode(flat)
    if isinstance(encoded, pa.ChunkedArray):
        distinct, ids = _dictionary(encoded, flat.type), _indices(encoded)
    else:
        distinct, ids = encoded.dictionary, encoded.indices.to_numpy()
    offsets = list_offsets(lengths)
    repeated = _repeats(ids, offsets)
    if repeated.size:
        rows_hit = np.searchsorted(offsets, repeated, side="right") - 1
        lengths = lengths - np.bincount(rows_hit, minlength=len(lengths))
        ids = np.delete(ids, repeated)
    return LocalBatch(lengths, ids, distinct)


def _flatten(column: pa.ChunkedArray) -> tuple[np.ndarray, pa.Array | pa.ChunkedArray]:
    """Tags per row (int64) and the non-null tags, row after row."""
    rows = len(column)
    if pa.types.is_null(column.type) or rows == 0:
        return np.zeros(rows, dtype=np.int64), pa.array([], pa.string())
    flat = pc.list_flatten(column)
    if not flat.null_count:
        # Read from the list offsets: no pass over the occurrences.
        return pc.list_value_length(column).fill_null(0).to_numpy().astype(np.int64), flat
    # Null items: rare (our columns never hold them), so the chunks are combined to count
    # each row's valid items with one list_parent_indices.
    column = column.combine_chunks()
    flat = pc.list_flatten(column)
    valid = flat.is_valid()
    parents = pc.list_parent_indices(column).filter(valid).to_numpy(zero_copy_only=False)
    return np.bincount(parents, minlength=rows).astype(np.int64), flat.filter(valid)


#: Rows checked for repeats at a time: the check's uint64 temporaries then stay in cache
#: (on 1M rows the first test took 17 ms in 65K-row batches, 8 ms in 16K-row blocks).
_CHECK_ROWS = 16_384


def _repeats(ids: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Positions (ascending) of the occurrences whose tag appeared earlier in their row.

    Rows are cleared without sorting by two slot tests (:func:`_slot_clashes`): with slot
    ``id mod 64`` about 10% of rows at 4.5 tags per row stay suspect; with bits 6-11 of
    the id folded in (ids sharing their low bits differ in the next ones) about 2% of all
    rows fail both. Only those are sorted by (row, tag), and the rows that do repeat a tag
    compared tag by tag. On 1M rows: ~14 ms, where sorting every (row, tag) took ~22 ms.
    """
    suspects = []
    for start in range(0, len(offsets) - 1, _CHECK_ROWS):
        bounds = offsets[start : start + _CHECK_ROWS + 1]
        block, local, lengths = ids[bounds[0] : bounds[-1]], bounds - bounds[0], np.diff(bounds)
        clashes = _slot_clashes(block & 63, local, lengths)
        if clashes.any():
            clashes &= _slot_clashes((block ^ (block >> 6)) & 63, local, lengths)
            suspects.append(start + np.flatnonzero(clashes))
    if not suspects:
        return np.zeros(0, dtype=np.int64)
    rows = np.concatenate(suspects)
    occurrences = row_ranges(offsets, rows)
    tags, lengths = ids[occurrences], offsets[rows + 1] - offsets[rows]
    stride = int(tags.max(initial=0)) + 1
    keys = np.repeat(np.arange(rows.size, dtype=np.int64), lengths) * stride + tags
    keys.sort()
    hit = np.unique(keys[1:][keys[1:] == keys[:-1]] // stride)
    inner = row_ranges(list_offsets(lengths), hit)
    return occurrences[inner[_repeats_within_rows(tags[inner], lengths[hit])]]


def list_offsets(lengths: np.ndarray) -> np.ndarray:
    """Arrow-style offsets (``rows + 1`` int64 values) of lists with these lengths."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


def _slot_clashes(slots: np.ndarray, offsets: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Per row: do two of its occurrences share a slot (0-63)? True for every row that repeats a tag.

    Each slot stands for one bit and a row's bits are summed (a cumulative sum read at the
    row offsets). A sum of distinct one-hot bits has one set bit per term; two equal bits
    carry (or overflow), which leaves fewer set bits than terms. So a row whose sum has as
    many set bits as it has occurrences has all its slots, hence all its tags, distinct.
    """
    sums = np.zeros(slots.size + 1, dtype=np.uint64)
    np.left_shift(np.uint64(1), slots, out=sums[1:], dtype=np.uint64, casting="unsafe")
    np.cumsum(sums, out=sums)
    at_offsets = sums[offsets]
    return _popcount(at_offsets[1:] - at_offsets[:-1]) != lengths


def _popcount(values: np.ndarray) -> np.ndarray:
    """Set bits of each uint64 (``np.bitwise_count`` from numpy 2.0 on)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(values)
    m1, m2, m4, h01 = (
        np.uint64(v) for v in (0x5555555555555555, 0x3333333333333333, 0x0F0F0F0F0F0F0F0F, 0x0101010101010101)
    )
    values = values - ((values >> np.uint64(1)) & m1)
    values = (values & m2) + ((values >> np.uint64(2)) & m2)
    values = (values + (values >> np.uint64(4))) & m4
    return (values * h01) >> np.uint64(56)


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
    batches = list(iter_local_batches(ds, tag_column, batch_size))
    vocabulary, remaps = merge_vocabularies([batch.distinct for batch in batches])
    lengths = np.concatenate([batch.lengths for batch in batches]) if batches else np.zeros(0, dtype=np.int64)
    offsets = list_offsets(lengths)
    tag_ids = np.empty(int(offsets[-1]), dtype=np.int32)
    starts = np.cumsum([0] + [batch.ids.size for batch in batches])

    def to_global(i: int) -> None:
        # Written in place (mode="clip": numpy buffers out= under the default "raise").
        np.take(remaps[i], batches[i].ids, out=tag_ids[starts[i] : starts[i + 1]], mode="clip")

    with ThreadPoolExecutor(max_workers=_LOOKAHEAD) as pool:
        list(pool.map(to_global, range(len(batches))))
    logger.debug("read %d rows, %d tag occurrences, %d tags", len(lengths), len(tag_ids), len(vocabulary))
    return TagSets(offsets=offsets, tag_ids=tag_ids, vocabulary=tuple(vocabulary.to_pylist()))
