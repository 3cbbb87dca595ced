"""Tag only the rows that were not tagged before: row keys and a store of earlier tags.

A row's key is the sha256 of its user queries (turn and text, as the tagger reads them),
so it does not change when other columns, the row order or the file format change. The
store is an Arrow table with one row per key: ``instag_key``, ``instag_raw_tags``,
``instag_error``. A refresh commits it with its target (``instag_pool_tags.parquet``) and
reads it back, so a new run sends requests for new queries only, whatever the state of
the local request cache.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterable

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Dataset, concatenate_datasets

from instag_hf.columns import ERROR_COLUMN, RAW_TAGS_COLUMN, RAW_TAGS_TYPE, TAGS_COLUMN
from instag_hf.datasets_internals import dataset_from_table
from instag_hf.errors import RefreshError
from instag_hf.pipeline import tag_dataset
from instag_hf.tagging.rows import detect_format, extract_queries
from instag_hf.tagging.tagger import Tagger

KEY_COLUMN = "instag_key"
STORE_SCHEMA = pa.schema([(KEY_COLUMN, pa.string()), (RAW_TAGS_COLUMN, RAW_TAGS_TYPE), (ERROR_COLUMN, pa.string())])
_BATCH_ROWS = 1000


def row_keys(ds: Dataset, format: str | None = None, column: str | None = None) -> list[str]:
    """One key per row of ``ds``: sha256 of its ``(turn, query)`` pairs.

    Raises:
        FormatError: No column to read queries from (same rules as the Tagger).
    """
    fmt = detect_format(ds.column_names, format=format, column=column)
    names = [fmt.column] + ([fmt.input_column] if fmt.input_column else [])
    keys: list[str] = []
    for table in ds.select_columns(names).with_format("arrow").iter(batch_size=_BATCH_ROWS):
        batch = {name: table.column(name).to_pylist() for name in names}
        for row in extract_queries(batch, fmt):
            text = json.dumps([list(q) for q in row.queries], ensure_ascii=False, separators=(",", ":"))
            keys.append(hashlib.sha256(text.encode("utf-8")).hexdigest())
    return keys


def empty_store() -> pa.Table:
    return STORE_SCHEMA.empty_table()


def build_store(tagged: Dataset, keys: list[str]) -> pa.Table:
    """The store of a tagged dataset: the first row of every key."""
    columns = tagged.select_columns([RAW_TAGS_COLUMN, ERROR_COLUMN]).with_format("arrow")[:]
    first = _first_rows(keys)
    table = columns.take(pa.array(first, type=pa.int64()))
    table = table.add_column(0, KEY_COLUMN, pa.array([keys[i] for i in first], type=pa.string()))
    return table.cast(STORE_SCHEMA)


def merge_stores(stores: Iterable[pa.Table]) -> pa.Table:
    """One store from several; the first store that has a key wins."""
    tables = [t.cast(STORE_SCHEMA) for t in stores]
    if not tables:
        return empty_store()
    merged = pa.concat_tables(tables)
    return merged.take(pa.array(_first_rows(merged.column(KEY_COLUMN).to_pylist()), type=pa.int64()))


def _first_rows(keys: list[str]) -> list[int]:
    """Index of the first row of every distinct key, ascending."""
    first: dict[str, int] = {}
    for i, key in enumerate(keys):
        first.setdefault(key, i)
    return list(first.values())


def store_to_bytes(store: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(store, sink)
    return sink.getvalue()


def store_from_bytes(data: bytes, where: str) -> pa.Table:
    try:
        table = pq.read_table(io.BytesIO(data))
        return table.select(STORE_SCHEMA.names).cast(STORE_SCHEMA)
    except (pa.ArrowException, KeyError, ValueError) as error:
        raise RefreshError(f"{where} is not a readable tag store: {error}") from error


def _known(store: pa.Table) -> dict[str, int]:
    """Stored keys with at least one tag -> their row in the store."""
    stored_keys = store.column(KEY_COLUMN).to_pylist()
    has_tags = [bool(tags) for tags in store.column(RAW_TAGS_COLUMN).to_pylist()]
    return {key: i for i, key in enumerate(stored_keys) if has_tags[i]}


def rows_to_tag(store: pa.Table, keys: list[str]) -> list[int]:
    """Indexes of the rows :func:`tag_reusing` would send to the tagger."""
    known = _known(store)
    return [i for i, key in enumerate(keys) if key not in known]


def tag_reusing(ds: Dataset, tagger: Tagger, store: pa.Table, keys: list[str]) -> tuple[Dataset, int, int]:
    """Add ``instag_raw_tags`` / ``instag_error``, asking ``tagger`` only about unknown rows.

    A stored row is reused when it holds at least one tag; rows that got none before are
    asked again (the endpoint may do better now).

    Returns:
        ``(tagged dataset, rows reused, rows sent to the tagger)``; rows keep their order.
    """
    known = _known(store)
    new_rows = [i for i, key in enumerate(keys) if key not in known]
    stale = [c for c in (RAW_TAGS_COLUMN, ERROR_COLUMN, TAGS_COLUMN) if c in ds.column_names]
    base = ds.remove_columns(stale) if stale else ds
    if len(new_rows) == len(ds):
        return tag_dataset(base, tagger), 0, len(new_rows)
    parts = [store.select([RAW_TAGS_COLUMN, ERROR_COLUMN])]
    if new_rows:
        fresh = tag_dataset(base.select(new_rows), tagger)
        parts.append(fresh.select_columns([RAW_TAGS_COLUMN, ERROR_COLUMN]).with_format("arrow")[:])
    combined = pa.concat_tables([p.cast(STORE_SCHEMA.remove(0)) for p in parts])
    rank = {row: len(store) + j for j, row in enumerate(new_rows)}
    order = [known[key] if key in known else rank[i] for i, key in enumerate(keys)]
    columns = dataset_from_table(combined.take(pa.array(order, type=pa.int64())))
    return concatenate_datasets([base, columns], axis=1), len(ds) - len(new_rows), len(new_rows)
