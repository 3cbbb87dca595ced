"""The Arrow apply path gives what the row-by-row path gives, on every odd row it can meet."""

from __future__ import annotations

import pyarrow as pa
import pytest

from instag_hf import errors
from instag_hf.columns import RAW_TAGS_TYPE
from instag_hf.normalization.applying import SpellingTable, normalized_column
from instag_hf.normalization.normalizer import TagNormalizer
from tests.normalization.test_normalization import NO_MODEL, pool

ODD_ROWS = [
    ["Python", "python ", "  Python", "Java"],  # one tag three ways, stripped and merged: once
    ["unseen spelling", "PYTHON!", "rare"],  # unseen: by rule key, else dropped
    [(0, "Java"), (1, "python"), (1, "Java")],  # two turns: a union in order of first appearance
    ["", "   ", "Java"],  # empty and blank spellings
    [],
    None,
    ["rare", "rare"],  # dropped by the frequency filter
    ["java", "Python"],
] + [["Python", "Java"]] * 3


def spellings(normalizer: TagNormalizer) -> SpellingTable:
    return SpellingTable(normalizer.mapping, frozenset(), normalizer.canonical)  # dropped: via canonical


@pytest.fixture(scope="module")
def normalizer() -> TagNormalizer:
    return TagNormalizer(min_frequency=3, **NO_MODEL).fit(pool(ODD_ROWS))


@pytest.mark.parametrize("unknown", ["drop", "keep"])
def test_the_arrow_path_equals_the_row_path(unknown: str) -> None:
    fitted = TagNormalizer(min_frequency=3, unknown=unknown, **NO_MODEL).fit(pool(ODD_ROWS))
    ds = pool(ODD_ROWS)
    expected = [fitted.normalize_row(row) for row in ds["instag_raw_tags"]]
    column = ds.data.column("instag_raw_tags")
    assert normalized_column(column, spellings(fitted)).to_pylist() == expected
    assert ds.map(fitted, batched=True, batch_size=4)["instag_tags"] == expected
    assert fitted(ds.data.table)["instag_tags"].to_pylist() == expected  # Ray's pyarrow batches
    assert fitted({"instag_raw_tags": ds["instag_raw_tags"]})["instag_tags"] == expected


def test_null_items_and_large_types_are_read_like_the_rest(normalizer: TagNormalizer) -> None:
    item = RAW_TAGS_TYPE.value_type
    column = pa.array([[{"turn": 0, "tag": "Java", "explanation": "x"}, None], None], RAW_TAGS_TYPE)
    assert normalized_column(column, spellings(normalizer)).to_pylist() == [["Java"], []]
    large = pa.large_list(pa.struct([item.field(0), pa.field("tag", pa.large_string()), item.field(2)]))
    assert normalized_column(column.cast(large), spellings(normalizer)).to_pylist() == [["Java"], []]
    assert normalized_column(pa.nulls(2), spellings(normalizer)).to_pylist() == [[], []]


def test_a_batch_where_no_row_keeps_a_tag_still_writes_strings(normalizer: TagNormalizer) -> None:
    ds = pool([["rare"], [], None] * 4 + [["Java"]])
    mapped = ds.map(normalizer, batched=True, batch_size=4)
    assert mapped.features["instag_tags"].feature.dtype == "string"
    assert mapped["instag_tags"][-1] == ["Java"]


def test_a_tag_of_another_type_is_refused_with_what_to_do(normalizer: TagNormalizer) -> None:
    bad = pa.array([[{"turn": 0, "tag": 5}]], pa.list_(pa.struct([("turn", pa.int32()), ("tag", pa.int64())])))
    with pytest.raises(errors.NormalizationError, match="'tag' has type int64"):
        normalized_column(bad, spellings(normalizer))
    with pytest.raises(errors.NormalizationError, match="'tag' has type int64"):
        normalizer(pa.table({"instag_raw_tags": bad}))


def test_map_returns_the_whole_batch_so_remove_columns_is_done_on_the_result(normalizer: TagNormalizer) -> None:
    ds = pool(ODD_ROWS)
    mapped = ds.map(normalizer, batched=True).remove_columns(["instag_raw_tags"])
    assert mapped.column_names == ["instag_error", "id", "instag_tags"]
    assert mapped["id"] == ds["id"]


def test_normalizing_a_table_again_replaces_its_tags(normalizer: TagNormalizer) -> None:
    table = pool(ODD_ROWS).data.table
    once = normalizer(table)
    twice = normalizer(once)
    assert twice.column_names == once.column_names
    assert twice.column("instag_tags").to_pylist() == once.column("instag_tags").to_pylist()
