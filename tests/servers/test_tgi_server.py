"""The loopback TGI server, exercised for real over HTTP (and by huggingface_hub's client)."""

from __future__ import annotations

import asyncio
import dataclasses
import http.client
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import aiohttp
import pytest
from huggingface_hub import InferenceClient
from huggingface_hub.errors import OverloadedError, ValidationError
from jsonschema import Draft202012Validator

from tests.servers._tgi_protocol import SPEC, openapi_to_jsonschema
from tests.servers.tgi_server import FAULT_KINDS, REPO_ROOT, Knobs, start_tgi_server

pytestmark = pytest.mark.timeout(120)

TAGS_SCHEMA = {  # wrapped in an object: TGI rejects grammars without top-level "properties"
    "type": "object",
    "properties": {
        "tags": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"tag": {"type": "string"}, "explanation": {"type": "string"}},
                "required": ["tag", "explanation"],
            },
        }
    },
    "required": ["tags"],
}
GRAMMAR = {"type": "json", "value": TAGS_SCHEMA}
PAPER_PROMPT = (
    "You are a tagging system that provides useful tags for instruction intentions to distinguish "
    "instructions for a helpful AI assistant. Below is an instruction:\n[begin]\n{query}\n[end]\n"
    'Please provide coarse-grained tags, such as "Spelling and Grammar Check" and "Cosplay", to identify '
    "main intentions of above instruction. Your response have to strictly follow this JSON format: "
    '[{{"tag": str, "explanation": str}}]. Please response in English.'
)
INSTAGGER_PROMPT = (
    "A chat between a curious user and an artificial intelligence assistant. USER: Please identify tags "
    "of user intentions in the following user query and provide an explanation for each tag. Please "
    'respond in the JSON format {{"tag": str, "explanation": str}}.\nUser query: {query} ASSISTANT:'
)
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def spec_validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(
        openapi_to_jsonschema(SPEC["components"]["schemas"][name], SPEC["components"]["schemas"])
    )


def call(url: str, path: str, body: Any = None, raw: bytes | None = None) -> tuple[int, dict, Any]:
    """(status, headers, parsed JSON body or None) for one request."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with NO_PROXY.open(request, timeout=60) as response:
            status, headers, payload = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        status, headers, payload = exc.code, dict(exc.headers), exc.read()
    return status, headers, json.loads(payload) if payload else None


def generate(url: str, query: str, **parameters: Any) -> tuple[int, dict, Any]:
    return call(url, "/generate", {"inputs": PAPER_PROMPT.format(query=query), "parameters": parameters})


@pytest.fixture(scope="module")
def shared_server():
    with start_tgi_server() as server:
        yield server


@pytest.fixture
def server(shared_server):
    """The module's server with default knobs and empty statistics."""
    shared_server.set_knobs(**dataclasses.asdict(Knobs()))
    shared_server.reset()
    return shared_server


def test_info_validates_against_the_spec_and_follows_the_knobs(server):
    status, _, info = call(server.url, "/info")
    assert status == 200
    assert not list(spec_validator("Info").iter_errors(info))
    assert (info["model_id"], info["max_concurrent_requests"]) == ("instag-fake/tgi-tagger", 128)
    assert (info["max_input_tokens"], info["max_total_tokens"]) == (1024, 2048)
    server.set_knobs(model_id="org/other", max_concurrent_requests=8, max_input_tokens=100, max_total_tokens=200)
    info = call(server.url, "/info")[2]
    assert (info["model_id"], info["max_concurrent_requests"], info["max_input_tokens"]) == ("org/other", 8, 100)


def test_health_and_models(server):
    assert call(server.url, "/health")[0] == 200
    status, _, model = call(server.url, "/v1/models")
    assert status == 200 and model["id"] == "instag-fake/tgi-tagger"
    assert not list(spec_validator("ModelInfo").iter_errors(model))
    server.set_knobs(healthy=False)
    assert call(server.url, "/health")[:3:2] == (503, {"error": "unhealthy", "error_type": "healthcheck"})


def test_generate_with_grammar_returns_the_tags_in_the_schema_shape(server):
    status, _, body = generate(server.url, "Translate this python code to French", grammar=GRAMMAR, max_new_tokens=400)
    assert status == 200 and "details" not in body  # TGI's default is details=false
    assert not list(spec_validator("GenerateResponse").iter_errors(body))
    tags = json.loads(body["generated_text"])["tags"]
    assert 1 <= len(tags) <= 5 and all(set(t) == {"tag", "explanation"} for t in tags)
    # No grammar: the bare InsTag list.
    bare = json.loads(generate(server.url, "Translate this python code to French")[2]["generated_text"])
    assert bare == tags


def test_details_follow_the_request(server):
    body = generate(server.url, "Write a poem about the sea", details=True, max_new_tokens=400, seed=7)[2]
    assert not list(spec_validator("GenerateResponse").iter_errors(body))
    details = body["details"]
    assert details["finish_reason"] == "eos_token" and details["seed"] == 7
    assert "".join(t["text"] for t in details["tokens"]) == body["generated_text"]
    assert details["generated_tokens"] == len(details["tokens"])
    cut = generate(server.url, "Write a poem about the sea", details=True, max_new_tokens=3)[2]
    assert cut["details"]["finish_reason"] == "length" and cut["details"]["generated_tokens"] == 3


def test_compat_route_answers_a_list_of_one(server):
    status, _, body = call(
        server.url,
        "/",
        {"inputs": PAPER_PROMPT.format(query="hello"), "stream": False, "parameters": {"grammar": GRAMMAR}},
    )
    assert status == 200 and isinstance(body, list) and len(body) == 1
    assert not list(spec_validator("GenerateResponse").iter_errors(body[0]))
    json.loads(body[0]["generated_text"])


def test_chat_completion_validates_against_the_spec(server):
    messages = [
        {"role": "system", "content": "You tag."},
        {"role": "user", "content": PAPER_PROMPT.format(query="Plan a trip to Rome")},
    ]
    status, _, body = call(
        server.url,
        "/v1/chat/completions",
        {
            "model": "tgi",
            "messages": messages,
            "max_tokens": 400,
            "logprobs": True,
            "response_format": {"type": "json_object", "value": TAGS_SCHEMA},
        },
    )
    assert status == 200
    assert not list(spec_validator("ChatCompletion").iter_errors(body))
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["finish_reason"] == "stop"
    assert json.loads(choice["message"]["content"])["tags"]
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    assert server.stats()["queries"] == {"Plan a trip to Rome": 1}


def test_huggingface_hub_client_works_unmodified(server):
    client = InferenceClient(base_url=server.url)
    prompt = PAPER_PROMPT.format(query="Fix the bug in my SQL query")
    text = client.text_generation(prompt, grammar=GRAMMAR, max_new_tokens=400)
    assert json.loads(text)["tags"]
    output = client.text_generation(prompt, grammar=GRAMMAR, max_new_tokens=400, details=True)
    assert output.details.finish_reason == "eos_token" and output.generated_text == text
    chat = client.chat_completion(
        messages=[{"role": "user", "content": prompt}],
        max_tokens=400,
        response_format={"type": "json_object", "value": TAGS_SCHEMA},
    )
    assert json.loads(chat.choices[0].message.content) == json.loads(text)
    with pytest.raises(ValidationError, match="must have less than 1024 tokens"):
        client.text_generation("word " * 1100, max_new_tokens=10)
    server.set_knobs(fault_rate=1.0, faults=["429"], retry_after=0)
    with pytest.raises(OverloadedError):
        client.text_generation(prompt, max_new_tokens=10)


@pytest.mark.parametrize(
    "body",
    [
        {"parameters": {}},  # no inputs
        {"inputs": 5},
        {"inputs": "x", "parameters": {"temperature": 0}},  # must be > 0
        {"inputs": "x", "parameters": {"stop": ["a", "b", "c", "d", "e"]}},
        {"inputs": "x", "parameters": {"grammar": {"type": "yaml", "value": {}}}},
        {"inputs": "x", "parameters": {"max_new_tokens": "ten"}},
    ],
)
def test_invalid_generate_body_gets_422_validation(server, body):
    status, _, error = call(server.url, "/generate", body)
    assert status == 422 and error["error_type"] == "validation" and error["error"]


def test_invalid_chat_body_and_malformed_json_get_422(server):
    assert call(server.url, "/v1/chat/completions", {"model": "m"})[0] == 422
    assert call(server.url, "/v1/chat/completions", {"messages": [{"content": "no role"}]})[0] == 422
    status, _, error = call(server.url, "/generate", raw=b"{not json")
    assert status == 422 and error["error_type"] == "validation"
    nullable = {"inputs": "hello", "parameters": {"seed": None, "temperature": None, "grammar": None}}
    assert call(server.url, "/generate", nullable)[0] == 200  # OpenAPI `nullable` is honoured


def test_token_limits_are_checked_like_tgi(server):
    status, _, error = call(server.url, "/generate", {"inputs": "word " * 1100, "parameters": {"max_new_tokens": 10}})
    assert (status, error) == (
        422,
        {
            "error": "Input validation error: `inputs` must have less than 1024 tokens. Given: 1100",
            "error_type": "validation",
        },
    )
    status, _, error = call(server.url, "/generate", {"inputs": "word " * 1000, "parameters": {"max_new_tokens": 1100}})
    assert status == 422 and "`inputs` tokens + `max_new_tokens` must be <= 2048" in error["error"]
    chat = {"messages": [{"role": "user", "content": "word " * 1100}]}
    assert call(server.url, "/v1/chat/completions", chat)[0] == 422


def test_grammar_without_properties_is_rejected_like_tgi(server):
    bare = {"type": "json", "value": {"type": "array", "items": {"type": "object"}}}
    status, _, error = generate(server.url, "hello", grammar=bare)
    assert status == 422 and "Grammar must have a 'properties' field" in error["error"]
    server.set_knobs(strict_grammar=False)
    status, _, body = generate(server.url, "hello", grammar=bare)
    assert status == 200 and isinstance(json.loads(body["generated_text"]), list)


async def _concurrent_posts(url: str, n: int) -> list[tuple[int, dict, Any]]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def post(i: int) -> tuple[int, dict, Any]:
            async with session.post(url + "/generate", json={"inputs": f"query {i}"}) as response:
                return response.status, dict(response.headers), await response.json()

        return await asyncio.gather(*(post(i) for i in range(n)))


def test_more_than_max_concurrent_requests_in_flight_get_429(server):
    server.set_knobs(latency=2.0)  # ample time for all 129 to arrive while the first 128 wait
    results = asyncio.run(_concurrent_posts(server.url, 129))
    overloaded = [r for r in results if r[0] == 429]
    assert overloaded and all(r[2] == {"error": "Model is overloaded", "error_type": "overloaded"} for r in overloaded)
    assert all("Retry-After" not in r[1] for r in overloaded)  # real TGI sends none on overload
    assert sum(r[0] == 200 for r in results) + len(overloaded) == 129
    assert server.stats()["max_in_flight"] == 128


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_each_fault_kind_does_what_it_says(server, kind):
    clean = generate(server.url, "Summarize this email", grammar=GRAMMAR)[2]["generated_text"]
    server.set_knobs(fault_rate=1.0, faults=[kind], retry_after=0, latency=0.02)
    server.reset()
    if kind == "drop":
        host, port = server.url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        connection.request("POST", "/generate", json.dumps({"inputs": "hello"}), {"Content-Type": "application/json"})
        with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
            connection.getresponse()
        assert server.stats()["statuses"] == {"drop": 1}
        return
    started = time.monotonic()
    status, headers, body = generate(server.url, "Summarize this email", grammar=GRAMMAR, details=True)
    elapsed = time.monotonic() - started
    errors = {
        "429": (429, "overloaded"),
        "503": (503, "unavailable"),
        "424": (424, "generation"),
        "500": (500, "incomplete_generation"),
    }
    if kind in errors:
        assert (status, body["error_type"]) == errors[kind]
        if kind in ("429", "503"):
            assert headers["Retry-After"] == "0"
        return
    assert status == 200
    text = body["generated_text"]
    if kind == "prose":
        assert "```json\n" + clean + "\n```" in text and not text.startswith(("[", "{"))
    elif kind == "dict":
        assert json.loads(text) == json.loads(clean)["tags"][0]
    elif kind == "truncated":
        assert clean.startswith(text) and len(text) < len(clean)
        assert body["details"]["finish_reason"] == "length"
    elif kind == "empty":
        assert text == ""
    elif kind == "garbage":
        assert text and not set(text) & set("[]{}")
    elif kind == "surrogate":  # valid JSON whose strings are not valid text
        assert "\\ud800" in text and "\\u0000" in text
        assert json.loads(text)["tags"][-1]["tag"] == "poisoned \ud800 tag"
    elif kind == "raw_surrogate":  # the text itself holds them (the response body escapes them)
        assert "\ud800" in text and "\x00" in text
    elif kind == "slow":
        assert text == clean and elapsed >= 0.2  # a lower bound only: sleeping never ends early


def test_fail_first_attempts_then_answers(server):
    server.set_knobs(fail_first_attempts=2, fail_first_fault="429", retry_after=0)
    statuses = [generate(server.url, "Define entropy")[0] for _ in range(3)]
    assert statuses == [429, 429, 200]
    assert generate(server.url, "Another query")[0] == 429  # counted per query
    stats = server.stats()
    assert stats["queries"] == {"Define entropy": 3, "Another query": 1}
    assert [e["status"] for e in stats["log"]] == [429, 429, 200, 429]


def test_fault_draws_are_reproducible_per_seed(server):
    def run() -> list[int]:
        server.reset()
        return [generate(server.url, f"query {i}")[0] for i in range(30)]

    server.set_knobs(fault_rate=0.5, faults={"500": 1, "424": 1}, seed=3)
    first = run()
    assert first == run() and set(first) == {200, 424, 500}
    server.set_knobs(seed=4)
    assert run() != first


def test_stats_count_routes_statuses_queries_and_log_in_order(server):
    generate(server.url, "first query")
    call(
        server.url,
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": INSTAGGER_PROMPT.format(query="second query")}]},
    )
    call(server.url, "/", {"inputs": "just a plain prompt"})
    call(server.url, "/generate", {"inputs": 1})
    call(server.url, "/info")
    stats = server.stats()
    assert stats["requests"] == 4
    assert stats["routes"] == {"/generate": 2, "/v1/chat/completions": 1, "/": 1, "/info": 1}
    assert stats["statuses"] == {"200": 3, "422": 1}
    assert stats["queries"] == {"first query": 1, "second query": 1, "just a plain prompt": 1}
    assert [e["query"] for e in stats["log"]] == ["first query", "second query", "just a plain prompt", None]
    times = [e["time"] for e in stats["log"]]
    assert times == sorted(times)
    server.reset()
    assert server.stats()["requests"] == 0 and server.stats()["log"] == []


def test_reset_can_restore_the_starting_knobs():
    with start_tgi_server(latency=0.01, model_id="start/model") as server:
        server.set_knobs(latency=0.5, fault_rate=1.0, model_id="changed/model")
        server.reset()
        assert server.knobs()["model_id"] == "changed/model"
        server.reset(knobs=True)
        knobs = server.knobs()
        assert (knobs["latency"], knobs["fault_rate"], knobs["model_id"]) == (0.01, 0.0, "start/model")


def test_answers_are_the_same_in_another_process(server):
    queries = ["Write a haiku about autumn", "What is 2+2?", "", "Explain quantum computing to a child"]
    with start_tgi_server() as other:
        for query in queries:
            assert generate(server.url, query)[2] == generate(other.url, query)[2]


def test_bad_knobs_are_refused(server):
    with pytest.raises(ValueError, match="unknown knob"):
        server.set_knobs(nonsense=1)
    with pytest.raises(ValueError, match="unknown fault"):
        server.set_knobs(faults=["meteor"])
    with pytest.raises(ValueError, match="fault_rate"):
        start_tgi_server(fault_rate=2)


def test_command_line_prints_ready_and_takes_knob_flags():
    command = [
        sys.executable,
        "-m",
        "tests.servers.tgi_server",
        "--port",
        "0",
        "--model-id",
        "cli/model",
        "--faults",
        "prose,dict",
        "--latency",
        "0.01",
    ]
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith("READY http://127.0.0.1:")
        assert call(line.split()[1], "/info")[2]["model_id"] == "cli/model"
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


def test_start_failure_reports_the_servers_stderr():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(RuntimeError, match="(?i)address already in use"):
            start_tgi_server(port=taken.getsockname()[1], timeout=20)
