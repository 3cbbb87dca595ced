"""TGI's wire protocol as the loopback server needs it: the spec, request checks, bodies.

Request bodies are checked against the component schemas of ``tgi_openapi.json`` (TGI's
own OpenAPI 3.0 document, copied next to this file), translated once to JSON Schema
2020-12 with every ``$ref`` inlined so a check costs tens of microseconds. Input
validation follows TGI's router (``router/src/validation.rs``): same checks, same order,
same messages, with one token per whitespace-separated word.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, best_match

from tests.servers import _tgi_model as model

SPEC = json.loads(Path(__file__).with_name("tgi_openapi.json").read_text())
VERSION: str = SPEC["info"]["version"]
REQUEST_SCHEMAS = {"/generate": "GenerateRequest", "/": "CompatGenerateRequest", "/v1/chat/completions": "ChatRequest"}
CHAT = "/v1/chat/completions"


def openapi_to_jsonschema(node: Any, defs: dict[str, Any], seen: tuple[str, ...] = ()) -> Any:
    """OpenAPI 3.0 schema -> JSON Schema: ``nullable`` becomes ``anyOf null``, refs inlined."""
    if isinstance(node, list):
        return [openapi_to_jsonschema(item, defs, seen) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[1]
        if name in seen:
            raise ValueError(f"recursive schema {name} cannot be inlined")
        merged = {**defs[name], **{k: v for k, v in node.items() if k != "$ref"}}
        return openapi_to_jsonschema(merged, defs, (*seen, name))
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("example", "discriminator", "nullable", "default"):
            continue  # documentation only (the spec's defaults are strings like "null"), or below
        if key == "properties":
            out[key] = {prop: openapi_to_jsonschema(sub, defs, seen) for prop, sub in value.items()}
        else:
            out[key] = openapi_to_jsonschema(value, defs, seen)
    return {"anyOf": [{"type": "null"}, out]} if node.get("nullable") else out


def request_validators() -> dict[str, Draft202012Validator]:
    """One compiled validator per generation route."""
    defs = json.loads(json.dumps(SPEC["components"]["schemas"]))
    # TGI's GrammarType::Json carries `#[serde(alias = "json_object")]`, which the spec omits.
    defs["GrammarType"]["oneOf"][0]["properties"]["type"]["enum"].append("json_object")
    return {
        route: Draft202012Validator(openapi_to_jsonschema(defs[name], defs)) for route, name in REQUEST_SCHEMAS.items()
    }


def body_problem(validator: Draft202012Validator, body: Any) -> str | None:
    """Why a body does not match its schema (axum's wording), or None."""
    if validator.is_valid(body):  # the fast path; collecting errors is much slower
        return None
    error = best_match(validator.iter_errors(body))
    where = "/".join(map(str, error.absolute_path)) or "body"
    return f"Failed to deserialize the JSON body into the target type: {where}: {error.message}"


@functools.lru_cache(maxsize=256)
def _grammar_problem(schema_text: str, strict: bool) -> str | None:
    schema = json.loads(schema_text)
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        return f"grammar is not valid: {exc.message}"
    if strict and "properties" not in schema:
        return "grammar is not valid: Grammar must have a 'properties' field"
    return None


def _text_of(content: Any) -> str:
    if isinstance(content, list):  # message chunks: only text parts carry words
        return " ".join(chunk.get("text", "") for chunk in content)
    return content or ""


@dataclass
class Job:
    """What a (schema-valid) generation request asks for, whichever route it came by."""

    route: str
    prompt: str
    source: str  # the text the user query is extracted from
    input_tokens: int
    max_new_tokens: int | None
    grammar: dict[str, Any] | None
    stop: list[str]
    stream: bool
    details: bool = False
    return_full_text: bool = False
    logprobs: bool = False
    seed: int | None = None

    @classmethod
    def from_body(cls, route: str, body: dict[str, Any]) -> Job:
        if route == CHAT:
            texts = [_text_of(m.get("content")) for m in body["messages"]]
            users = [_text_of(m.get("content")) for m in body["messages"] if m.get("role") == "user"]
            prompt = "\n".join(texts)
            return cls(
                route,
                prompt,
                users[-1] if users else prompt,
                sum(map(model.count_tokens, texts)),
                body.get("max_tokens"),
                body.get("response_format"),
                body.get("stop") or [],
                bool(body.get("stream")),
                logprobs=bool(body.get("logprobs")),
                seed=body.get("seed"),
            )
        params = body.get("parameters") or {}
        # TGI's router defaults `details` to false (serde default), whatever the spec's text says.
        details = bool(params.get("details") or params.get("decoder_input_details"))
        return cls(
            route,
            body["inputs"],
            body["inputs"],
            model.count_tokens(body["inputs"]),
            params.get("max_new_tokens"),
            params.get("grammar"),
            params.get("stop") or [],
            bool(body.get("stream")),
            details,
            bool(params.get("return_full_text")),
            seed=params.get("seed"),
        )

    def problem(self, max_input_tokens: int, max_total_tokens: int, strict_grammar: bool) -> str | None:
        """TGI's input validation message for this job (without its prefix), or None."""
        max_new = self.max_new_tokens
        if max_new == 0:
            return "`max_new_tokens` must be strictly positive"
        if not self.prompt:
            return "`inputs` cannot be empty"
        if max_new is not None and self.input_tokens + max_new > max_total_tokens:
            return (
                f"`inputs` tokens + `max_new_tokens` must be <= {max_total_tokens}. "
                f"Given: {self.input_tokens} `inputs` tokens and {max_new} `max_new_tokens`"
            )
        if self.input_tokens > max_input_tokens:
            return f"`inputs` must have less than {max_input_tokens} tokens. Given: {self.input_tokens}"
        return self.schema(strict_grammar)[1]

    def schema(self, strict_grammar: bool) -> tuple[dict[str, Any] | None, str | None]:
        """The JSON schema the answer must follow (None without one), and what is wrong with it."""
        if not self.grammar or self.grammar["type"] == "regex":
            return None, None
        value = self.grammar["value"]
        if self.grammar["type"] == "json_schema" and isinstance(value, dict):
            value = value.get("schema")
        if isinstance(value, str):  # TGI accepts the schema as a JSON string too
            try:
                value = json.loads(value)
            except ValueError as exc:
                return None, f"grammar is not valid: {exc}"
        if not isinstance(value, dict):
            return None, "grammar is not supported"
        return value, _grammar_problem(json.dumps(value, sort_keys=True), strict_grammar)

    def response(self, text: str, finish: str, model_id: str) -> Any:
        """The 200 body: GenerateResponse, a list of one (compat route), or ChatCompletion."""
        tokens = model.split_tokens(text)
        logprobs = [-round(0.01 + (model.stable_hash(t) % 1000) / 500, 4) for t in tokens]
        if self.route == CHAT:
            content = [{"token": t, "logprob": lp, "top_logprobs": []} for t, lp in zip(tokens, logprobs)]
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": {"content": content} if self.logprobs else None,
                "finish_reason": "length" if finish == "length" else "stop",
            }
            usage = {
                "prompt_tokens": self.input_tokens,
                "completion_tokens": len(tokens),
                "total_tokens": self.input_tokens + len(tokens),
            }
            return {
                "id": "",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model_id,
                "system_fingerprint": f"{VERSION}-native",
                "choices": [choice],
                "usage": usage,
            }
        out: dict[str, Any] = {"generated_text": self.prompt + text if self.return_full_text else text}
        if self.details:
            out["details"] = {
                "finish_reason": finish,
                "generated_tokens": len(tokens),
                "seed": self.seed,
                "prefill": [],
                "tokens": [
                    {"id": model.stable_hash(t) % 32000, "text": t, "logprob": lp, "special": False}
                    for t, lp in zip(tokens, logprobs)
                ],
            }
        return [out] if self.route == "/" else out

    def generate(self, query: str, fault: str | None, strict_grammar: bool, variant: int = 0) -> tuple[str, str]:
        """The generated text and TGI's finish reason, after ``stop`` and ``max_new_tokens``."""
        text, cut = model.render(query, self.schema(strict_grammar)[0], fault, variant)
        finish = "length" if cut else "eos_token"
        for stop in self.stop:
            if stop and stop in text:  # TGI keeps the stop sequence in the output
                text, finish = text[: text.index(stop) + len(stop)], "stop_sequence"
        tokens = model.split_tokens(text)
        if self.max_new_tokens is not None and len(tokens) > self.max_new_tokens:
            text, finish = "".join(tokens[: self.max_new_tokens]), "length"
        return text, finish
