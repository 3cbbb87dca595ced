"""Each server's structured-output dialect: the request body that constrains the answer to the
tag schema, and where the answer and its token counts are in the response.

| server kind | route | constraint sent |
|---|---|---|
| ``tgi`` | ``/generate`` (raw template) | ``parameters.grammar = {"type": "json", "value": S}`` |
| ``tgi`` | ``/v1/chat/completions`` | ``response_format = {"type": "json", "value": S}`` |
| ``vllm``, ``sglang``, ``openai`` | ``/v1/chat/completions`` | ``response_format = {"type": "json_schema", "json_schema": {"name", "schema": S, "strict": true}}`` |
| ``llamacpp`` | ``/v1/chat/completions`` | ``response_format = {"type": "json_object", "schema": S}`` |

``S`` is ``{"tags": [{"tag", "explanation"}]}`` (``{"tags": [str]}`` for the tags-only
answer form, ``Tagger(answer="tags")``): TGI takes only object grammars, OpenAI's
strict mode only object roots, so every dialect gets the same object and the parser unwraps it.

llama.cpp: measured against the llama-cpp-python server this project ships (0.3.x):
``json_object`` + ``schema`` is honoured (the answer follows the schema), plain
``json_object`` is not (valid JSON of any shape), and ``json_schema`` is refused with
HTTP 500 "Input should be 'text' or 'json_object'".

A server that refuses the ``json_schema`` form (an HTTP 400/422/500 whose message names
``response_format`` or ``json_schema``) is asked again once with the next weaker form,
``json_object`` + ``schema``; see :func:`weaker_form`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from instag_hf.tagging.parsing import valid_text

TGI, VLLM, SGLANG, OPENAI, LLAMACPP = "tgi", "vllm", "sglang", "openai", "llamacpp"
#: Server kinds ``Tagger(server=...)`` and ``--server`` accept.
SERVER_KINDS = (TGI, VLLM, SGLANG, OPENAI, LLAMACPP)

#: Structured-output forms, strongest first.
TGI_GRAMMAR, JSON_SCHEMA, JSON_OBJECT = "tgi-grammar", "json_schema", "json_object"
_FIRST_FORM = {TGI: TGI_GRAMMAR, VLLM: JSON_SCHEMA, SGLANG: JSON_SCHEMA, OPENAI: JSON_SCHEMA, LLAMACPP: JSON_OBJECT}
_WEAKER = {JSON_SCHEMA: JSON_OBJECT}
_NAMES_THE_FORMAT = re.compile(r"response_format|json_schema", re.IGNORECASE)
SCHEMA_NAME = "instag_tags"
#: What of the generation parameters TGI's ``/generate`` is sent (the answer form, which is
#: in them for the cache key, is not a generation parameter).
_TGI_PARAMETERS = ("max_new_tokens", "do_sample", "temperature", "seed")


def first_form(kind: str) -> str:
    """The structured-output form sent to a server of ``kind`` until it refuses it."""
    return _FIRST_FORM.get(kind, JSON_SCHEMA)


def weaker_form(form: str, status: int | None, error: str | None) -> str | None:
    """The form to fall back to when ``form`` was refused this way, or None (no fallback).

    Only a refusal that names the response format counts: other 400s are the request's
    fault and falling back would not help them.
    """
    if status not in (400, 422, 500) or not error or not _NAMES_THE_FORMAT.search(error):
        return None
    return _WEAKER.get(form)


def answer_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The tag list wrapped in an object (``{"tags": [...]}``), which every dialect accepts."""
    return {"type": "object", "properties": {"tags": dict(schema)}, "required": ["tags"], "additionalProperties": False}


def strict_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """``schema`` within the subset OpenAI's strict mode has accepted since its start.

    Array size bounds (``minItems``) were outside that subset, and a refused schema would
    cost the endpoint its constraint (the fallback form); an empty tag list is caught by the
    parser and asked again instead.
    """
    if isinstance(schema, Mapping):
        return {k: strict_schema(v) for k, v in schema.items() if k not in ("minItems", "maxItems")}
    return schema


def build_request(
    kind: str, model: str, prompt: str, raw: bool, params: Mapping[str, Any], schema: Mapping[str, Any], form: str
) -> tuple[str, dict[str, Any]]:
    """Path and JSON body of one generation request.

    Args:
        kind: The server kind (:data:`SERVER_KINDS`).
        model: The model id sent in chat requests.
        prompt: The rendered prompt.
        raw: The template is a raw prompt (TGI's ``/generate``) rather than a chat turn.
        params: ``max_new_tokens``, ``do_sample`` and, when sampling, ``temperature`` and ``seed``.
        schema: The JSON schema of the tag list (:func:`~instag_hf.tagging.prompts.answer_json_schema`).
        form: The structured-output form (:func:`first_form`, or a weaker one after a refusal).
    """
    wrapped = answer_schema(schema)
    if kind == TGI and raw:
        parameters = {
            **{k: params[k] for k in _TGI_PARAMETERS if k in params},
            "grammar": {"type": "json", "value": wrapped},
            "details": False,
        }
        return "/generate", {"inputs": prompt, "parameters": parameters}
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": prompt}]}
    body["max_tokens"] = params.get("max_new_tokens")
    if params.get("do_sample"):
        body["temperature"] = params.get("temperature", 0.7)
        body["seed"] = params.get("seed")
    else:
        body["temperature"] = 0.0
    if form == TGI_GRAMMAR:
        body["response_format"] = {"type": "json", "value": wrapped}
    elif form == JSON_SCHEMA:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": SCHEMA_NAME, "schema": strict_schema(wrapped), "strict": True},
        }
    else:
        body["response_format"] = {"type": "json_object", "schema": wrapped}
    return "/v1/chat/completions", {k: v for k, v in body.items() if v is not None}


def read_reply(path: str, payload: Any) -> str | None:
    """The generated text in a successful response body, None if it has none.

    The text is made valid UTF-8 here, where it enters: a JSON body may escape a lone
    surrogate or a NUL into it, and nothing downstream (the cache, Arrow) could store it.
    """
    if path == "/generate":
        if isinstance(payload, list):  # TGI's compat route answers a list
            payload = payload[0] if payload else {}
        text = payload.get("generated_text") if isinstance(payload, dict) else None
    else:
        try:
            text = payload["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            return None
    return valid_text(text) if isinstance(text, str) else None


def read_usage(payload: Any, headers: Mapping[str, str] | None) -> tuple[int, int] | None:
    """``(prompt tokens, generated tokens)`` of one answer, None when the server says nothing.

    OpenAI-compatible servers (and TGI's Messages API) put ``usage`` in the body; TGI's
    ``/generate`` sends ``x-prompt-tokens`` / ``x-generated-tokens`` headers.
    """
    usage = payload.get("usage") if isinstance(payload, dict) else None
    if isinstance(usage, dict):
        prompt, generated = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if isinstance(prompt, int) and isinstance(generated, int):
            return prompt, generated
    if headers:
        try:
            return int(headers["x-prompt-tokens"]), int(headers["x-generated-tokens"])
        except (KeyError, ValueError):
            return None
    return None
