"""Server kinds, their structured-output dialects, model choice and token accounting, against
the loopback server's two personalities and the real llama.cpp server."""

from __future__ import annotations

import json
import logging
import urllib.request

import datasets
import pytest
from datasets.fingerprint import Hasher
from jsonschema import Draft202012Validator

from instag_hf import Tagger
from instag_hf.errors import ConfigurationError
from instag_hf.tagging.dialects import (
    JSON_OBJECT,
    JSON_SCHEMA,
    LLAMACPP,
    OPENAI,
    SGLANG,
    TGI,
    TGI_GRAMMAR,
    VLLM,
    answer_schema,
    build_request,
    first_form,
    strict_schema,
)
from instag_hf.tagging.prompts import TAGS_JSON_SCHEMA, get_template
from tests.servers import _tgi_model as fake_model
from tests.servers._openai_protocol import spec_validator
from tests.servers._tgi_protocol import SPEC as TGI_SPEC
from tests.servers._tgi_protocol import openapi_to_jsonschema
from tests.test_cli import assert_ok, assert_one_line_error, invoke, make_rows, write_jsonl

MODELS = ["org/alpha-instruct", "org/beta-instruct", "org/gamma-instruct"]
GREEDY = {"max_new_tokens": 512, "do_sample": False}
SAMPLED = {"max_new_tokens": 512, "do_sample": True, "temperature": 0.7, "seed": 1}


def prompts(n: int, salt: str = "") -> datasets.Dataset:
    return datasets.Dataset.from_dict({"prompt": [f"{salt}Explain how to cook rice, variant {i}" for i in range(n)]})


@pytest.fixture
def vllm(openai_server):
    return openai_server(models=MODELS)


# -- each dialect's body is valid against its server's own spec ---------------------------


@pytest.mark.parametrize("params", [GREEDY, SAMPLED])
def test_tgi_bodies_follow_tgis_spec(params):
    defs = TGI_SPEC["components"]["schemas"]
    for raw, route, schema in ((True, "/generate", "GenerateRequest"), (False, "/v1/chat/completions", "ChatRequest")):
        path, body = build_request(
            TGI, "m", "Tag this: [begin]\nx\n[end]", raw, params, TAGS_JSON_SCHEMA, first_form(TGI)
        )
        assert path == route
        Draft202012Validator(openapi_to_jsonschema(defs[schema], defs)).validate(body)


@pytest.mark.parametrize("kind", [VLLM, SGLANG, OPENAI])
@pytest.mark.parametrize("params", [GREEDY, SAMPLED])
def test_openai_compatible_bodies_follow_openais_spec(kind, params):
    validator = spec_validator("CreateChatCompletionRequest")
    for form in (first_form(kind), JSON_OBJECT):
        path, body = build_request(kind, "org/alpha-instruct", "Tag this", False, params, TAGS_JSON_SCHEMA, form)
        assert path == "/v1/chat/completions"
        validator.validate(body)
    assert first_form(kind) == JSON_SCHEMA
    rf = build_request(kind, "m", "p", False, params, TAGS_JSON_SCHEMA, JSON_SCHEMA)[1]["response_format"]
    assert rf["json_schema"]["strict"] is True and rf["json_schema"]["schema"] == strict_schema(
        answer_schema(TAGS_JSON_SCHEMA)
    )
    assert "minItems" not in json.dumps(rf)
    Draft202012Validator.check_schema(rf["json_schema"]["schema"])


def test_llama_cpp_body_follows_the_shipped_servers_own_spec(llama_server):
    with urllib.request.urlopen(llama_server + "/openapi.json", timeout=30) as response:
        spec = json.loads(response.read())
    defs = spec["components"]["schemas"]
    validator = Draft202012Validator(openapi_to_jsonschema(defs["CreateChatCompletionRequest"], defs))
    for params in (GREEDY, SAMPLED):
        path, body = build_request(
            LLAMACPP, "model.gguf", "Tag this", False, params, TAGS_JSON_SCHEMA, first_form(LLAMACPP)
        )
        validator.validate(body)
        assert body["response_format"] == {"type": "json_object", "schema": answer_schema(TAGS_JSON_SCHEMA)}


def test_llama_cpp_is_detected_and_answers_in_its_form(llama_server, request_cache_dir):
    tagger = Tagger(llama_server, cache=request_cache_dir, max_new_tokens=96, progress=False)
    info = tagger.servers()[0]
    assert (info.kind, info.model_name) == (LLAMACPP, "SmolLM2-135M-Instruct.Q4_1.gguf")
    tagged = prompts(2, "llama ").map(tagger.atag, batched=True)
    assert all(tags or error for tags, error in zip(tagged["instag_raw_tags"], tagged["instag_error"]))
    assert tagger.stats.prompt_tokens > 0 and tagger.stats.generated_tokens > 0 and tagger.stats.unmetered == 0


# -- detection and forcing the kind ----------------------------------------------------------


@pytest.mark.parametrize(
    ("owned_by", "kind", "form"),
    [
        ("vllm", VLLM, "json_schema"),
        ("sglang", SGLANG, "json_schema"),
        ("openai", OPENAI, "json_schema"),
        ("llamacpp", LLAMACPP, "json_object"),
        ("me", LLAMACPP, "json_object"),
        ("someone", OPENAI, "json_schema"),
    ],
)
def test_the_kind_comes_from_owned_by_and_decides_the_form(vllm, request_cache_dir, owned_by, kind, form):
    vllm.set_knobs(owned_by=owned_by, models=MODELS[:1])
    tagger = Tagger(vllm.url + "/v1", cache=request_cache_dir, progress=False)  # a /v1 base URL is fine
    tagged = prompts(4).map(tagger.atag, batched=True)
    assert tagger.servers()[0].kind == kind
    assert all(e is None for e in tagged["instag_error"]) and all(tagged["instag_raw_tags"])
    assert vllm.stats()["formats"] == {form: 4}  # and the server validated every body


def test_tgi_is_detected_by_info_and_gets_its_grammar(tgi, request_cache_dir):
    tagger = Tagger(tgi.url, cache=request_cache_dir, progress=False)
    prompts(3).map(tagger.atag, batched=True)
    raw = Tagger(tgi.url, template="instagger", cache=request_cache_dir, progress=False)
    prompts(3).map(raw.atag, batched=True)
    assert tagger.servers()[0].kind == TGI and first_form(TGI) == TGI_GRAMMAR
    assert tgi.stats()["formats"] == {"json": 6}  # response_format on the chat route, grammar on /generate


def test_the_server_kind_can_be_forced(vllm, request_cache_dir):
    vllm.set_knobs(models=MODELS[:1])
    tagger = Tagger(vllm.url, server="llamacpp", cache=request_cache_dir, progress=False)
    prompts(3).map(tagger.atag, batched=True)
    assert tagger.servers()[0].kind == LLAMACPP and vllm.stats()["formats"] == {"json_object": 3}
    assert "server='llamacpp'" in repr(tagger)
    with pytest.raises(Exception, match="given as TGI but GET /info answered 404"):
        Tagger(vllm.url, server="tgi", cache=False).servers()
    with pytest.raises(ConfigurationError, match="Unknown server kind 'triton'"):
        Tagger(vllm.url, server="triton")


# -- model choice ----------------------------------------------------------------------------


def test_several_models_and_none_chosen_is_a_clear_error(vllm):
    with pytest.raises(ConfigurationError, match="serves 3 models") as caught:
        prompts(2).map(Tagger(vllm.url, cache=False, progress=False).atag, batched=True)
    message = str(caught.value)
    assert all(m in message for m in MODELS) and "Tagger(model=...)" in message and "--model" in message
    assert vllm.stats()["requests"] == 0
    many = [f"org/model-{i}" for i in range(12)]
    vllm.set_knobs(models=many)
    with pytest.raises(ConfigurationError, match=r"org/model-4 and 7 more"):
        Tagger(vllm.url, cache=False).servers()


def test_the_chosen_model_is_asked_and_is_part_of_the_cache_identity(vllm, request_cache_dir):
    alpha = Tagger(vllm.url, model=MODELS[0], cache=request_cache_dir, progress=False)
    beta = Tagger(vllm.url, model=MODELS[1], cache=request_cache_dir, progress=False)
    for tagger in (alpha, beta):
        tagged = prompts(5).map(tagger.atag, batched=True)
        assert all(e is None for e in tagged["instag_error"])
    assert beta.stats.cache_hits == 0 and vllm.stats()["requests"] == 10  # two models never share answers
    again = Tagger(vllm.url, model=MODELS[0], cache=request_cache_dir, progress=False)
    prompts(5).map(again.atag, batched=True)
    assert again.stats.cache_hits == 5
    assert Hasher.hash(alpha) != Hasher.hash(beta)


def test_a_model_the_server_does_not_serve_is_named(vllm, tgi):
    with pytest.raises(ConfigurationError, match="does not serve 'org/delta'; it serves org/alpha-instruct"):
        Tagger(vllm.url, model="org/delta").servers()
    with pytest.raises(ConfigurationError, match="TGI serving 'instag-fake/tgi-tagger', not 'org/delta'"):
        Tagger(tgi.url, model="org/delta").servers()
    assert Tagger(tgi.url, model="instag-fake/tgi-tagger").servers()[0].kind == TGI


# -- structured-output fallback --------------------------------------------------------------


def test_a_refused_json_schema_falls_back_to_json_object_once(vllm, request_cache_dir, caplog):
    vllm.set_knobs(reject_json_schema=True, models=MODELS[:1], max_concurrent_requests=4)
    tagger = Tagger(vllm.url, cache=request_cache_dir, concurrency=4, progress=False)
    with caplog.at_level(logging.WARNING, logger="instag_hf"):
        tagged = prompts(40).map(tagger.atag, batched=True)
    assert all(e is None for e in tagged["instag_error"]) and all(tagged["instag_raw_tags"])
    formats = vllm.stats()["formats"]
    assert formats["json_object"] == 40 and 1 <= formats["json_schema"] <= 4  # only the first wave
    warnings = [r for r in caplog.records if "refused the json_schema response format" in r.getMessage()]
    assert len(warnings) == 1 and "json_object" in warnings[0].getMessage()
    assert max(vllm.stats()["queries"].values()) <= 2  # each query: one refusal at most, then its answer
    prompts(10, "later ").map(tagger.atag, batched=True)
    assert vllm.stats()["formats"]["json_schema"] == formats["json_schema"]  # never tried again


def test_other_400s_do_not_change_the_form(vllm, request_cache_dir):
    vllm.set_knobs(models=MODELS[:1])
    tagger = Tagger(vllm.url, cache=request_cache_dir, max_new_tokens=8, progress=False)
    tagger.servers()  # detected with the default context length...
    vllm.set_knobs(max_input_tokens=30, max_total_tokens=60)  # ...which then shrinks below every prompt
    tagged = prompts(3).map(tagger.atag, batched=True)
    assert all("HTTP 400" in e and "maximum context length" in e for e in tagged["instag_error"])
    assert vllm.stats()["formats"] == {"json_schema": 3}


# -- token accounting ------------------------------------------------------------------------


def expected_tokens(queries: list[str], template: str) -> tuple[int, int]:
    """What the fake model's tokenizer counts for these queries: (prompt, generated)."""
    rendered = get_template(template)
    schema = answer_schema(TAGS_JSON_SCHEMA)
    prompt = sum(len(rendered.render(q).split()) for q in queries)
    generated = sum(len(fake_model.split_tokens(fake_model.render(q, schema, None)[0])) for q in queries)
    return prompt, generated


@pytest.mark.parametrize(("personality", "template"), [("openai", "paper"), ("tgi", "paper"), ("tgi", "instagger")])
def test_usage_is_summed_exactly(vllm, tgi, request_cache_dir, personality, template):
    server = vllm if personality == "openai" else tgi
    if personality == "openai":
        vllm.set_knobs(models=MODELS[:1])
    ds = prompts(30)
    tagger = Tagger(server.url, template=template, cache=request_cache_dir, progress=False)
    ds.map(tagger.atag, batched=True, batch_size=7)
    prompt, generated = expected_tokens(ds["prompt"], template)
    stats = tagger.stats
    assert (stats.prompt_tokens, stats.generated_tokens, stats.unmetered) == (prompt, generated, 0)
    again = Tagger(server.url, template=template, cache=request_cache_dir, progress=False)
    ds.map(again.atag, batched=True)
    assert (again.stats.prompt_tokens, again.stats.generated_tokens, again.stats.cache_hits) == (0, 0, 30)


def test_the_cli_chooses_the_model_and_the_server_kind(vllm, tmp_path):
    pool = write_jsonl(tmp_path / "pool.jsonl", make_rows(5, seed=2))
    assert_one_line_error(
        invoke("tag", pool, "--endpoint", vllm.url, "--no-cache", "-o", tmp_path / "a"), "serves 3 models", "--model"
    )
    result = invoke(
        "tag",
        pool,
        "--endpoint",
        vllm.url,
        "--model",
        MODELS[2],
        "--server",
        "openai",
        "--no-cache",
        "-o",
        tmp_path / "b",
    )
    assert_ok(result)
    assert "Tagged 5 rows (0 with an instag_error; 5 requests" in result.stdout
    assert vllm.stats()["formats"] == {"json_schema": 5}
    assert invoke("tag", pool, "--endpoint", vllm.url, "--server", "triton", "-o", tmp_path / "c").exit_code == 2
