"""The tags-only answer form (``Tagger(answer="tags")``, ``--answer tags``): its prompt, its
schema in every dialect, its parsing, and that the default's fingerprints and keys never moved."""

from __future__ import annotations

import json

import datasets
import pytest
from datasets.fingerprint import Hasher
from jsonschema import Draft202012Validator

from instag_hf import Tagger
from instag_hf.errors import ConfigurationError
from instag_hf.refresh.config import RefreshConfig
from instag_hf.tagging.cache import request_key
from instag_hf.tagging.client import first_params
from instag_hf.tagging.dialects import JSON_OBJECT, JSON_SCHEMA, SERVER_KINDS, TGI, build_request, first_form
from instag_hf.tagging.prompts import (
    INSTAGGER,
    PAPER,
    TAG_TITLES_JSON_SCHEMA,
    PromptTemplate,
    answer_json_schema,
    for_answer,
)
from instag_hf.tagging.settings import TaggerSettings
from tests.servers._openai_protocol import spec_validator
from tests.servers._tgi_protocol import SPEC as TGI_SPEC
from tests.servers._tgi_protocol import openapi_to_jsonschema
from tests.test_cli import assert_ok, invoke, make_rows, write_jsonl

pytestmark = pytest.mark.timeout(300)

#: request_key("vllm:m@", paper sha256, "hello", first_params(512)) computed before the answer
#: setting existed: the default's keys must stay these bytes, or every cache goes cold.
KEY_BEFORE = "868c9b8d0b9956362c86d680acbe691c62aa37c2a215d83c5579c78f506bc5fd"


def prompts(n: int) -> datasets.Dataset:
    return datasets.Dataset.from_dict({"prompt": [f"Explain how to cook rice in a pot, variant {i}" for i in range(n)]})


def test_the_tags_prompt_is_the_papers_with_only_its_answer_format_reworded():
    tags = for_answer(PAPER, "tags")
    head, tail = PAPER.text.split("Your answer should be", 1)
    assert tags.text.startswith(head) and tags.text.endswith("Please response in English.")
    assert "explanation" not in tags.text and "JSON format: [str]." in tags.text
    assert for_answer(PAPER, "paper") is PAPER
    assert "explanation" not in for_answer(INSTAGGER, "tags").text and for_answer(INSTAGGER, "tags").kind == "raw"
    custom = PromptTemplate("custom", "Tags for {query} as a JSON list of strings")
    assert for_answer(custom, "tags") is custom  # a custom text says its own answer format
    assert answer_json_schema("tags") == TAG_TITLES_JSON_SCHEMA


@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_every_dialect_constrains_the_answer_to_tag_titles(kind):
    schema = answer_json_schema("tags")
    reachable = [first_form(kind)] + ([JSON_OBJECT] if first_form(kind) == JSON_SCHEMA else [])  # after a refusal
    for form in reachable:
        path, body = build_request(kind, "m", "Tag [begin]\nx\n[end]", False, first_params(64, "tags"), schema, form)
        assert path == "/v1/chat/completions"
        assert "answer" not in body and body["temperature"] == 0.0
        rf = body["response_format"]
        inner = rf["json_schema"]["schema"] if form == JSON_SCHEMA else rf.get("value", rf.get("schema"))
        assert inner["properties"]["tags"]["items"] == {"type": "string"}
        if kind == TGI:
            defs = TGI_SPEC["components"]["schemas"]
            Draft202012Validator(openapi_to_jsonschema(defs["ChatRequest"], defs)).validate(body)
        else:
            spec_validator("CreateChatCompletionRequest").validate(body)
    path, body = build_request(TGI, "m", "raw", True, first_params(64, "tags"), schema, first_form(TGI))
    assert path == "/generate" and "answer" not in body["parameters"]  # not a generation parameter


def test_online_tagging_in_the_tags_form_fills_the_same_column_with_empty_explanations(
    openai_server, request_cache_dir
):
    server = openai_server()
    tagger = Tagger(server.url, answer="tags", cache=request_cache_dir, progress=False)
    tagged = prompts(4).map(tagger.atag, batched=True)
    assert all(error is None for error in tagged["instag_error"])
    assert all(tags and all(t["explanation"] == "" and t["tag"] for t in tags) for tags in tagged["instag_raw_tags"])
    assert tagger.stats.requests == 4
    # Its own cache keys: the paper form asks again, and each form then answers from cache.
    paper = Tagger(server.url, cache=request_cache_dir, progress=False)
    prompts(4).map(paper.atag, batched=True)
    assert paper.stats.requests == 4
    again = Tagger(server.url, answer="tags", cache=request_cache_dir, progress=False)
    prompts(4).map(again.atag, batched=True, load_from_cache_file=False)
    assert again.stats.requests == 0 and again.stats.cache_hits == 4


def test_the_default_keeps_its_fingerprint_and_cache_key_and_tags_changes_both():
    default, tags = Tagger(), Tagger(answer="tags")
    assert "answer" not in default.__getstate__() and "answer" not in default.settings.output_fields()
    assert tags.__getstate__()["answer"] == "tags" and tags.settings.output_fields()["answer"] == "tags"
    assert Hasher.hash(default) != Hasher.hash(tags)
    assert Hasher.hash(default) == Hasher.hash(Tagger(answer="paper"))
    assert request_key("vllm:m@", PAPER.sha256, "hello", first_params(512)) == KEY_BEFORE
    assert request_key("vllm:m@", PAPER.sha256, "hello", first_params(512, "tags")) != KEY_BEFORE
    # Pickled and back (num_proc workers), the form survives; a state without it is the default.
    state = tags.__getstate__()
    rebuilt = Tagger.__new__(Tagger)
    rebuilt.__setstate__(state)
    assert rebuilt.answer == "tags"
    assert TaggerSettings.from_state(default.settings.state(), ()).answer == "paper"


def test_a_bad_answer_form_is_refused_when_built():
    with pytest.raises(ConfigurationError, match="Unknown answer form 'short'.*'tags'"):
        Tagger(answer="short")


def test_the_cli_and_the_card_name_the_form(openai_server, tmp_path):
    server = openai_server()
    pool = write_jsonl(tmp_path / "pool.jsonl", make_rows(12, seed=5))
    out = tmp_path / "curated"
    result = invoke("run", pool, "--endpoint", server.url, "--answer", "tags", "--cache-dir", tmp_path / "c",
                    "--min-frequency", "1", "--no-semantic", "-n", "4", "--output-dir", out)  # fmt: skip
    assert_ok(result)
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "answer form `tags` (tag titles only)" in card
    assert "--answer tags" in card and "answer='tags'" in card  # the reproduction says it too
    assert invoke("tag", pool, "--answer", "long", "--dry-run").exit_code == 2


def test_a_refresh_target_takes_the_form_and_keeps_its_hash_at_the_default():
    base = {"targets": [{"repo": "me/a", "source": "org/pool", "n": 10}]}
    default = RefreshConfig.from_dict(base).targets[0]
    assert "answer" not in default.settings() and default.tagger_settings().answer == "paper"
    tags = RefreshConfig.from_dict({"targets": [{**base["targets"][0], "answer": "tags"}]}).targets[0]
    assert tags.tagger_settings().answer == "tags" and tags.settings_hash() != default.settings_hash()
    with pytest.raises(ConfigurationError, match="Unknown answer form"):
        RefreshConfig.from_dict({"targets": [{**base["targets"][0], "answer": "nope"}]})
    assert json.dumps(default.settings(), sort_keys=True)  # plain values
