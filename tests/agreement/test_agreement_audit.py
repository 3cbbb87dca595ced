"""The sampled audit in the card, end to end against two differently-configured TGI-protocol servers.

The pool is tagged by the shared server (the default fake model); the audit asks a second
server that reports another model id and answers another tag set (``tag_variant=1``: the
same keyword tags, other hash-picked tags, written capitalised). The expected agreement is
computed here from the fake models themselves, not by the code under test.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from datasets import Dataset

from instag_hf.agreement import Audit, audit
from instag_hf.errors import CardError
from instag_hf.pipeline import run_chain
from instag_hf.publishing.card import build_card
from instag_hf.tagging.tagger import Tagger
from tests.servers import _tgi_model
from tests.servers.tgi_server import start_tgi_server
from tests.test_cli import QUICK, assert_ok, invoke, make_rows, write_jsonl

AUDIT_MODEL = "instag-fake/large-tagger"
POOL_MODEL = "instag-fake/tgi-tagger"  # the shared server's default model id


@pytest.fixture(scope="module")
def audit_server_process():
    with start_tgi_server(model_id=AUDIT_MODEL, tag_variant=1) as server:
        yield server


@pytest.fixture
def audit_server(audit_server_process):
    audit_server_process.reset(knobs=True)
    return audit_server_process


def expected_f1(queries: list[str]) -> tuple[float, float]:
    """Micro exact F1 (raw strings, and lowercase, which is the rule key for these tags) by hand."""
    totals = {"raw": [0, 0, 0], "key": [0, 0, 0]}
    for query in queries:
        pool = [t["tag"] for t in _tgi_model.tag_query(query)]
        reference = [t["tag"] for t in _tgi_model.tag_query(query, variant=1)]
        for name, fold in (("raw", str), ("key", str.lower)):
            a, b = {fold(t) for t in pool}, {fold(t) for t in reference}
            totals[name][0] += len(a & b)
            totals[name][1] += len(a)
            totals[name][2] += len(b)
    return tuple(2 * m / (p + r) for m, p, r in (totals["raw"], totals["key"]))  # type: ignore[return-value]


def test_the_two_fake_models_disagree_in_a_useful_way():
    queries = [row["prompt"] for row in make_rows(40)]
    raw_f1, key_f1 = expected_f1(queries)
    assert 0.0 < raw_f1 < key_f1 < 1.0  # some agreement, more of it after the rule key, never total


def audit_line(card: str) -> str:
    return next(line for line in card.splitlines() if line.startswith("- **Tag audit:**"))


def test_run_with_an_audit_puts_the_agreement_in_the_card_and_reruns_from_cache(tgi, audit_server, tmp_path):
    rows = make_rows(40)
    pool = write_jsonl(tmp_path / "pool.jsonl", rows)
    args = ("run", pool, "--endpoint", tgi.url, "-n", 8, "--seed", 0, *QUICK, "--cache-dir", tmp_path / "requests",
            "--audit-endpoint", audit_server.url, "--audit-model", AUDIT_MODEL)  # fmt: skip
    result = invoke(*args, "--output-dir", tmp_path / "first")
    assert_ok(result)
    assert audit_server.stats()["requests"] == 40  # --audit-rows 200 > 40 rows: the whole pool, once each
    line = audit_line((tmp_path / "first" / "README.md").read_text())
    raw_f1, key_f1 = expected_f1([row["prompt"] for row in rows])
    assert "40 pool rows drawn at random (seed `0`) were tagged again by `instag-fake/large-tagger`" in line
    assert f"on the 40 rows tagged by both, the pool's tagger (`{POOL_MODEL}`)" in line
    assert f"exact-match tag F1 {100 * key_f1:.1f}%" in line and f"{100 * raw_f1:.1f}% as written" in line
    semantic = float(re.search(r"semantic tag F1 ([\d.]+)%", line).group(1))
    assert 100 * key_f1 - 0.05 <= semantic <= 100
    assert "cosine similarity above 0.8 with `sentence-transformers/all-MiniLM-L6-v2`" in line
    assert "audit: 40 of 40 sampled rows re-tagged by instag-fake/large-tagger" in result.output

    # The same run again with the same request cache: neither server is sent anything.
    tgi.reset()
    audit_server.reset()
    again = invoke(*args, "--output-dir", tmp_path / "second")
    assert_ok(again)
    assert tgi.stats()["requests"] == 0 and audit_server.stats()["requests"] == 0
    assert "(requests sent: 0, answered from cache: 40)" in again.output
    assert audit_line((tmp_path / "second" / "README.md").read_text()) == line


def test_the_audit_samples_with_its_seed_and_never_changes_the_subset(tgi, audit_server, tmp_path):
    pool = Dataset.from_list(make_rows(40, seed=5))
    cache = tmp_path / "requests"
    settings = {"min_frequency": 1, "semantic_aggregation": False}
    plain = run_chain(pool, 8, tagger=Tagger(tgi.url, cache=cache), normalizer=settings, seed=0)
    audited = run_chain(pool, 8, tagger=Tagger(tgi.url, cache=cache), normalizer=settings, seed=0,
                        audit_tagger=Tagger(audit_server.url, cache=cache), audit_rows=10, audit_seed=7)  # fmt: skip
    assert audited.subset.to_list() == plain.subset.to_list()
    assert audited.pool.to_list() == plain.pool.to_list()
    report = audited.audit
    assert (report.rows_sampled, report.rows_compared, report.seed) == (10, 10, 7)
    assert (report.candidate_model, report.reference_model) == (POOL_MODEL, AUDIT_MODEL)
    drawn = sorted(np.random.default_rng(7).choice(40, size=10, replace=False))
    expected_queries = {pool[int(i)]["prompt"] for i in drawn}
    assert set(audit_server.stats()["queries"]) == expected_queries
    assert report.exact_f1 == pytest.approx(expected_f1(sorted(expected_queries))[1])

    # Asked again through a Tagger with the cache: the same figures, nothing sent.
    audit_server.reset()
    again = audit(audited.pool, Tagger(audit_server.url, cache=cache), rows=10, seed=7, pool_tagger=POOL_MODEL)
    assert audit_server.stats()["requests"] == 0 and again.cache_hits == 10
    assert (again.exact_f1, again.exact_raw_f1, again.semantic_f1) == (
        report.exact_f1,
        report.exact_raw_f1,
        report.semantic_f1,
    )


def test_a_wrong_audit_model_fails_before_the_pool_is_tagged(tgi, audit_server, tmp_path):
    pool = write_jsonl(tmp_path / "pool.jsonl", make_rows(10))
    result = invoke("run", pool, "--endpoint", tgi.url, "-n", 3, *QUICK, "--output-dir", tmp_path / "out",
                    "--audit-endpoint", audit_server.url, "--audit-model", "org/another-model")  # fmt: skip
    assert result.exit_code == 1
    assert f"'{AUDIT_MODEL}', not 'org/another-model'" in result.output
    assert tgi.stats()["requests"] == 0 and audit_server.stats()["requests"] == 0
    lonely = invoke("run", pool, "--endpoint", tgi.url, "-n", 3, "--output-dir", tmp_path / "out",
                    "--audit-model", AUDIT_MODEL)  # fmt: skip
    assert lonely.exit_code == 2 and "--audit-model needs --audit-endpoint" in lonely.output


def test_audit_model_chooses_among_the_models_an_audit_server_lists(tgi, tmp_path):
    # An OpenAI-compatible audit server with two models: --audit-model picks one, and the
    # pool's own tagger settings (--model is not given here) do not leak into the audit's.
    with start_tgi_server(personality="openai", models=["org/small", "org/large"]) as reference:
        pool = write_jsonl(tmp_path / "pool.jsonl", make_rows(12))
        result = invoke("run", pool, "--endpoint", tgi.url, "-n", 3, *QUICK, "--cache-dir", tmp_path / "req",
                        "--output-dir", tmp_path / "out", "--audit-endpoint", reference.url,
                        "--audit-model", "org/large", "--audit-rows", 5)  # fmt: skip
        assert_ok(result)
        # The server answers 404 for a model it does not serve: 5 answered requests were for org/large.
        assert reference.stats()["statuses"] == {"200": 5}
    card = (tmp_path / "out" / "README.md").read_text(encoding="utf-8")
    assert "`org/large`" in audit_line(card)
    many = invoke(
        "run",
        pool,
        "--endpoint",
        tgi.url,
        "-n",
        3,
        *QUICK,
        "--output-dir",
        tmp_path / "out2",
        "--audit-endpoint",
        tgi.url + "/",
    )  # a one-model server needs no --audit-model
    assert_ok(many)


REPORT = Audit(rows_sampled=200, rows_compared=198, seed=3, candidate_model=None, reference_model="org/big",
               exact_raw_f1=0.25, exact_f1=0.318, semantic_f1=0.734, threshold=0.8,
               embedding_model="sentence-transformers/all-MiniLM-L6-v2")  # fmt: skip


def test_build_card_takes_an_audit_or_its_dict():
    subset = Dataset.from_dict({"prompt": ["a", "b"], "instag_tags": [["math"], ["poetry", "math"]]})
    line = audit_line(build_card(subset, audit=REPORT, plots=False).text)
    assert line.startswith("- **Tag audit:** 200 pool rows drawn at random (seed `3`) were tagged again by `org/big`")
    assert "the pool's tagger agrees" in line  # no model recorded for it: nothing invented
    assert "exact-match tag F1 31.8% (" in line and "25.0% as written" in line and "semantic tag F1 73.4%" in line
    assert audit_line(build_card(subset, audit=REPORT.to_dict(), plots=False).text) == line
    assert Audit.from_dict(REPORT.to_dict()) == REPORT
    exact_only = Audit.from_dict({**REPORT.to_dict(), "semantic_f1": None, "threshold": None, "embedding_model": None})
    exact_line = audit_line(build_card(subset, audit=exact_only, plots=False).text)
    assert "exact-match tag F1 31.8%" in exact_line and "semantic tag F1" not in exact_line
    assert "Tag audit" not in build_card(subset, plots=False).text
    with pytest.raises(CardError, match="audit must be"):
        build_card(subset, audit=0.7)  # type: ignore[arg-type]
    with pytest.raises(CardError, match="incomplete"):
        build_card(subset, audit={"seed": 1})
