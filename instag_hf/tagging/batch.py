"""Reading a batch for the tagger and writing its two columns back.

A batch arrives as datasets' ``LazyBatch`` (with its Arrow table), a pyarrow Table (Ray
Data's ``batch_format="pyarrow"``) or a plain dict of lists. The tagger answers the whole
batch as a pyarrow Table with the column types fixed, so a batch where every row failed
still carries the schema (datasets would infer ``null`` from it and fail on the next batch).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from instag_hf.columns import ERROR_COLUMN, RAW_TAGS_COLUMN, RAW_TAGS_TYPE
from instag_hf.datasets_internals import batch_table
from instag_hf.errors import ConfigurationError
from instag_hf.tagging.client import Answer
from instag_hf.tagging.rows import RowFormat, RowQueries


def columns_of(batch: Any) -> tuple[list[str], pa.Table | None]:
    table = batch_table(batch)  # datasets' LazyBatch carries its Arrow table
    if isinstance(batch, pa.Table):
        table = batch
    if table is not None:
        return table.column_names, table
    if not isinstance(batch, Mapping):
        raise ConfigurationError(
            f"A Tagger takes a batch (a dict of column lists), got {type(batch).__name__}: call "
            "ds.map(tagger, batched=True) without input_columns, and choose the column with Tagger(column=...)"
        )
    return list(batch.keys()), None


def query_columns(batch: Any, table: pa.Table | None, fmt: RowFormat) -> dict[str, list]:
    names = [fmt.column] + ([fmt.input_column] if fmt.input_column else [])
    if table is not None:
        return {name: table.column(name).to_pylist() for name in names if name in table.column_names}
    return {name: list(batch[name]) for name in names if name in batch}


def fit_query(query: str, limit: int | None, long_queries: str) -> tuple[str | None, str | None]:
    """The one rule for queries longer than the server takes: (what to send, what to say).

    ``None`` to send means the query is refused (``long_queries="error"``).
    """
    if limit is None or len(query) <= limit:
        return query, None
    if long_queries == "error":
        return None, (
            f"query of {len(query)} characters exceeds the server's input limit (~{limit} characters); not sent"
        )
    return query[:limit], f"query truncated from {len(query)} to {limit} characters to fit the server's input limit"


def assemble(
    rows: list[RowQueries], answers: dict[str, Answer], limit: int | None, long_queries: str
) -> tuple[list[list[dict]], list[str | None]]:
    raw_tags: list[list[dict]] = []
    errors: list[str | None] = []
    for row in rows:
        tags: list[dict] = []
        problems = [row.problem] if row.problem else []
        multi = len(row.queries) > 1 or (row.queries and row.queries[0][0] > 0)
        for turn, query in row.queries:
            where = f"turn {turn}: " if multi else ""
            sent, note = fit_query(query, limit, long_queries)
            if note:
                problems.append(f"{where}{note}")
            if sent is None:
                continue
            answer = answers[sent]
            if answer.parsed is None:
                problems.append(f"{where}{answer.error}")
                continue
            if answer.parsed.error:
                problems.append(f"{where}{answer.parsed.error}")
            elif answer.parsed.warning:
                problems.append(f"{where}{answer.parsed.warning}")
            tags.extend({"turn": turn, "tag": t, "explanation": e} for t, e in answer.parsed.tags)
        raw_tags.append(tags)
        errors.append("; ".join(problems) if problems else None)
    return raw_tags, errors


def with_columns(batch: Any, table: pa.Table | None, raw_tags: list, errors: list) -> Any:
    tags_array = pa.array(raw_tags, type=RAW_TAGS_TYPE)
    errors_array = pa.array(errors, type=pa.string())
    if table is None:  # a plain dict of lists (a direct call, Ray's default batches)
        return {**batch, RAW_TAGS_COLUMN: tags_array.to_pylist(), ERROR_COLUMN: errors}
    for name, array in ((RAW_TAGS_COLUMN, tags_array), (ERROR_COLUMN, errors_array)):
        if name in table.column_names:  # tagging again replaces the previous tags
            table = table.drop_columns([name])
        table = table.append_column(name, array)
    return table
