"""The OpenAI chat-completions API as vLLM and OpenAI serve it, for the loopback server's
``personality="openai"``: the spec, request checks, answers, error bodies.

Request bodies are checked against ``CreateChatCompletionRequest`` of
``openai_chat_openapi.json`` (the subset of OpenAI's published OpenAPI document that covers
``POST /chat/completions`` and ``GET /models``, copied next to this file), translated to
JSON Schema as the TGI spec is. What vLLM does on top, copied here:

* ``response_format={"type": "json_schema", "json_schema": {"schema": S}}`` constrains the
  answer to ``S`` (the answer is checked against ``S`` before it is sent);
  ``{"type": "json_object"}`` gives valid JSON of no particular shape (a ``schema`` key
  next to it is ignored, as vLLM ignores unknown fields); ``text`` or nothing, free text.
* Errors are ``{"error": {"message", "type", "param", "code"}}``: 400 for a bad body or a
  prompt over the context length, 404 for a model it does not serve, 401 without the
  right ``Authorization: Bearer <key>`` (only ``/v1/*`` routes are protected, as vLLM's
  ``--api-key`` does). Rate limits are the fault kind "429".
* Requests above ``max_concurrent_requests`` wait in a queue until one in flight ends, as
  vLLM's scheduler holds what exceeds ``max_num_seqs``: no 429 for load. ``queued`` counts
  them, ``max_in_flight`` counts only the running ones.
* ``usage`` counts prompt and completion tokens (one token per whitespace-separated word,
  as the TGI personality counts them).
* ``GET /v1/models`` lists every served model with ``owned_by`` (``vllm`` by default) and
  ``max_model_len``. A model id may carry a ``:provider`` suffix, as Hugging Face's router
  accepts (``org/model:together``): the part before ``:`` must be served.
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from tests.servers import _tgi_model as model
from tests.servers._tgi_protocol import body_problem, openapi_to_jsonschema

SPEC = json.loads(Path(__file__).with_name("openai_chat_openapi.json").read_text())
CHAT = "/v1/chat/completions"


def spec_validator(name: str) -> Draft202012Validator:
    """A validator for one component schema of the OpenAI spec (requests and responses)."""
    defs = SPEC["components"]["schemas"]
    return Draft202012Validator(openapi_to_jsonschema(defs[name], defs))


@functools.lru_cache(maxsize=1)
def request_validator() -> Draft202012Validator:
    return spec_validator("CreateChatCompletionRequest")


def request_problem(body: Any) -> str | None:
    """Why a chat body does not match the spec, or None."""
    problem = body_problem(request_validator(), body)
    return (
        problem.replace("Failed to deserialize the JSON body into the target type: ", "Invalid request: ")
        if problem
        else None
    )


def error(
    status: int,
    message: str,
    kind: str,
    *,
    code: str | None = None,
    param: str | None = None,
    retry_after: float | None = None,
) -> web.Response:
    headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return web.json_response(body, status=status, headers=headers)


def models_body(ids: list[str], owned_by: str, created: int, max_model_len: int) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"id": i, "object": "model", "created": created, "owned_by": owned_by, "max_model_len": max_model_len}
            for i in ids
        ],
    }


def served(requested: str, ids: list[str]) -> bool:
    return requested in ids or requested.split(":", 1)[0] in ids


@functools.lru_cache(maxsize=256)
def _schema_problem(schema_text: str) -> str | None:
    try:
        Draft202012Validator.check_schema(json.loads(schema_text))
    except SchemaError as exc:
        return f"response_format.json_schema.schema is not a valid JSON schema: {exc.message}"
    return None


def _text_of(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content or ""


@dataclass
class ChatJob:
    """What a spec-valid chat request asks for."""

    model: str
    prompt: str
    source: str  # the text the user query is extracted from
    input_tokens: int
    max_tokens: int | None
    response_format: dict[str, Any] | None
    stop: list[str]
    stream: bool

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> ChatJob:
        texts = [_text_of(m.get("content")) for m in body["messages"]]
        users = [_text_of(m.get("content")) for m in body["messages"] if m.get("role") == "user"]
        stop = body.get("stop") or []
        prompt = "\n".join(texts)
        return cls(
            body["model"],
            prompt,
            users[-1] if users else prompt,
            sum(map(model.count_tokens, texts)),
            body.get("max_completion_tokens") or body.get("max_tokens"),
            body.get("response_format"),
            [stop] if isinstance(stop, str) else list(stop),
            bool(body.get("stream")),
        )

    @property
    def form(self) -> str:
        return (self.response_format or {}).get("type", "none")

    def schema(self) -> tuple[dict[str, Any] | None, str | None]:
        """The schema the answer must follow (None: any JSON or free text), and what is wrong with it."""
        if self.form != "json_schema":
            return None, None
        schema = self.response_format["json_schema"].get("schema")  # type: ignore[index]
        if not isinstance(schema, dict):
            return None, "response_format.json_schema.schema is required"
        return schema, _schema_problem(json.dumps(schema, sort_keys=True))

    def problem(self, max_model_len: int) -> str | None:
        """vLLM's 400 message for this job, or None."""
        wanted = self.max_tokens or 0
        if self.input_tokens + wanted > max_model_len:
            return (
                f"This model's maximum context length is {max_model_len} tokens. However, you requested "
                f"{self.input_tokens + wanted} tokens ({self.input_tokens} in the messages, {wanted} in the "
                "completion). Please reduce the length of the messages or completion."
            )
        return self.schema()[1]

    def generate(self, query: str, fault: str | None) -> tuple[str, str, int]:
        """(text, finish reason, completion tokens), after ``stop`` and ``max_tokens``."""
        schema = self.schema()[0]
        text, cut = model.render(query, schema, fault)
        if schema is not None and fault is None:
            # A constrained decoder never answers outside its schema; neither may this server.
            Draft202012Validator(schema).validate(json.loads(text))
        finish = "length" if cut else "stop"
        for stop in self.stop:
            if stop and stop in text:  # OpenAI drops the stop sequence from the text
                text, finish = text[: text.index(stop)], "stop"
        tokens = model.split_tokens(text)
        if self.max_tokens is not None and len(tokens) > self.max_tokens:
            tokens, finish = tokens[: self.max_tokens], "length"
            text = "".join(tokens)
        return text, finish, len(tokens)

    def response(self, text: str, finish: str, completion_tokens: int) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-{model.stable_hash(self.prompt) % 10**12}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": finish,
                    "logprobs": None,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                }
            ],
            "usage": {
                "prompt_tokens": self.input_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": self.input_tokens + completion_tokens,
            },
        }


class ChatRoutes:
    """``POST /v1/chat/completions`` of the "openai" personality, mixed into ``TGIServer``
    (whose knobs, counters, fault draws and log it shares)."""

    knobs: Any
    requests: int
    queued: int = 0
    _room: asyncio.Condition | None = None
    in_flight: int
    max_in_flight: int
    queries: Any
    formats: Any
    faults: Any

    def _done(self, route: str, query: str | None, status: int | str, fault: str | None = None) -> None:
        raise NotImplementedError

    def _draw_fault(self, rng: random.Random, attempt: int) -> str | None:
        raise NotImplementedError

    async def chat(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/chat/completions`` of the "openai" personality."""
        k = self.knobs
        self.requests += 1
        try:
            body = await request.json()
            problem = request_problem(body)
        except ValueError as exc:
            problem = f"Invalid JSON body: {exc}"
        if problem:
            self._done(CHAT, None, 400)
            return error(400, problem, "BadRequestError")
        job = ChatJob.from_body(body)
        self.formats[job.form] += 1
        query = model.extract_query(job.source)
        attempt = self.queries[query]
        self.queries[query] += 1
        if not served(job.model, k.models):
            self._done(CHAT, query, 404)
            return error(404, f"The model `{job.model}` does not exist.", "NotFoundError", code="model_not_found")
        if job.stream:
            self._done(CHAT, query, 400)
            return error(400, "this test server does not stream", "BadRequestError", param="stream")
        if k.reject_json_schema and job.form == "json_schema":
            self._done(CHAT, query, 400)
            return error(
                400,
                "response_format of type json_schema is not supported by this server",
                "BadRequestError",
                param="response_format",
            )
        if self._room is None:  # made in the server's own loop
            self._room = asyncio.Condition()
        async with self._room:
            if self.in_flight >= k.max_concurrent_requests:
                self.queued += 1
            while self.in_flight >= self.knobs.max_concurrent_requests:
                await self._room.wait()
            self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._chat_answer(request, job, query, attempt)
        finally:
            async with self._room:
                self.in_flight -= 1
                self._room.notify(1)

    async def _chat_answer(self, request: web.Request, job: ChatJob, query: str, attempt: int) -> web.StreamResponse:
        k = self.knobs
        problem = job.problem(k.max_total_tokens)
        if problem:
            self._done(CHAT, query, 400)
            return error(400, problem, "BadRequestError", param="messages")
        rng = random.Random(f"{k.seed}:{query}:{attempt}")
        fault = self._draw_fault(rng, attempt)
        if fault:
            self.faults[fault] += 1
        if fault in ("429", "503"):
            self._done(CHAT, query, int(fault), fault)
            return error(
                int(fault),
                "Overloaded" if fault == "429" else "Service Unavailable",
                "RateLimitError" if fault == "429" else "ServiceUnavailableError",
                retry_after=k.retry_after,
            )
        delay = k.latency * (10 if fault == "slow" else 1) + (rng.uniform(0, k.jitter) if k.jitter else 0)
        if delay:
            await asyncio.sleep(delay)
        if fault == "drop":
            self._done(CHAT, query, "drop", fault)
            if request.transport is not None:
                request.transport.close()
            return web.Response()
        if fault in ("424", "500"):  # vLLM has no 424: an engine failure is a 500
            self._done(CHAT, query, 500, fault)
            return error(500, "Internal server error: engine failure", "InternalServerError")
        text, finish, generated = job.generate(query, fault)
        self._done(CHAT, query, 200, fault)
        return web.json_response(job.response(text, finish, generated))
