"""Tagging endpoints: what server answers, and how one request is sent to it.

Two kinds of server are spoken to:

- **TGI** (detected by ``GET /info``): a raw template goes to ``/generate`` with TGI's
  JSON grammar ``{"type": "json", "value": schema}``; a chat template goes to its Messages
  API ``/v1/chat/completions`` with ``response_format={"type": "json", "value": schema}``.
- **OpenAI-compatible** servers such as llama.cpp (no ``/info``): the chat API with
  ``response_format={"type": "json_object", "schema": schema}``.

Generation requests go through one ``aiohttp`` session per event loop instead of ``AsyncInferenceClient``: its
``httpx`` client is capped at 100 pooled connections (below TGI's default
``max_concurrent_requests`` of 128, so a fleet could never be saturated), it spends more
client CPU per request than the 2 ms budget allows at that rate, and it does not retry —
see ``benchmarks/bench_tagging.py`` for the figures.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import aiohttp

from instag_hf.errors import EndpointError
from instag_hf.parsing import valid_text
from instag_hf.retry import parse_retry_after

logger = logging.getLogger(__name__)

TGI = "tgi"
OPENAI = "openai"


@dataclass(frozen=True)
class ServerInfo:
    """What an endpoint told us about itself.

    ``identity`` names the model, not the address: two replicas of one model share cached
    answers, and moving a server to another port keeps its cache.
    """

    url: str
    kind: str
    model_id: str
    model_sha: str | None = None
    max_concurrent_requests: int | None = None
    max_input_tokens: int | None = None
    max_total_tokens: int | None = None

    @property
    def identity(self) -> str:
        return f"{self.kind}:{self.model_id}@{self.model_sha or ''}"


def detect_server(url: str, *, timeout: float = 10.0, headers: dict[str, str] | None = None) -> ServerInfo:
    """Ask ``url`` what it is: TGI if ``GET /info`` answers, else an OpenAI-compatible server.

    Raises:
        EndpointError: nothing answers at ``url``.
    """
    try:
        info = _get_json(f"{url}/info", timeout, headers)
    except urllib.error.HTTPError:
        info = None  # /info missing or refused: not TGI
    except (urllib.error.URLError, OSError) as error:  # refused, DNS, timeout: nobody there
        raise EndpointError(
            f"Tagging endpoint {url} does not answer ({getattr(error, 'reason', error)}). "
            "Check that the server is up and INSTAG_ENDPOINT / Tagger(endpoint=...) points at it.",
            url=url,
        ) from None
    if isinstance(info, dict) and "model_id" in info and "max_concurrent_requests" in info:
        return ServerInfo(
            url=url,
            kind=TGI,
            model_id=str(info["model_id"]),
            model_sha=info.get("model_sha"),
            max_concurrent_requests=int(info["max_concurrent_requests"]),
            max_input_tokens=info.get("max_input_tokens"),
            max_total_tokens=info.get("max_total_tokens"),
        )
    try:
        models = (_get_json(f"{url}/v1/models", timeout, headers) or {}).get("data") or []
    except (urllib.error.URLError, OSError, AttributeError) as error:
        raise EndpointError(
            f"Tagging endpoint {url} is neither TGI (no /info) nor OpenAI-compatible (/v1/models: {error}).",
            url=url,
        ) from None
    model = str(models[0].get("id", "unknown")) if models else "unknown"
    # llama.cpp reports the GGUF path; the file name is the part that is stable across machines.
    return ServerInfo(url=url, kind=OPENAI, model_id=model.rsplit("/", 1)[-1])


def _get_json(url: str, timeout: float, headers: dict[str, str] | None) -> Any:
    # Plain urllib, not InferenceClient.get_endpoint_info: that one sends the user's Hub
    # token along, and an arbitrary endpoint must not receive it.
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        try:
            return json.loads(response.read())
        except ValueError:
            return None


@dataclass
class Reply:
    """The outcome of one HTTP attempt."""

    text: str | None = None
    status: int | None = None  # None: timeout or broken connection
    error: str | None = None
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.text is not None


def tgi_schema(schema: dict) -> dict:
    """TGI only takes a JSON grammar with top-level ``properties``: wrap the list in an object.

    The answer then reads ``{"tags": [...]}``, which the parser unwraps.
    """
    return {"type": "object", "properties": {"tags": schema}, "required": ["tags"]}


def build_request(info: ServerInfo, prompt: str, raw: bool, params: dict[str, Any], schema: dict) -> tuple[str, dict]:
    """Path and JSON body of one generation request for this server."""
    if info.kind == TGI:
        schema = tgi_schema(schema)
    if info.kind == TGI and raw:
        parameters = {**params, "grammar": {"type": "json", "value": schema}, "details": False}
        return "/generate", {"inputs": prompt, "parameters": parameters}
    body: dict[str, Any] = {"model": info.model_id, "messages": [{"role": "user", "content": prompt}]}
    body["max_tokens"] = params.get("max_new_tokens")
    if params.get("do_sample"):
        body["temperature"] = params.get("temperature", 0.7)
        body["seed"] = params.get("seed")
    else:
        body["temperature"] = 0.0
    if info.kind == TGI:
        body["response_format"] = {"type": "json", "value": schema}
    else:
        body["response_format"] = {"type": "json_object", "schema": schema}
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
    return valid_text(text) if isinstance(text, str) else text


async def post(
    session: aiohttp.ClientSession, url: str, body: dict, timeout: float, headers: dict[str, str] | None = None
) -> tuple[int | None, Any, float | None, str | None]:
    """POST ``body``; returns (status, decoded JSON or None, Retry-After, error text)."""
    try:
        async with session.post(url, json=body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            raw = await resp.read()
            retry_after = parse_retry_after(resp.headers.get("Retry-After"))
            try:
                payload = json.loads(raw) if raw else None
            except ValueError:
                payload = None
            if resp.status >= 400:
                message = payload.get("error") if isinstance(payload, dict) else None
                # The error text becomes a row's instag_error: valid UTF-8 only.
                return resp.status, payload, retry_after, valid_text(str(message or raw[:200].decode("utf-8", "replace")))
            return resp.status, payload, retry_after, None
    except asyncio.TimeoutError:
        return None, None, None, f"timed out after {timeout:g}s"
    except (aiohttp.ClientError, OSError) as error:
        return None, None, None, f"{type(error).__name__}: {error}".rstrip(": ")


# Servers this process started and watches (``instag_hf.local_llm``) report here when their
# process exits, so a map against them stops at once with the real cause (exit status, log
# tail) instead of "connection refused" until the fail-fast time runs out. Per process: a
# ``num_proc`` worker forked before the death falls back to the fail-fast time.
_DEAD_SERVERS: dict[str, str] = {}


def report_dead_server(url: str, reason: str) -> None:
    """Record that the server at ``url`` has exited, and why (a sentence or two)."""
    _DEAD_SERVERS[url.rstrip("/")] = reason


def dead_server_reason(url: str) -> str | None:
    """Why the server at ``url`` is known to be dead, or None when nothing is known."""
    return _DEAD_SERVERS.get(url.rstrip("/"))


def forget_dead_server(url: str) -> None:
    """A new server now listens at ``url`` (a port can be reused)."""
    _DEAD_SERVERS.pop(url.rstrip("/"), None)
