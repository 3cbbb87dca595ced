"""Reading a list-of-strings tag column as integer tag sets (shared by analysis and sampling).

Rows are read as Arrow batches and turned into numpy arrays: per row the number of tags,
and per tag occurrence an integer tag id (ids index a vocabulary in order of first
appearance). Nothing here builds per-row Python objects, so memory grows with the number
of tag occurrences (4 bytes each), not with Python lists. Arrow hashes the next batches'
strings in worker threads while the current batch is finished.

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

#: Rows per Arrow batch. ``index_in`` rebuilds the vocabulary's hash table on every call
#: (~0.15 ms at 6.6K tags), so fewer batches read faster (1M rows: 77 ms at 262K rows per
#: batch, 83 ms at 64K); the strings of one batch stay ~20 MB at 4.5 tags per row.
BATCH_SIZE = 262_144

#: Chunks shorter than this on average are combined before encoding (see ``_checked``).
_MIN_CHUNK_ROWS = 65_536

#: Which step of the chain writes each of our columns, for errors that say what to do next.


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


class Vocabulary:
    """Tag strings in order of first appearance; a tag's id is its position in that order.

    Batches are mapped onto it with Arrow's hash kernels, in two steps so that the costly
    one can run in a worker thread: ``index_in`` against the tags known at some point (one
    hash per occurrence, no Python per tag; ~30% cheaper than ``dictionary_encode``: 42 vs
    59 ms on 4.5M tags), then :meth:`encode`, batch after batch, which gives ids to what
    the lookup missed (tags added since, or new ones) with ``dictionary_encode`` over those
    occurrences only.
    """

    def __init__(self) -> None:
        self._chunks: list[pa.Array] = []
        self._array: pa.Array | None = None
        self._cast: dict[pa.DataType, pa.Array] = {}
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def array(self, type_: pa.DataType = pa.large_string()) -> pa.Array:
        """The tags as an array of ``type_`` (``string`` or ``large_string``)."""
        if self._array is None:
            chunks = [chunk.cast(pa.large_string()) for chunk in self._chunks]
            self._array = pa.concat_arrays(chunks) if chunks else pa.array([], pa.large_string())
            self._cast = {pa.large_string(): self._array}
        if type_ not in self._cast:
            self._cast[type_] = self._array.cast(type_)
        return self._cast[type_]

    def tags(self) -> tuple[str, ...]:
        return tuple(self.array().to_pylist())

    def seed(self, values: pa.Array) -> pa.Array:
        """Make the tags of ``values`` the first ones; their ids, as ``index_in`` would give them.

        The first batch is dictionary-encoded whole rather than looked up, so that the
        batches looked up after it (ahead, in worker threads) already find its tags: on
        the benchmark pool this does ~4 ms less work than seeding from a prefix.
        """
        encoded = pc.dictionary_encode(values)
        self._add(encoded.dictionary)
        return encoded.indices

    def encode(self, values: pa.Array, found: pa.Array) -> np.ndarray:
        """Ids (int32) of the non-null strings ``values``, adding tags not seen before.

        ``found`` is ``pc.index_in(values, value_set=self.array(values.type))`` taken at any
        earlier point (in any thread): the tags it misses were added since or are new.
        """
        if not found.null_count:
            # Zero-copy (index_in gives int32): the common case of a batch without new tags.
            return found.to_numpy()
        ids = np.array(found.fill_null(-1).to_numpy(), dtype=np.int32)
        missed = ids < 0
        encoded = pc.dictionary_encode(values.filter(pa.array(missed)))
        known = pc.index_in(encoded.dictionary, value_set=self.array(values.type)).fill_null(-1)
        known = np.array(known.to_numpy(), dtype=np.int32)
        new = known < 0
        known[new] = self._size + np.arange(np.count_nonzero(new), dtype=np.int32)
        self._add(encoded.dictionary.filter(pa.array(new)))
        ids[missed] = known[encoded.indices.to_numpy(zero_copy_only=False)]
        return ids

    def _add(self, tags: pa.Array) -> None:
        self._chunks.append(tags)
        self._size += len(tags)
        self._array = None


#: Batches looked up ahead in worker threads (``index_in`` runs without the GIL).
_LOOKAHEAD = max(1, min(4, pa.cpu_count()))


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
    # The next chunks are hashed in worker threads while this one is finished here: on 2
    # idle cores 1M rows read in ~60 ms instead of ~77 ms (no gain when the cores are busy).
    with ThreadPoolExecutor(max_workers=_LOOKAHEAD) as pool:
        pending: deque[tuple[np.ndarray, pa.Array, Future | pa.Array]] = deque()
        for chunk in chunks:
            lengths, flat = _flatten(chunk)
            if len(vocabulary):
                found = pool.submit(pc.index_in, flat, value_set=vocabulary.array(flat.type))
            else:
                found = vocabulary.seed(flat)
            pending.append((lengths, flat, found))
            if len(pending) > _LOOKAHEAD:
                yield _encode(vocabulary, *pending.popleft())
        while pending:
            yield _encode(vocabulary, *pending.popleft())


def _checked(batch: pa.Table, tag_column: str) -> list[pa.Array]:
    if tag_column not in batch.column_names:
        raise MissingColumnError(_missing_message(tag_column, batch.column_names), column=tag_column)
    column = batch.column(tag_column)
    _check_type(tag_column, column.type)
    if column.num_chunks > 1 and len(column) < _MIN_CHUNK_ROWS * column.num_chunks:
        # Files written by Dataset.map hold record batches of 1,000 rows: encoded one by
        # one, the per-chunk cost (a hash table of the vocabulary, ~20 numpy calls) made
        # reading 1M rows at 40K tags 7x slower (1.6 s vs 0.23 s) than copying them together.
        return [column.combine_chunks()]
    return column.chunks


def _flatten(column: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Tags per row (int64) and the non-null tags, row after row."""
    rows = len(column)
    if pa.types.is_null(column.type) or rows == 0:
        return np.zeros(rows, dtype=np.int64), pa.array([], pa.string())
    flat = pc.list_flatten(column)
    if not flat.null_count:
        # Read from the list offsets: no pass over the occurrences.
        return pc.list_value_length(column).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64), flat
    valid = flat.is_valid()
    parents = pc.list_parent_indices(column).filter(valid).to_numpy(zero_copy_only=False)
    return np.bincount(parents, minlength=rows).astype(np.int64), flat.filter(valid)


def _encode(
    vocabulary: Vocabulary, lengths: np.ndarray, flat: pa.Array, found: Future | pa.Array
) -> tuple[np.ndarray, np.ndarray]:
    """Tags per row and the rows' tag ids, one after the other, each row's repeats dropped."""
    ids = vocabulary.encode(flat, found.result() if isinstance(found, Future) else found)
    offsets = list_offsets(lengths)
    repeated = _repeats(ids, offsets)
    if repeated.size:
        rows_hit = np.searchsorted(offsets, repeated, side="right") - 1
        lengths = lengths - np.bincount(rows_hit, minlength=len(lengths))
        ids = np.delete(ids, repeated)
    return lengths, ids


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
    vocabulary = Vocabulary()
    all_lengths, all_ids = [], []
    for lengths, ids in iter_encoded_batches(ds, tag_column, vocabulary, batch_size):
        all_lengths.append(lengths)
        all_ids.append(ids)
    lengths = np.concatenate(all_lengths) if all_lengths else np.zeros(0, dtype=np.int64)
    offsets = list_offsets(lengths)
    tag_ids = np.concatenate(all_ids) if all_ids else np.zeros(0, dtype=np.int32)
    logger.debug("read %d rows, %d tag occurrences, %d tags", len(lengths), len(tag_ids), len(vocabulary))
    return TagSets(offsets=offsets, tag_ids=tag_ids, vocabulary=vocabulary.tags())
