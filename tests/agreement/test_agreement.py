"""Tag agreement: the figures by hand, real embeddings, the evaluate metric, compare, the CLI."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import evaluate
import numpy as np
import pytest
from click.testing import CliRunner
from datasets import Dataset

import instag_hf
from instag_hf.agreement import METRIC_PATH, TagMatcher, score
from instag_hf.cli import main
from instag_hf.errors import AgreementError, ConfigurationError, MissingColumnError

# ----------------------------------------------------------------------------- helpers


def unit(degrees: float) -> np.ndarray:
    angle = math.radians(degrees)
    return np.array([math.cos(angle), math.sin(angle)], dtype=np.float32)


class AngleEncoder:
    """Hand-made embeddings: each text is a 2-D unit vector at a chosen angle; records its calls."""

    def __init__(self, angles: dict[str, float]) -> None:
        self.angles = angles
        self.calls: list[list[str]] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return np.stack([unit(self.angles[t]) for t in texts])


def figures(scores, kind):
    s = scores[kind]
    return (s.micro_precision, s.micro_recall, s.micro_f1, s.macro_precision, s.macro_recall, s.macro_f1)


def raw(*turns: list[str]) -> list[dict]:
    """An instag_raw_tags value: one tag list per user turn."""
    return [{"turn": t, "tag": tag, "explanation": ""} for t, tags in enumerate(turns) for tag in tags]


# ----------------------------------------------------------------------------- figures by hand


def test_exact_raw_and_rule_key_are_reported_apart():
    scores = score([["Email writing", "Poetry", "poetry"]], [["email-writing", "math"]], mode="exact")
    # raw: 3 distinct strings against 2, none identical
    assert figures(scores, "exact_raw") == (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    assert (scores["exact_raw"].predicted, scores["exact_raw"].referenced) == (3, 2)
    # rule key: {email write, poetri} against {email write, math}: one match of two each
    assert figures(scores, "exact") == (0.5, 0.5, 0.5, 0.5, 0.5, 0.5)
    assert (scores["exact"].matched, scores["exact"].predicted, scores["exact"].referenced) == (1, 2, 2)
    assert set(scores) == {"exact_raw", "exact"}


def test_a_tag_repeated_in_a_row_counts_once():
    scores = score([["a", "a", "b"]], [["a", "a"]], mode="exact")
    # predicted {a, b}, reference {a}: P 1/2, R 1/1, F1 2*1/(2+1)
    assert figures(scores, "exact_raw") == pytest.approx((0.5, 1.0, 2 / 3, 0.5, 1.0, 2 / 3))


def test_micro_and_macro_differ_as_computed_by_hand():
    predictions = [["a", "b", "c", "d"], ["x"]]
    references = [["a", "b", "c", "d"], ["y"]]
    s = score(predictions, references, mode="exact")["exact_raw"]
    # micro: 4 matches of 5 predicted and 5 reference tags
    assert (s.micro_precision, s.micro_recall, s.micro_f1) == pytest.approx((0.8, 0.8, 0.8))
    # macro: rows score 1.0 and 0.0
    assert (s.macro_precision, s.macro_recall, s.macro_f1) == pytest.approx((0.5, 0.5, 0.5))
    assert (s.matched, s.predicted, s.referenced, s.rows, s.empty_rows) == (4, 5, 5, 2, 0)


def test_empty_rows_follow_the_documented_rule():
    predictions = [[], [], ["a"], ["", "  ", None], ["b"]]
    references = [[], ["a"], ["a"], [], None]
    s = score(predictions, references, mode="exact")["exact_raw"]
    # row 0 and row 3 (blank strings and None are not tags): nothing on either side, left out;
    # row 1 (prediction empty) and row 4 (reference empty) score 0; row 2 scores 1
    assert (s.rows, s.empty_rows) == (3, 2)
    assert (s.macro_precision, s.macro_recall, s.macro_f1) == pytest.approx((1 / 3, 1 / 3, 1 / 3))
    # micro: 1 match, 2 predicted, 2 reference tags
    assert (s.micro_precision, s.micro_recall, s.micro_f1) == pytest.approx((0.5, 0.5, 0.5))


def test_no_tag_at_all_gives_zeros_not_errors():
    s = score([[], []], [[], []], mode="exact")["exact"]
    assert figures({"exact": s}, "exact") == (0.0,) * 6
    assert (s.rows, s.empty_rows) == (0, 2)
    assert score([], [], mode="exact")["exact"].rows == 0


def test_tags_without_letters_have_no_rule_key():
    scores = score([["!!!", "math"]], [["math", "???"]], mode="exact")
    assert scores["exact_raw"].predicted == 2 and scores["exact"].predicted == 1
    assert scores["exact"].micro_f1 == 1.0


# Angles: a 0, x 10, y -30, b 40 degrees. Similarities: a-x 0.985, a-y 0.866, b-x 0.866,
# b-y 0.342. At threshold 0.8 the edges are a-x, a-y, b-x.
ANGLES = {"a": 0.0, "b": 40.0, "x": 10.0, "y": -30.0}


def greedy_matches(sims: dict[tuple[str, str], float], threshold: float) -> int:
    """Matching by decreasing similarity, each tag once: what the metric does NOT do."""
    used, count = set(), 0
    for (p, r), sim in sorted(sims.items(), key=lambda item: -item[1]):
        if sim > threshold and p not in used and r not in used:
            used |= {p, r}
            count += 1
    return count


def test_maximum_matching_finds_pairs_that_greedy_misses():
    sims = {(p, r): float(unit(ANGLES[p]) @ unit(ANGLES[r])) for p in "ab" for r in "xy"}
    assert greedy_matches(sims, 0.8) == 1  # greedy takes a-x first and leaves b and y unmatched
    s = score([["a", "b"]], [["x", "y"]], mode="semantic", encoder=AngleEncoder(ANGLES))["semantic"]
    assert s.matched == 2  # a-y and b-x
    assert figures({"semantic": s}, "semantic") == (1.0,) * 6


def test_semantic_threshold_by_hand():
    encoder = AngleEncoder(ANGLES)
    # at 0.9 only a-x (0.985) is an edge: one match of two on each side
    s = score([["a", "b"]], [["x", "y"]], mode="semantic", threshold=0.9, encoder=encoder)["semantic"]
    assert (s.matched, s.micro_precision, s.micro_recall) == (1, 0.5, 0.5)
    # at 0.3 every pair is an edge; still one partner per tag
    s = score([["a", "b"]], [["x", "y"]], mode="semantic", threshold=0.3, encoder=encoder)["semantic"]
    assert s.matched == 2
    # strictly greater: cos(30 degrees) at threshold cos(30 degrees) is no match
    edge = float(unit(0.0) @ unit(-30.0))
    s = score([["a"]], [["y"]], mode="semantic", threshold=edge, encoder=encoder)["semantic"]
    assert s.matched == 0


def test_semantic_counts_rule_key_matches_without_embedding_them():
    # the encoder puts both spellings' text at right angles to everything: only the key can match them
    encoder = AngleEncoder({"email writing": 0.0, "poetry": 90.0, "math": 180.0})
    s = score([["Email writing", "poetry"]], [["email-writing", "math"]], mode="semantic", encoder=encoder)
    assert s["semantic"].matched == 1  # equal keys match whatever their vectors
    encoder.calls.clear()
    s = score([["Email writing"], []], [["email-writing"], ["math"]], mode="semantic", encoder=encoder)
    assert s["semantic"].matched == 1
    assert encoder.calls == []  # a row whose only pair has equal keys needs no vector


def test_each_distinct_tag_is_embedded_once():
    encoder = AngleEncoder({"a": 0.0, "b": 40.0, "x": 10.0, "y": -30.0, "cooking": 120.0})
    predictions = [["a", "b"], ["A", "b"], ["a"], ["cooking"]] * 50
    references = [["x", "y"], ["x"], ["y"], ["x"]] * 50
    matcher = TagMatcher(mode="semantic", encoder=encoder)
    first = matcher.match(predictions, references).scores["semantic"]
    assert len(encoder.calls) == 1
    assert sorted(encoder.calls[0]) == ["a", "b", "cooking", "x", "y"]  # "A" and "a" share a key: one text
    again = matcher.match(predictions[:3], references[:3]).scores["semantic"]
    assert len(encoder.calls) == 1  # the matcher kept the vectors
    assert first.rows == 200 and again.rows == 3


def test_missed_and_invented_tags_are_ranked():
    matches = TagMatcher(mode="exact").match(
        [["math", "poetry"], ["math", "poetry"], ["code"]], [["math", "travel"], ["travel"], ["code", "music"]]
    )
    assert matches.missed["exact"] == [("travel", 2), ("music", 1)]
    assert matches.invented["exact"] == [("poetry", 2), ("math", 1)]


@pytest.mark.parametrize(
    ("predictions", "references", "kwargs", "needle"),
    [
        ([["a"]], [], {}, "predictions has 1 rows and references 0"),
        (["math"], [["math"]], {}, "must be a list of tags"),
        ([[3]], [["math"]], {}, "tags are strings"),
        ([["a"]], [["a"]], {"mode": "fuzzy"}, "Unknown mode"),
        ([["a"]], [["a"]], {"threshold": 1.5}, "threshold"),
    ],
)
def test_bad_input_is_a_clear_error(predictions, references, kwargs, needle):
    with pytest.raises(ConfigurationError, match=needle):
        score(predictions, references, **{"mode": "exact", **kwargs})


# ----------------------------------------------------------------------------- real embeddings


@pytest.fixture(scope="module")
def matcher():
    return TagMatcher(mode="all")  # the packaged all-MiniLM-L6-v2


def test_near_synonyms_match_and_unrelated_tags_do_not(matcher):
    predictions = [["math"], ["code generation"], ["travel planning"], ["math"], ["code generation"]]
    references = [["mathematics"], ["generating code"], ["trip planning"], ["poetry"], ["cooking"]]
    result = matcher.match(predictions, references)
    assert result.scores["exact"].matched == 0
    assert result.scores["semantic"].matched == 3
    assert result.scores["semantic"].micro_f1 == pytest.approx(0.6)
    assert matcher.similarity("math", "poetry") < 0.5 < 0.8 < matcher.similarity("math", "mathematics")
    assert matcher.resolved_model_id() == "sentence-transformers/all-MiniLM-L6-v2"


def test_the_threshold_edge_with_real_embeddings():
    # A fresh matcher, as score() makes: the module's shared one holds embeddings computed in
    # other batches, whose padding moves the last bit of the similarity (the edge is exact).
    sim = TagMatcher("semantic").similarity("code generation", "generating code")
    assert 0.8 < sim < 1.0
    at = score([["code generation"]], [["generating code"]], mode="semantic", threshold=sim)["semantic"]
    below = score([["code generation"]], [["generating code"]], mode="semantic",
                  threshold=float(np.nextafter(sim, -1.0)))["semantic"]  # fmt: skip
    assert (at.matched, below.matched) == (0, 1)


# ----------------------------------------------------------------------------- the evaluate metric


def test_the_metric_path_holds_the_module_and_its_card():
    folder = Path(METRIC_PATH)
    assert (folder / "instag_agreement.py").is_file() and (folder / "README.md").is_file()


def test_the_metric_computes_the_same_figures():
    metric = evaluate.load(METRIC_PATH)
    predictions = [["Email writing", "poetry"], [], ["a", "b", "c", "d"]]
    references = [["email-writing"], [], ["a", "b", "c", "d"]]
    result = metric.compute(predictions=predictions, references=references, mode="exact")
    expected = score(predictions, references, mode="exact")
    for kind in ("exact_raw", "exact"):
        for name, value in expected[kind].to_dict().items():
            if name != "kind":
                assert result[f"{kind}_{name}"] == value
    assert result["exact_micro_precision"] == pytest.approx(5 / 6) and result["exact_micro_recall"] == 1.0
    assert result["exact_raw_empty_rows"] == 1
    assert not any(key.startswith("semantic") for key in result)
    metric.add_batch(predictions=[["math"]], references=[["mathematics"]])
    metric.add_batch(predictions=[["poetry"]], references=[["cooking"]])
    result = metric.compute(mode="semantic")
    assert (result["semantic_matched"], result["semantic_rows"]) == (1, 2)
    assert result["semantic_threshold"] == 0.8
    assert result["embedding_model"] == "sentence-transformers/all-MiniLM-L6-v2"


def test_the_metric_loads_offline_in_a_fresh_process(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "INSTAG_EMBEDDING_MODEL"}
    env.update(HF_HOME=str(tmp_path), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_EVALUATE_OFFLINE="1")
    script = (
        "import evaluate, json, instag_hf.agreement as a\n"
        "m = evaluate.load(a.METRIC_PATH)\n"
        "r = m.compute(predictions=[['Math', 'poetry']], references=[['mathematics']])\n"
        "print(json.dumps(r))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=Path(instag_hf.__file__).parents[1],
                          capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert (result["exact_raw_matched"], result["exact_matched"], result["semantic_matched"]) == (0, 0, 1)
    assert result["semantic_micro_precision"] == 0.5 and result["semantic_micro_recall"] == 1.0


# ----------------------------------------------------------------------------- compare


def tagged(prompts: list[str], tags: list[list[str] | None], errors: list[str | None] | None = None) -> Dataset:
    return Dataset.from_dict(
        {
            "prompt": prompts,
            "instag_raw_tags": [None if t is None else raw(t) for t in tags],
            "instag_error": errors or [None] * len(prompts),
        }
    )


PROMPTS = [f"query {i}" for i in range(6)]
TAGS_A = [["math"], ["poetry", "Email writing"], ["code generation"], [], ["travel"], ["math", "cooking"]]
TAGS_B = [["mathematics"], ["poetry"], ["generating code"], [], ["music"], ["math"]]


def test_compare_aligns_by_query_not_position():
    a = tagged(PROMPTS, TAGS_A)
    b = tagged(PROMPTS + ["only in b"], TAGS_B + [["x"]])
    straight = instag_hf.compare(a, b, mode="exact")
    shuffled = instag_hf.compare(a, b.shuffle(seed=3), mode="exact")
    assert straight.scores == shuffled.scores
    assert (shuffled.rows_compared, shuffled.rows_only_a, shuffled.rows_only_b) == (6, 0, 1)
    s = shuffled.scores["exact"]
    # matches: poetry, math (row 5); predicted 7 distinct, reference 5
    assert (s.matched, s.predicted, s.referenced, s.rows, s.empty_rows) == (2, 7, 5, 5, 1)
    assert shuffled.matched_by == "exact" and shuffled.threshold is None and shuffled.embedding_model is None
    # read by position, the shuffled B would disagree: the alignment is what matters
    by_position = [[t["tag"] for t in row] for row in b.shuffle(seed=3)["instag_raw_tags"][:6]]
    assert score(TAGS_A, by_position, mode="exact")["exact"].matched != s.matched


def test_compare_reports_missed_invented_and_semantic_figures():
    result = instag_hf.compare(tagged(PROMPTS, TAGS_A), tagged(PROMPTS, TAGS_B))
    assert result.matched_by == "semantic" and result.threshold == 0.8
    assert result.embedding_model == "sentence-transformers/all-MiniLM-L6-v2"
    semantic = result.scores["semantic"]
    assert semantic.matched == 4  # math~mathematics, poetry, code generation~generating code, math
    assert dict(result.invented) == {"Email writing": 1, "travel": 1, "cooking": 1}
    assert dict(result.missed) == {"music": 1}
    assert result.scores["exact"].micro_f1 <= semantic.micro_f1
    table = result.summary()
    assert "semantic" in table and "music (1)" in table
    json.dumps(result.to_dict())  # JSON-ready


def test_compare_with_no_shared_query_says_what_to_check():
    with pytest.raises(AgreementError, match="share no query") as raised:
        instag_hf.compare(tagged(["a", "b"], [["x"], ["y"]]), tagged(["c"], [["x"]]), mode="exact")
    assert "prompt column 'prompt'" in str(raised.value)


def test_rows_that_failed_tagging_are_left_out():
    a = tagged(PROMPTS[:3], [["math"], [], None], [None, "endpoint down", "parse error"])
    b = tagged(PROMPTS[:3], [["math"], ["poetry"], ["code"]])
    result = instag_hf.compare(a, b, mode="exact")
    assert (result.rows_compared, result.failed_rows) == (1, 2)
    assert result.scores["exact"].micro_f1 == 1.0
    with pytest.raises(AgreementError, match="failed tagging"):
        instag_hf.compare(a.select([1, 2]), b, mode="exact")


def test_duplicate_queries_keep_the_first_row():
    a = tagged(["q", "q", "r"], [["math"], ["poetry"], ["x"]])
    b = tagged(["q", "r"], [["math"], ["x"]])
    result = instag_hf.compare(a, b, mode="exact")
    assert (result.duplicate_rows_a, result.rows_compared, result.scores["exact"].micro_f1) == (1, 2, 1.0)


def test_per_turn_agreement_of_multi_turn_rows():
    def conversation(*queries):
        turns = []
        for query in queries:
            turns += [{"from": "human", "value": query}, {"from": "gpt", "value": "ok"}]
        return turns

    convs = [conversation("hi", "write a poem"), conversation("solve x", "now in python", "explain"),
             conversation("single")]  # fmt: skip
    a = Dataset.from_dict(
        {
            "conversations": convs,
            "instag_raw_tags": [
                raw(["greeting"], ["poetry writing"]),
                raw(["math"], ["code generation"], ["explanation"]),
                raw(["x"]),
            ],
        }
    )
    b = Dataset.from_dict(
        {
            "conversations": convs[::-1],
            "instag_raw_tags": [raw(["x"]), raw(["math"], ["debugging"], ["explanation"]), raw(["greeting"], ["poem"])],
        }
    )
    result = instag_hf.compare(a, b, mode="exact")
    assert result.multi_turn_rows == 2
    turns = {t.turn: (t.rows, t.scores["exact"].matched, t.scores["exact"].micro_f1) for t in result.per_turn}
    # turn 0: greeting and math both match; turn 1: nothing matches; turn 2 (one row): explanation
    assert turns == {0: (2, 2, 1.0), 1: (2, 0, 0.0), 2: (1, 1, 1.0)}
    assert "per turn (2 multi-turn rows)" in result.summary()


def test_two_tag_columns_of_one_dataset():
    ds = Dataset.from_dict({"prompt": ["a", "b"], "small": [["math"], ["poem"]], "large": [["Math"], ["poetry"]]})
    result = instag_hf.compare(ds, column_a="small", column_b="large", mode="exact")
    assert (result.scores["exact_raw"].matched, result.scores["exact"].matched) == (0, 1)
    assert result.per_turn == []  # plain tag lists carry no turns
    with pytest.raises(ConfigurationError, match="name both"):
        instag_hf.compare(ds, column_a="small")
    with pytest.raises(MissingColumnError, match="no 'nope' column"):
        instag_hf.compare(ds, ds, column_a="nope", mode="exact")


# ----------------------------------------------------------------------------- CLI


def test_instag_compare_prints_a_table_and_writes_json(tmp_path):
    a_path, b_path = tmp_path / "a.jsonl", tmp_path / "b"
    tagged(PROMPTS, TAGS_A).to_json(a_path)
    tagged(PROMPTS, TAGS_B).shuffle(seed=1).save_to_disk(b_path)
    out = tmp_path / "report.json"
    done = CliRunner().invoke(main, ["compare", str(a_path), str(b_path), "--mode", "exact", "--json", str(out)])
    assert done.exit_code == 0, (done.output, done.exception)
    assert "exact_raw" in done.output and "micro F1" in done.output
    report = json.loads(out.read_text())
    assert report["scores"]["exact"]["matched"] == 2 and report["rows_compared"] == 6
    alone = CliRunner().invoke(main, ["compare", str(a_path), str(b_path), "--mode", "exact", "--json"])
    assert alone.exit_code == 0, alone.output
    assert json.loads(alone.stdout) == report


def test_instag_compare_errors_are_one_line(tmp_path):
    tagged(["a"], [["x"]]).to_json(tmp_path / "a.jsonl")
    tagged(["b"], [["x"]]).to_json(tmp_path / "b.jsonl")
    done = CliRunner().invoke(main, ["compare", str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")])
    assert done.exit_code == 1
    assert "Error: The two datasets share no query" in done.output and "Traceback" not in done.output
