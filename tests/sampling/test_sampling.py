"""instag_hf.sample: Algorithm 1 by hand, against a plain-set oracle, baselines, controls, provenance."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
from datasets import Dataset, DatasetDict, Features, List, Value

import instag_hf
from instag_hf.analysis.tagsets import TagSets
from instag_hf.errors import ConfigurationError, MissingColumnError, SamplingError
from instag_hf.sampling.passes import base_order, covering_passes, sort_by, steer_to_mean
from tests.sampling.algorithm_1 import reference

FEATURES = Features({"id": Value("int64"), "instag_tags": List(Value("string"))})

# Sorted by tag count (stable): 3, 1, 4, 0, 2, 6, then 5 (no tags, never taken).
# Pass 1 takes 3 (a b c) and 4 (d); pass 2, with covered reset, takes 1, 2, 6; pass 3 takes 0.
HAND = [["a"], ["a", "b"], ["c"], ["a", "b", "c"], ["b", "d"], [], ["d"]]


def make(rows: list[list[str] | None], column: str = "instag_tags") -> Dataset:
    features = Features({"id": Value("int64"), column: List(Value("string"))})
    return Dataset.from_dict({"id": list(range(len(rows))), column: rows}, features=features)


def ids(subset: Dataset) -> list[int]:
    return list(subset["id"])


def random_tag_lists(rng: np.random.Generator, rows: int, vocab: int, max_len: int) -> list[list[str]]:
    return [
        [f"t{j}" for j in rng.choice(vocab, size=int(rng.integers(0, min(vocab, max_len) + 1)), replace=False)]
        for _ in range(rows)
    ]


# --- Algorithm 1 by hand ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "expected", "passes"),
    [(1, [3], 1), (2, [3, 4], 1), (4, [3, 4, 1, 2], 2), (5, [3, 4, 1, 2, 6], 2), (6, [3, 4, 1, 2, 6, 0], 3)],
)
def test_algorithm_1_by_hand_resets_covered_on_every_pass(n, expected, passes):
    subset = instag_hf.sample(make(HAND), n)
    assert ids(subset) == expected
    info = instag_hf.selection_info(subset)
    assert (info.passes, info.n_selected, info.warnings) == (passes, n, ())


def test_pass_that_adds_nothing_stops_with_a_warning_and_returns_what_it_has():
    with pytest.warns(UserWarning, match=r"Only 6 of the requested 7 rows.*pass 4 would add nothing"):
        subset = instag_hf.sample(make(HAND), 7)
    assert ids(subset) == [3, 4, 1, 2, 6, 0]  # row 5 has no tags and is never taken
    info = instag_hf.selection_info(subset)
    assert info.n_requested == 7 and info.n_selected == 6 and len(info.warnings) == 1


def test_ties_keep_row_order_without_seed_and_follow_a_reproducible_shuffle_with_one():
    rows = [["x"], ["y"], ["z"], ["w"], ["v", "u"]]
    assert ids(instag_hf.sample(make(rows), 3)) == [4, 0, 1]
    seeded = {seed: ids(instag_hf.sample(make(rows), 3, seed=seed)) for seed in range(8)}
    assert all(order[0] == 4 for order in seeded.values())  # complexity still comes first
    assert len({tuple(order) for order in seeded.values()}) > 1
    assert all(ids(instag_hf.sample(make(rows), 3, seed=seed)) == order for seed, order in seeded.items())


def test_vectorised_passes_equal_the_plain_set_algorithm_on_random_cases():
    rng = np.random.default_rng(20240101)
    for case in range(400):
        rows = random_tag_lists(rng, int(rng.integers(0, 40)), int(rng.integers(1, 12)), 5)
        n = int(rng.integers(0, len(rows) + 1))
        tag_sets = [set(r) for r in rows]
        order = sorted(range(len(rows)), key=lambda i: -len(tag_sets[i]))
        expected, _ = reference(tag_sets, order, n)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = ids(instag_hf.sample(make(rows), n))
        assert got == expected, case


def test_covering_passes_equal_the_plain_set_algorithm_for_any_pass_order():
    rng = np.random.default_rng(7)
    for case in range(400):
        rows = random_tag_lists(rng, int(rng.integers(0, 60)), int(rng.integers(1, 20)), 6)
        vocab = sorted({t for r in rows for t in r})
        lengths = np.array([len(r) for r in rows], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        tag_ids = np.array([vocab.index(t) for r in rows for t in r], dtype=np.int32)
        ts = TagSets(offsets, tag_ids, tuple(vocab))
        order = sort_by(base_order(len(rows), np.random.default_rng(case)), -lengths)
        n = int(rng.integers(0, len(rows) + 2))
        got, passes = covering_passes(ts, order, n)
        assert (got.tolist(), passes) == reference([set(r) for r in rows], order.tolist(), n), case


@pytest.mark.parametrize(("late_tag", "n"), [(False, 10), (False, 80), (True, 10), (True, 100)])
def test_covering_passes_equal_the_plain_set_algorithm_past_the_first_blocks(late_tag, n):
    # 70K rows. A pass reads the pass order in blocks while it can finish early (n reached
    # or every tag covered) and otherwise runs as one pass over all occurrences: a tag on
    # the last row only (late_tag) stops pass 1 from finishing early, a tag on one early
    # row only leaves later passes with a tag they can never cover.
    rng = np.random.default_rng(9)
    rows, vocab = 70_000, 30
    lengths = rng.integers(1, 6, rows)
    lengths[-1] = 1
    starts = np.repeat(rng.zipf(1.3, rows) % vocab, lengths)
    within = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    tag_ids = ((starts + within) % vocab).astype(np.int32)
    tag_ids[0] = vocab  # the one-row tag
    if late_tag:
        tag_ids[-1] = vocab + 1
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    ts = TagSets(offsets, tag_ids, tuple(f"t{i}" for i in range(vocab + 1 + late_tag)))
    order = sort_by(base_order(rows, np.random.default_rng(1)), -lengths)
    order = np.concatenate([[0], order[order != 0]])
    tag_sets = [set(tag_ids[offsets[r] : offsets[r + 1]].tolist()) for r in range(rows)]
    got, passes = covering_passes(ts, order, n)
    assert (got.tolist(), passes) == reference(tag_sets, order.tolist(), n)


def test_sort_by_is_a_stable_sort_of_the_key_in_the_given_order():
    rng = np.random.default_rng(3)
    for span in (3, 300, 70_000):  # uint8 and uint16 radix keys, and a plain int64 sort
        key = rng.integers(-span // 2, span // 2 + 1, 500)
        for order in (None, rng.permutation(500), rng.permutation(500)[:200]):
            rows = list(range(500)) if order is None else order.tolist()
            assert sort_by(order, key).tolist() == sorted(rows, key=lambda r: key[r])
            assert sort_by(order, key, descending=True).tolist() == sorted(rows, key=lambda r: -key[r])
            floats = np.abs(key - 0.5)
            assert sort_by(order, floats, descending=True).tolist() == sorted(rows, key=lambda r: -floats[r])


def test_row_positions_follow_the_dataset_through_an_indices_mapping():
    rows = random_tag_lists(np.random.default_rng(3), 200, 15, 5)
    shuffled = make(rows).shuffle(seed=0)
    tag_sets = [set(r) for r in shuffled["instag_tags"]]
    order = sorted(range(len(tag_sets)), key=lambda i: -len(tag_sets[i]))
    expected, _ = reference(tag_sets, order, 40)
    assert ids(instag_hf.sample(shuffled, 40)) == [shuffled[i]["id"] for i in expected]


def test_duplicate_tags_in_a_row_count_once():
    # Row 0 has 5 items but 2 tags; row 1 has 3 tags and so comes first.
    subset = instag_hf.sample(make([["a", "b", "a", "b", "a"], ["a", "b", "c"]]), 1)
    assert ids(subset) == [1]


# --- other strategies ---------------------------------------------------------------------


def test_diversity_runs_the_passes_in_original_row_order():
    subset = instag_hf.sample(make(HAND), 6, strategy="diversity")
    assert ids(subset) == [0, 1, 2, 4, 3, 6]
    assert instag_hf.selection_info(subset).passes == 2


def test_complexity_takes_most_tags_first_with_stable_ties():
    assert ids(instag_hf.sample(make(HAND), 3, strategy="complexity")) == [3, 1, 4]
    with pytest.warns(UserWarning, match="Only 6 of the requested 7"):
        assert 5 not in ids(instag_hf.sample(make(HAND), 7, strategy="complexity"))


def test_random_is_seeded_and_may_take_rows_without_tags():
    ds = make(HAND)
    first = ids(instag_hf.sample(ds, 4, strategy="random", seed=3))
    assert first == ids(instag_hf.sample(ds, 4, strategy="random", seed=3))
    assert len(set(first)) == 4
    assert sorted(ids(instag_hf.sample(ds, len(ds), strategy="random", seed=1))) == list(range(len(ds)))


def test_unseeded_random_records_the_seed_it_drew():
    ds = make(HAND)
    subset = instag_hf.sample(ds, 3, strategy="random")
    seed = instag_hf.selection_info(subset).seed
    assert isinstance(seed, int)
    assert ids(instag_hf.sample(ds, 3, strategy="random", seed=seed)) == ids(subset)


# --- controls -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def zipf_pool() -> Dataset:
    rng = np.random.default_rng(11)
    vocab = 120
    weights = 1 / np.arange(1, vocab + 1) ** 1.1
    weights /= weights.sum()
    rows = []
    for _ in range(4000):
        size = min(vocab, 1 + int(rng.poisson(3.5)))
        rows.append([f"t{j}" for j in dict.fromkeys(rng.choice(vocab, size=size, p=weights).tolist())])
    return make(rows)


def quietly(*args, **kwargs) -> tuple[Dataset, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        subset = instag_hf.sample(*args, **kwargs)
    return subset, [str(w.message) for w in caught]


@pytest.mark.parametrize("mean", [2.0, 3.5, 5.0, 6.5])
def test_target_mean_at_full_coverage(zipf_pool, mean):
    subset, caught = quietly(zipf_pool, 500, target_mean_tags=mean)
    info = instag_hf.selection_info(subset)
    assert caught == [] and info.warnings == ()
    assert info.n_selected == 500 and info.coverage == 1.0
    assert abs(info.mean_tags - mean) <= 0.05
    assert len(set(ids(subset))) == 500


@pytest.mark.parametrize("coverage", [0.45, 0.6, 0.8, 1.0])
def test_target_coverage_alone_stays_inside_a_frequency_ordered_vocabulary(zipf_pool, coverage):
    subset, caught = quietly(zipf_pool, 300, target_coverage=coverage)
    info = instag_hf.selection_info(subset)
    assert caught == []
    assert abs(info.unique_tags - round(coverage * info.pool_tags)) <= 1
    stats = instag_hf.analyze(zipf_pool)
    frequent = {tag for tag, _ in stats.tag_counts[: info.unique_tags + 5]}
    assert {t for row in subset["instag_tags"] for t in row} <= frequent


@pytest.mark.parametrize("coverage", [0.45, 0.7, 1.0])
def test_fixed_mean_with_varying_coverage(zipf_pool, coverage):
    subset, caught = quietly(zipf_pool, 400, target_coverage=coverage, target_mean_tags=3.0)
    info = instag_hf.selection_info(subset)
    assert caught == []
    assert abs(info.mean_tags - 3.0) <= 0.05
    assert abs(info.unique_tags - round(coverage * info.pool_tags)) <= 1


def test_unreachable_mean_is_a_best_effort_with_a_warning(zipf_pool):
    subset, caught = quietly(zipf_pool, 500, target_mean_tags=40.0)
    info = instag_hf.selection_info(subset)
    assert info.n_selected == 500 and info.coverage == 1.0
    assert len(caught) == 1 and "Target mean of 40" in caught[0] and f"achieved {info.mean_tags:.2f}" in caught[0]
    assert info.warnings == tuple(caught)


def test_coverage_that_needs_more_rows_than_n_warns_with_what_was_achieved(zipf_pool):
    subset, caught = quietly(zipf_pool, 5, target_coverage=1.0)
    info = instag_hf.selection_info(subset)
    assert info.n_selected == 5 and info.coverage < 1.0
    assert any("not reached" in message and f"{info.unique_tags} tags" in message for message in caught)


def test_too_few_candidate_rows_for_the_vocabulary_warns(zipf_pool):
    subset, caught = quietly(zipf_pool, 3000, target_coverage=0.1, target_mean_tags=2.0)
    info = instag_hf.selection_info(subset)
    assert info.n_selected < 3000
    assert any(f"Only {info.n_selected} rows have all their tags inside" in m for m in caught)


def test_steer_to_mean_hits_the_sum_from_the_two_nearest_counts():
    lengths = np.array([1, 2, 2, 2, 3, 3, 3, 5])
    picked = steer_to_mean(lengths, 4, 10)
    assert sorted(lengths[picked].tolist()) == [2, 2, 3, 3]
    assert picked.tolist() == sorted(picked.tolist())  # ascending: the caller's preference order
    # When the count above runs out it is used up and the rest re-aims below.
    lengths = np.array([4, 4, 1, 1, 1, 1])
    assert sorted(lengths[steer_to_mean(lengths, 4, 12)].tolist()) == [1, 1, 4, 4]
    assert steer_to_mean(lengths, 0, 0).size == 0


# --- edge cases ---------------------------------------------------------------------------


def test_n_zero_gives_an_empty_selection():
    subset = instag_hf.sample(make(HAND), 0)
    assert len(subset) == 0 and subset.features == make(HAND).features
    assert instag_hf.selection_info(subset).n_selected == 0


def test_n_larger_than_the_dataset_is_a_sampling_error():
    with pytest.raises(SamplingError, match="Cannot select 8 rows from a dataset of 7 rows"):
        instag_hf.sample(make(HAND), 8)


def test_empty_dataset():
    empty = Dataset.from_dict({"id": [], "instag_tags": []}, features=FEATURES)
    empty.info.description = "pool"
    subset = instag_hf.sample(empty, 0)
    assert len(subset) == 0 and subset is not empty
    assert empty.info.description == "pool"
    assert instag_hf.selection_info(subset).pool_rows == 0
    assert instag_hf.selection_info(empty) is None
    with pytest.raises(SamplingError):
        instag_hf.sample(empty, 1)
    assert len(quietly(empty, 0, target_mean_tags=3.0)[0]) == 0


def test_rows_without_tags_are_never_picked_by_diversity_steps():
    rows = [[], ["a"], [], None, ["b"]]
    for strategy in ("instag", "diversity", "complexity"):
        subset, caught = quietly(make(rows), 4, strategy=strategy)
        assert ids(subset) == [1, 4] and len(caught) == 1, strategy
    subset, caught = quietly(make(rows), 4, target_mean_tags=1.0)
    assert sorted(ids(subset)) == [1, 4] and caught


def test_missing_column_names_the_step_that_makes_it():
    ds = Dataset.from_dict({"text": ["hi"]})
    with pytest.raises(MissingColumnError, match=r"ds.map\(normalizer, batched=True\)"):
        instag_hf.sample(ds, 1)
    with pytest.raises(MissingColumnError, match="tag_column="):
        instag_hf.sample(ds, 1, tag_column="labels")


def test_any_list_of_strings_column_works():
    subset = instag_hf.sample(make(HAND, column="labels"), 2, tag_column="labels")
    assert ids(subset) == [3, 4]
    with pytest.raises(ConfigurationError, match="not a list of strings"):
        instag_hf.sample(Dataset.from_dict({"labels": [1, 2]}), 1, tag_column="labels")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n": -1},
        {"n": 1.5},
        {"n": True},
        {"n": 1, "strategy": "best"},
        {"n": 1, "seed": -2},
        {"n": 1, "target_coverage": 0.0},
        {"n": 1, "target_coverage": 1.5},
        {"n": 1, "target_mean_tags": -1},
        {"n": 1, "target_mean_tags": float("nan")},
        {"n": 1, "strategy": "random", "target_coverage": 0.5},
    ],
)
def test_bad_arguments_are_configuration_errors(kwargs):
    with pytest.raises(ConfigurationError):
        instag_hf.sample(make(HAND), **kwargs)


def test_a_dataset_dict_asks_for_one_split():
    with pytest.raises(ConfigurationError, match=r"pass one split, e.g. ds\['train'\]"):
        instag_hf.sample(DatasetDict({"train": make(HAND)}), 1)


def test_iterable_dataset_is_refused_with_a_way_out():
    with pytest.raises(ConfigurationError, match="Dataset.from_generator"):
        instag_hf.sample(make(HAND).to_iterable_dataset(), 1)


def test_errors_survive_pickling():
    try:
        instag_hf.sample(make(HAND), 99)
    except SamplingError as err:
        again = pickle.loads(pickle.dumps(err))
        assert type(again) is SamplingError and str(again) == str(err)


# --- provenance ---------------------------------------------------------------------------


def test_selection_info_records_the_request_and_what_it_achieved():
    ds = make(HAND)
    subset = instag_hf.sample(ds, 4, seed=5)
    info = instag_hf.selection_info(subset)
    assert info.to_dict() == {
        "strategy": "instag",
        "n_requested": 4,
        "n_selected": 4,
        "seed": 5,
        "tag_column": "instag_tags",
        "target_coverage": None,
        "target_mean_tags": None,
        "pool_rows": 7,
        "pool_tagged_rows": 6,
        "pool_tags": 4,
        "pool_mean_tags": pytest.approx(10 / 7),
        "unique_tags": 4,
        "coverage": 1.0,
        "mean_tags": info.mean_tags,
        "passes": info.passes,
        "warnings": [],
        "pool_fingerprint": ds._fingerprint,
    }
    assert info.mean_tags == pytest.approx(np.mean([len(r) for r in subset["instag_tags"]]))
    assert instag_hf.selection_info(ds) is None


def test_description_carries_a_readable_record_that_survives_save_and_load(tmp_path):
    ds = make(HAND)
    ds.info.description = "My pool."
    subset = instag_hf.sample(ds, 3)
    assert subset.info.description.startswith("My pool.\n\nSelected by instag_hf.sample (strategy 'instag'")
    assert ds.info.description == "My pool."
    subset.save_to_disk(str(tmp_path / "subset"))
    reloaded = Dataset.load_from_disk(str(tmp_path / "subset"))
    assert instag_hf.selection_info(reloaded) == instag_hf.selection_info(subset)


def test_a_sample_of_a_sample_keeps_one_record():
    first = instag_hf.sample(make(HAND), 5)
    second = instag_hf.sample(first, 2, strategy="random", seed=0)
    assert second.info.description.count("instag_hf.selection: ") == 1
    assert instag_hf.selection_info(second).strategy == "random"
    assert instag_hf.selection_info(first).strategy == "instag"


def test_distinct_requests_keep_distinct_records_even_for_the_same_rows():
    ds = make(HAND)
    a = instag_hf.sample(ds, 2)
    b = instag_hf.sample(ds, 2, seed=1)  # same rows: ties do not matter here
    assert ids(a) == ids(b) and a._fingerprint != b._fingerprint
    assert instag_hf.selection_info(a).seed is None and instag_hf.selection_info(b).seed == 1
    assert instag_hf.sample(ds, 2)._fingerprint == a._fingerprint  # deterministic
