"""The data contract: the columns instag_hf adds to a dataset, their Arrow types, and which
step of the chain writes each, for errors that say what to do next.

These names are what the Hub sees; every module takes them from here.
"""

from __future__ import annotations

import pyarrow as pa

#: Every tag the tagger returned, per user turn: list<struct<turn, tag, explanation>>.
RAW_TAGS_COLUMN = "instag_raw_tags"
#: What went wrong for a row (null when it was tagged cleanly); the row always stays.
ERROR_COLUMN = "instag_error"
#: The row's normalized tags: union over its turns, de-duplicated, in order of first appearance.
TAGS_COLUMN = "instag_tags"

RAW_TAG_TYPE = pa.struct([("turn", pa.int32()), ("tag", pa.string()), ("explanation", pa.string())])
RAW_TAGS_TYPE = pa.list_(RAW_TAG_TYPE)

#: Which step of the chain writes each of our columns.
MADE_BY = {
    RAW_TAGS_COLUMN: "ds = ds.map(instag_hf.tag, batched=True)",
    TAGS_COLUMN: "ds = ds.map(normalizer, batched=True) with normalizer = instag_hf.TagNormalizer().fit(ds)",
}


def missing_column(
    column: str, ds_columns: list[str] | None = None, *, what: str = "The dataset", otherwise: str = ""
) -> str:
    """The one sentence for a dataset that lacks a column: what to run to make it.

    Args:
        column: The missing column.
        ds_columns: The columns the dataset has, listed in the message.
        what: The dataset, as the message names it (``"Dataset A"``, ``"The pool"``).
        otherwise: What to do instead, for a column that no step of the chain writes (or
            also: name another column).
    """
    seen = f" (it has {', '.join(map(repr, ds_columns))})" if ds_columns else ""
    how = MADE_BY.get(column)
    then = f": make it first with `{how}`" if how else ""
    also = f" {otherwise}" if otherwise else ""
    return f"{what} has no {column!r} column{seen}{then}.{also}"
