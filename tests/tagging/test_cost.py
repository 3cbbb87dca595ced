"""What tagging costs, made visible: `instag tag --dry-run` (nothing sent), token counts in the
CLI's last line and progress bar, and the card's provenance line."""

from __future__ import annotations

import datasets
import pytest

import instag_hf
from instag_hf import Tagger
from instag_hf.tagging.prompts import get_template
from tests.tagging.test_endpoints import expected_tokens
from tests.test_cli import assert_ok, invoke, make_rows, write_jsonl

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def pool_file(tmp_path):
    return write_jsonl(tmp_path / "pool.jsonl", make_rows(12, seed=3))


def test_dry_run_counts_what_would_be_sent_after_the_cache_and_sends_nothing(tgi, pool_file, tmp_path):
    cache = tmp_path / "requests"
    rows = make_rows(12, seed=3)
    first = write_jsonl(tmp_path / "first.jsonl", rows[:8])
    assert_ok(invoke("tag", first, "--endpoint", tgi.url, "--cache-dir", cache, "-o", tmp_path / "tagged"))
    tgi.reset()
    result = invoke("tag", pool_file, "--endpoint", tgi.url, "--cache-dir", cache, "--dry-run")
    assert_ok(result)
    template = get_template("paper")
    estimate = -(-sum(len(template.render(r["prompt"])) for r in rows[8:]) // 4)
    assert (
        f"Dry run: 12 rows, 12 user queries (12 distinct); 8 answered by the request cache; would send 4 "
        f"requests to instag-fake/tgi-tagger on server kind tgi, about {estimate:,} prompt tokens"
    ) in result.output
    assert "Nothing was sent." in result.output
    stats = tgi.stats()
    assert stats["requests"] == 0 and set(stats["routes"]) == {"/info"}  # asked what it serves, nothing else
    assert not (tmp_path / "out").exists()


def test_dry_run_without_an_endpoint_still_counts(pool_file, tmp_path):
    result = invoke("tag", pool_file, "--dry-run")
    assert_ok(result)
    assert (
        "12 user queries (12 distinct); request cache not checked (no endpoint configured); would send 12"
        in result.output
    )


def test_dry_run_and_output_exclude_each_other(tgi, pool_file, tmp_path):
    assert invoke("tag", pool_file, "--endpoint", tgi.url, "--dry-run", "-o", tmp_path / "x").exit_code == 2
    assert invoke("tag", pool_file, "--endpoint", tgi.url).exit_code == 2
    assert tgi.stats()["requests"] == 0


def test_the_cli_shows_tokens_in_its_progress_bar_and_last_line(tgi, pool_file, tmp_path):
    result = invoke("tag", pool_file, "--endpoint", tgi.url, "--cache-dir", tmp_path / "req", "-o", tmp_path / "out")
    assert_ok(result)
    prompt, generated = expected_tokens([r["prompt"] for r in make_rows(12, seed=3)], "paper")
    last = result.stdout.strip().splitlines()[-1]
    assert f"12 requests, 0 answers from cache; {prompt} prompt tokens, {generated} generated tokens)" in last
    assert "prompt_tok=" in result.output and "gen_tok=" in result.output  # the progress bar's postfix


def test_the_card_carries_the_cost_of_tagging(tgi, request_cache_dir):
    queries = [r["prompt"] for r in make_rows(30, seed=4)]
    ds = datasets.Dataset.from_dict({"prompt": queries})
    tagger = Tagger(tgi.url, cache=request_cache_dir, progress=False)
    normalizer = instag_hf.TagNormalizer(min_frequency=1, semantic_aggregation=False)
    pool = ds.map(tagger.atag, batched=True)
    pool = pool.map(normalizer.fit(pool), batched=True)
    card = str(instag_hf.build_card(instag_hf.sample(pool, n=5, seed=0), pool=pool, tagger=tagger, plots=False))
    prompt, generated = expected_tokens(queries, "paper")
    assert (
        f"- **Tagging cost:** 30 queries, {prompt:,} prompt tokens, {generated:,} generated tokens, "
        "model `instag-fake/tgi-tagger` on server kind `tgi`\n"
    ) in card
    again = Tagger(tgi.url, cache=request_cache_dir, progress=False)
    ds.map(again.atag, batched=True)
    card = str(instag_hf.build_card(instag_hf.sample(pool, n=5, seed=0), pool=pool, tagger=again, plots=False))
    assert "**Tagging cost:** 0 queries, 0 prompt tokens, 0 generated tokens" in card
    assert "; 30 more queries answered by the request cache" in card
