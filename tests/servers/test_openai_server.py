"""The loopback server's OpenAI personality (chat completions as vLLM and OpenAI serve them),
its authentication and TLS, exercised over HTTP."""

from __future__ import annotations

import json
import ssl
import threading
import urllib.error
import urllib.request
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from instag_hf.tagging.dialects import JSON_OBJECT, JSON_SCHEMA, OPENAI, build_request
from instag_hf.tagging.prompts import TAGS_JSON_SCHEMA, get_template
from tests.servers._openai_protocol import spec_validator
from tests.servers.tgi_server import start_tgi_server

pytestmark = pytest.mark.timeout(120)

MODELS = ["org/alpha-instruct", "org/beta-instruct", "org/gamma-instruct"]
PROMPT = get_template("paper").render("Write a python function that sorts a list")
PARAMS = {"max_new_tokens": 256, "do_sample": False}


def call(
    url: str,
    path: str,
    body: Any = None,
    key: str | None = None,
    cafile: str | None = None,
) -> tuple[int, dict, Any]:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    data = None if body is None else json.dumps(body).encode()
    handlers: list[Any] = [urllib.request.ProxyHandler({})]
    if cafile:
        handlers.append(urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=cafile)))
    try:
        with urllib.request.build_opener(*handlers).open(
            urllib.request.Request(url + path, data, headers), timeout=30
        ) as r:
            return r.status, dict(r.headers), json.loads(r.read() or b"null")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, dict(exc.headers), json.loads(raw or b"null")
        except ValueError:
            return exc.code, dict(exc.headers), raw.decode()


def chat_body(form: str, model: str = MODELS[0]) -> dict:
    return build_request(OPENAI, model, PROMPT, False, PARAMS, TAGS_JSON_SCHEMA, form)[1]


@pytest.fixture
def server(openai_server):
    return openai_server(models=MODELS)


def test_models_are_listed_as_the_spec_says(server):
    status, _, listing = call(server.url, "/v1/models")
    assert status == 200
    spec_validator("ListModelsResponse").validate(listing)
    assert [m["id"] for m in listing["data"]] == MODELS
    assert {m["owned_by"] for m in listing["data"]} == {"vllm"}
    assert call(server.url, "/info")[0] == 404 and call(server.url, "/version")[2]["version"]


def test_json_schema_answers_schema_valid_json_with_usage(server):
    body = chat_body(JSON_SCHEMA)
    spec_validator("CreateChatCompletionRequest").validate(body)
    status, _, answer = call(server.url, "/v1/chat/completions", body)
    assert status == 200
    spec_validator("CreateChatCompletionResponse").validate(answer)
    content = json.loads(answer["choices"][0]["message"]["content"])
    Draft202012Validator(body["response_format"]["json_schema"]["schema"]).validate(content)
    usage = answer["usage"]
    assert usage["prompt_tokens"] == len(PROMPT.split()) and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert server.stats()["formats"] == {"json_schema": 1}


def test_json_object_is_valid_json_of_any_shape(server):
    status, _, answer = call(server.url, "/v1/chat/completions", chat_body(JSON_OBJECT))
    assert status == 200
    assert isinstance(json.loads(answer["choices"][0]["message"]["content"]), list)  # the schema key is ignored


def test_bad_bodies_and_unknown_models_get_openai_errors(server):
    status, _, error = call(server.url, "/v1/chat/completions", {"model": MODELS[0], "messages": []})
    assert status == 400 and set(error["error"]) == {"message", "type", "param", "code"}
    bad_format = {**chat_body(JSON_SCHEMA), "response_format": {"type": "json_schema"}}  # no json_schema
    assert call(server.url, "/v1/chat/completions", bad_format)[0] == 400
    status, _, error = call(server.url, "/v1/chat/completions", chat_body(JSON_SCHEMA, "org/unknown"))
    assert status == 404 and error["error"]["code"] == "model_not_found"
    assert call(server.url, "/v1/chat/completions", chat_body(JSON_SCHEMA, f"{MODELS[1]}:together"))[0] == 200
    assert call(server.url, "/generate", {"inputs": "x"})[0] == 404


def test_a_server_without_structured_outputs_names_response_format(server):
    server.set_knobs(reject_json_schema=True)
    status, _, error = call(server.url, "/v1/chat/completions", chat_body(JSON_SCHEMA))
    assert status == 400 and "response_format" in error["error"]["message"]
    assert call(server.url, "/v1/chat/completions", chat_body(JSON_OBJECT))[0] == 200


def test_context_length_is_checked_like_vllm(server):
    server.set_knobs(max_input_tokens=50, max_total_tokens=100)
    status, _, error = call(server.url, "/v1/chat/completions", chat_body(JSON_SCHEMA))
    assert status == 400 and "maximum context length is 100 tokens" in error["error"]["message"]


def test_an_api_key_guards_the_v1_routes_like_vllm(server):
    server.set_knobs(api_key="sk-test-right")
    assert call(server.url, "/v1/models")[0] == 401
    assert call(server.url, "/v1/models", key="sk-test-wrong")[0] == 401
    assert call(server.url, "/v1/models", key="sk-test-right")[0] == 200
    assert call(server.url, "/health")[0] == 200  # vLLM leaves non-/v1 routes open
    status, _, error = call(server.url, "/v1/chat/completions", chat_body(JSON_SCHEMA))
    assert status == 401 and error["error"]["code"] == "invalid_api_key"
    server.set_knobs(refuse_status=403, echo_key=True)
    status, _, error = call(server.url, "/v1/models", key="sk-test-wrong")
    assert status == 403 and "sk-test-wrong" in error["error"]["message"]
    stats = server.stats()
    assert stats["refused"] == 4
    assert stats["queries"] == {"Write a python function that sorts a list": 1}  # the refused POST is logged


def test_an_inference_endpoint_style_tgi_guards_every_route(tgi):
    tgi.set_knobs(api_key="hf_endpoint_key")
    assert call(tgi.url, "/info")[0] == 401
    status, _, info = call(tgi.url, "/info", key="hf_endpoint_key")
    assert status == 200 and info["model_id"]
    host = tgi.url.split("//", 1)[1]
    assert tgi.stats()["hosts"][host] == {"no_auth": 1, "auth": 1}


def test_tgi_generate_sends_token_count_headers(tgi):
    body = {"inputs": PROMPT, "parameters": {"max_new_tokens": 64}}
    status, headers, answer = call(tgi.url, "/generate", body)
    assert status == 200
    assert int(headers["x-prompt-tokens"]) == len(PROMPT.split())
    assert int(headers["x-generated-tokens"]) == len(answer["generated_text"].split())


def test_tls_is_served_with_the_given_certificate(tls_files):
    with start_tgi_server(personality="openai", tls=tls_files) as server:
        assert server.url.startswith("https://127.0.0.1:")
        assert call(server.url, "/v1/models", cafile=tls_files[0])[0] == 200
        with pytest.raises(urllib.error.URLError):  # not trusted without the test CA
            call(server.url, "/v1/models")


def test_requests_over_the_limit_queue_instead_of_429(server):
    server.set_knobs(max_concurrent_requests=2, latency=0.2)
    results: list[int] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(call(server.url, "/v1/chat/completions", chat_body(JSON_SCHEMA))[0])
        )
        for _ in range(6)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = server.stats()
    assert results == [200] * 6 and stats["max_in_flight"] == 2 and stats["queued"] >= 3
