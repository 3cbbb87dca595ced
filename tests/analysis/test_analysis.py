"""instag_hf.analyze on a hand-made dataset, with vocabularies, pools, streams and edge cases."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from datasets import Dataset, Features, LargeList, List, Value

import instag_hf
from instag_hf.analysis.stats import LongTail, TagStats
from instag_hf.analysis.tagsets import read_tag_sets
from instag_hf.errors import ConfigurationError, MissingColumnError

FEATURES = Features({"instag_tags": List(Value("string"))})

# Tags per row, as sets: 2, 1, 0, 3, 0 (null), 2 ("code" twice counts once).
ROWS = [
    ["math", "code"],
    ["math"],
    [],
    ["math", "writing", "code"],
    None,
    ["code", "code", "poetry"],
]


@pytest.fixture
def ds() -> Dataset:
    return Dataset.from_dict({"instag_tags": ROWS}, features=FEATURES)


def test_numbers_on_a_hand_made_dataset(ds):
    stats = instag_hf.analyze(ds, top_k=2)
    assert (stats.rows, stats.rows_without_tags, stats.tag_occurrences, stats.unique_tags) == (6, 2, 8, 4)
    assert stats.diversity == 4
    assert stats.mean_tags == stats.complexity == pytest.approx(8 / 6)
    assert stats.median_tags == 1.5  # sorted counts 0 0 1 2 2 3
    assert stats.max_tags == 3
    assert stats.tags_per_row == {0: 2, 1: 1, 2: 2, 3: 1}
    assert stats.tag_counts == (("code", 3), ("math", 3), ("poetry", 1), ("writing", 1))
    assert stats.top_tags == (("code", 3), ("math", 3))
    assert (stats.vocabulary_source, stats.vocabulary_size, stats.coverage) == ("dataset", 4, 1.0)
    assert stats.long_tail[0] == LongTail(max_count=1, tags=2, tag_share=0.5, occurrence_share=0.25)
    assert stats.long_tail[1] == LongTail(max_count=5, tags=4, tag_share=1.0, occurrence_share=1.0)
    assert stats.pool is None and stats.comparison is None


def test_median_of_an_odd_number_of_rows():
    stats = instag_hf.analyze(Dataset.from_dict({"instag_tags": [["a"], ["a", "b", "c"], ["b", "c"]]}))
    assert stats.median_tags == 2.0


def test_coverage_of_an_explicit_vocabulary(ds):
    stats = instag_hf.analyze(ds, vocabulary=["math", "code", "reasoning", "translation", "math"])
    assert (stats.vocabulary_source, stats.vocabulary_size, stats.vocabulary_covered) == ("given", 4, 2)
    assert stats.coverage == 0.5
    assert stats.out_of_vocabulary_tags == 2
    with pytest.raises(ConfigurationError, match="not a single string"):
        instag_hf.analyze(ds, vocabulary="math")


def test_a_subset_compared_with_its_pool(ds):
    subset = ds.select([0, 1])
    stats = instag_hf.analyze(subset, pool=ds)
    assert (stats.vocabulary_source, stats.vocabulary_size, stats.coverage) == ("pool", 4, 0.5)
    assert stats.pool.rows == 6 and stats.pool.pool is None
    assert stats.comparison == {
        "rows_ratio": pytest.approx(2 / 6),
        "unique_tags_ratio": 0.5,
        "pool_tags_covered": 2,
        "pool_coverage": 0.5,
        "tags_not_in_pool": 0,
        "mean_tags_ratio": pytest.approx(1.5 / (8 / 6)),
        "mean_tags_difference": pytest.approx(1.5 - 8 / 6),
    }
    assert instag_hf.analyze(subset, pool=instag_hf.analyze(ds)) == stats


def test_a_sampled_subset_against_its_pool_matches_the_selection_record(ds):
    subset = instag_hf.sample(ds, 2)
    stats = instag_hf.analyze(subset, pool=ds)
    info = instag_hf.selection_info(subset)
    assert stats.comparison["pool_coverage"] == info.coverage
    assert stats.mean_tags == info.mean_tags


def test_to_dict_is_json_with_a_fixed_order_and_round_trips(ds):
    stats = instag_hf.analyze(ds.select([0, 3]), pool=ds, top_k=1)
    data = stats.to_dict()
    text = json.dumps(data)
    assert text == json.dumps(instag_hf.analyze(ds.select([0, 3]), pool=ds, top_k=1).to_dict())
    assert list(data["tag_counts"]) == ["code", "math", "writing"]
    assert data["top_tags"] == {"code": 2}
    assert data["tags_per_row"] == {"2": 1, "3": 1}
    assert data["pool"]["rows"] == 6 and data["comparison"]["pool_tags_covered"] == 3
    assert TagStats.from_dict(json.loads(text)) == stats


def test_iterable_dataset_gives_the_same_numbers(ds):
    assert instag_hf.analyze(ds.to_iterable_dataset(num_shards=2)) == instag_hf.analyze(ds)


def test_empty_dataset_gives_zeros():
    empty = Dataset.from_dict({"instag_tags": []}, features=FEATURES)
    stats = instag_hf.analyze(empty, pool=empty)
    assert (stats.rows, stats.unique_tags, stats.mean_tags, stats.median_tags, stats.max_tags) == (0, 0, 0.0, 0.0, 0)
    assert stats.coverage == 0.0 and stats.tags_per_row == {} and stats.tag_counts == ()
    assert all(tail.tag_share == 0.0 and tail.occurrence_share == 0.0 for tail in stats.long_tail)
    assert set(stats.comparison.values()) == {0}
    json.dumps(stats.to_dict())


def test_tags_keep_their_ids_across_arrow_batches():
    rows = [["a", "b"], ["c"], ["b"], [], ["c", "a"], ["d"], ["a"]]
    ts = read_tag_sets(Dataset.from_dict({"t": rows}), "t", batch_size=2)
    decoded = [[ts.vocabulary[i] for i in ts.tag_ids[ts.offsets[r] : ts.offsets[r + 1]]] for r in range(ts.rows)]
    assert decoded == rows
    stats = instag_hf.analyze(Dataset.from_dict({"t": rows * 30_000}), tag_column="t")  # several 64K batches
    assert stats.tag_counts == (("a", 90_000), ("b", 60_000), ("c", 60_000), ("d", 30_000))


def test_rows_read_as_python_sets_with_repeats_nulls_and_many_batches():
    rng = np.random.default_rng(2)
    rows: list[list[str | None] | None] = []
    for _ in range(3000):
        # Ids past 4096 can share both slots of the repeat check; rows past 64 tags always
        # need the exact comparison.
        vocab, size = int(rng.choice([3, 100, 9000])), int(rng.choice([0, 1, 4, 9, 80]))
        row: list[str | None] = [f"t{j}" for j in rng.integers(0, vocab, size)]
        if size and rng.random() < 0.1:
            row[int(rng.integers(0, size))] = None
        rows.append(None if rng.random() < 0.02 else row)
    features = Features({"t": List(Value("string"))})
    ts = read_tag_sets(Dataset.from_dict({"t": rows}, features=features), "t", batch_size=97)
    sets = [list(dict.fromkeys(tag for tag in row or [] if tag is not None)) for row in rows]
    assert ts.vocabulary == tuple(dict.fromkeys(tag for row in sets for tag in row))
    decoded = [[ts.vocabulary[i] for i in ts.tag_ids[ts.offsets[r] : ts.offsets[r + 1]]] for r in range(ts.rows)]
    assert decoded == sets


def test_batches_of_many_record_batches_read_as_python_sets(tmp_path):
    # Dataset.map writes record batches of writer_batch_size rows: one Arrow batch then
    # spans many chunks, hashed together; whole batches without tags, and null items
    # inside a many-chunk batch, must keep every id in order of first appearance.
    rows: list[list[str | None] | None] = (
        [["x", "y", "x"], None, ["y"], [], ["z", None, "w", "z"]] * 7 + [[]] * 20 + [["v", "x"], ["u"]] * 5
    )
    features = Features({"t": List(Value("string"))})
    source = Dataset.from_dict({"t": [[]] * len(rows)}, features=features)
    mapped = source.map(
        lambda _, i: {"t": rows[i]},
        with_indices=True,
        features=features,
        writer_batch_size=3,
        cache_file_name=str(tmp_path / "mapped.arrow"),
    )
    assert mapped.data.column("t").num_chunks > 10
    sets = [list(dict.fromkeys(tag for tag in row or [] if tag is not None)) for row in rows]
    for batch_size in (4, 16, 1000):
        ts = read_tag_sets(mapped, "t", batch_size=batch_size)
        assert ts.vocabulary == tuple(dict.fromkeys(tag for row in sets for tag in row))
        decoded = [[ts.vocabulary[i] for i in ts.tag_ids[ts.offsets[r] : ts.offsets[r + 1]]] for r in range(ts.rows)]
        assert decoded == sets
    counts = Counter(tag for row in sets for tag in row)
    assert dict(instag_hf.analyze(mapped, tag_column="t").tag_counts) == counts


def test_large_list_and_large_string_columns_read_the_same(ds):
    large = Dataset.from_dict(
        {"instag_tags": ROWS}, features=Features({"instag_tags": LargeList(Value("large_string"))})
    )
    assert instag_hf.analyze(large) == instag_hf.analyze(ds)


def test_missing_or_wrong_column():
    with pytest.raises(MissingColumnError, match=r"ds.map\(normalizer, batched=True\)"):
        instag_hf.analyze(Dataset.from_dict({"text": ["x"]}))
    with pytest.raises(MissingColumnError, match=r"ds.map\(normalizer, batched=True\)"):
        instag_hf.analyze(Dataset.from_dict({"text": ["x"]}).to_iterable_dataset())
    with pytest.raises(ConfigurationError, match="not a list of strings"):
        instag_hf.analyze(Dataset.from_dict({"instag_tags": ["x"]}))
    with pytest.raises(ConfigurationError):
        instag_hf.analyze(Dataset.from_dict({"instag_tags": [["x"]]}), top_k=-1)
