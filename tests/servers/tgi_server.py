"""A loopback server that speaks TGI's HTTP API -- or, as ``personality="openai"``, the
OpenAI chat-completions API as vLLM and OpenAI serve it -- for tests and benchmarks.

Real TGI only ships as a GPU container; this server answers the same routes, bodies,
status codes and error bodies as ``tgi_openapi.json`` (TGI's own OpenAPI document, copied
here) with a fake deterministic tagging model (``_tgi_model``), plus knobs for latency and
injected faults, and statistics that tests can read.

Routes (TGI): ``GET /info``, ``GET /health``, ``GET /v1/models``, ``POST /generate``,
``POST /`` (answers a one-element list, as TGI's compat route does when ``stream`` is
false; streaming is not implemented and gets a 422), ``POST /v1/chat/completions``.
Routes (not TGI): ``GET|POST /_control/knobs`` (partial update), ``GET /_control/stats``,
``POST /_control/reset`` (statistics; ``?knobs=1``: also the knobs it started with).

Behaviour copied from TGI:

* Bodies are validated against the spec's component schemas (``nullable`` and ``$ref``
  translated to JSON Schema 2020-12; TGI's serde alias ``"json_object"`` for the ``"json"``
  grammar is accepted). Failures get 422 ``{"error", "error_type": "validation"}``.
* Tokens are counted as whitespace-separated words (of ``inputs``, or of all chat message
  contents). TGI's order of checks: ``inputs`` tokens + ``max_new_tokens`` must be <=
  ``max_total_tokens``, then ``inputs`` must have less than ``max_input_tokens`` tokens.
* A JSON grammar must be a valid JSON schema with top-level ``properties`` (TGI >= 2.2
  rejects others; knob ``strict_grammar``). The answer follows the schema's shape: a bare
  list, or ``{"<array property>": [...]}`` for an object schema.
* A request arriving while ``max_concurrent_requests`` generation requests are in flight
  (all generation routes together) gets 429 ``Model is overloaded`` with no Retry-After,
  as TGI does. ``details`` defaults to false, as TGI's router does (the spec says true).
* ``max_new_tokens`` / ``max_tokens`` cut the answer (finish reason "length"); ``stop``
  sequences end it (TGI keeps the stop sequence in the text).
* ``/generate`` and ``/`` send ``x-prompt-tokens`` and ``x-generated-tokens`` headers, the
  Messages API a ``usage`` object, as TGI's router does.

Personality "openai" (``_openai_protocol`` says what it copies from vLLM/OpenAI): routes
``GET /v1/models`` (every model of knob ``models``, ``owned_by`` knob ``owned_by``),
``POST /v1/chat/completions``, ``GET /health``, ``GET /version``; no ``/info`` or
``/generate`` (404). Knob ``reject_json_schema`` makes it refuse the ``json_schema``
response format with a 400 naming ``response_format``, as a server without structured
outputs does.

Authentication: with knob ``api_key`` set, a request without ``Authorization: Bearer
<api_key>`` gets ``refuse_status`` (401; 403 for a key without the right) -- on every route
for TGI (an Inference Endpoint guards its whole host), on ``/v1/*`` for "openai" (vLLM's
``--api-key``). ``echo_key`` puts the key it received into the error message, as a
careless proxy would, so tests can check that clients never repeat it. TLS: start with
``tls=(certfile, keyfile)`` (``--tls-cert/--tls-key``) to serve https.

Knobs (``Knobs`` below) are set at start and at runtime. Faults are drawn per request from
``random.Random(f"{seed}:{query}:{attempt}")``, so a run is reproducible whatever order
concurrent requests arrive in. Fault kinds: "429" and "503" (immediate, with
``Retry-After: <retry_after>``); after the latency, "424", "500", "drop" (TCP closed, no
response), the content faults "prose", "dict", "truncated", "empty", "garbage", and the
poisoned ones "surrogate" and "raw_surrogate" (a tag that is not valid text); and "slow"
(10 x latency). Faults apply with or without a grammar: they model a misbehaving deployment.

Statistics cover generation requests: ``requests``, ``statuses`` ("drop" for dropped ones),
``faults``, ``in_flight``, ``max_in_flight``, ``queries`` (requests per extracted query, the
model's key; rejected ones included), ``formats`` (structured-output forms received: the
``response_format`` type, the ``/generate`` grammar type, or "none") and ``log``
(``{query, route, status, fault, time}`` in answer order); ``routes`` counts every
non-control path, ``/info`` included; ``hosts`` counts requests per ``Host`` header, split
into ``auth`` (an ``Authorization`` header came) and ``no_auth``; ``refused`` counts 401/403.

Run: ``python -m tests.servers.tgi_server --host 127.0.0.1 --port 0 --latency 0.05``
prints ``READY http://127.0.0.1:<port>`` once listening; SIGTERM/SIGINT stop it. From
Python, ``with start_tgi_server(latency=0.05) as server: ...`` (see ``TGIServerHandle``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import sys
import time
from collections import Counter
from dataclasses import asdict, fields
from typing import Any

from aiohttp import web

from tests.servers import _openai_protocol as openai
from tests.servers import _tgi_model as model
from tests.servers._knobs import FAULT_KINDS, REPO_ROOT, Knobs
from tests.servers._launch import TGIServerHandle, serve_until_stopped, start_tgi_server
from tests.servers._tgi_protocol import CHAT, REQUEST_SCHEMAS, VERSION, Job, body_problem, request_validators

__all__ = ["FAULT_KINDS", "REPO_ROOT", "Knobs", "TGIServer", "TGIServerHandle", "main", "start_tgi_server"]


def _error(status: int, message: str, error_type: str, retry_after: float | None = None) -> web.Response:
    headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
    return web.json_response({"error": message, "error_type": error_type}, status=status, headers=headers)


class TGIServer(openai.ChatRoutes):
    """The aiohttp application and its state: knobs, in-flight count, statistics."""

    def __init__(self, knobs: Knobs) -> None:
        self.knobs = self.initial_knobs = knobs
        self.validators = request_validators()
        self.in_flight = 0
        self.started = int(time.time())
        self.reset()

    def reset(self) -> None:
        self.requests, self.max_in_flight, self.log, self.refused, self.queued = 0, self.in_flight, [], 0, 0
        self.routes, self.statuses, self.faults, self.queries = Counter(), Counter(), Counter(), Counter()
        self.formats: Counter[str] = Counter()
        self.hosts: dict[str, Counter[str]] = {}

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "routes": dict(self.routes),
            "statuses": dict(self.statuses),
            "faults": dict(self.faults),
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "queries": dict(self.queries),
            "formats": dict(self.formats),
            "refused": self.refused,
            "queued": self.queued,
            "hosts": {host: dict(counts) for host, counts in self.hosts.items()},
            "log": self.log,
        }

    @property
    def openai(self) -> bool:
        return self.knobs.personality == "openai"

    def app(self) -> web.Application:
        @web.middleware
        async def count_routes(request: web.Request, handler: Any) -> web.StreamResponse:
            if request.path.startswith("/_control/"):
                return await handler(request)
            self.routes[request.path] += 1
            has_auth = "Authorization" in request.headers
            self.hosts.setdefault(request.host, Counter())["auth" if has_auth else "no_auth"] += 1
            refusal = self._refusal(request)
            if refusal is not None:
                await self._log_refused(request)
                return refusal
            return await handler(request)

        app = web.Application(middlewares=[count_routes], client_max_size=64 * 1024 * 1024)
        app.router.add_get("/info", self.info)
        app.router.add_get("/health", self.health)
        app.router.add_get("/version", self.version)
        app.router.add_get("/v1/models", self.models)
        for route in REQUEST_SCHEMAS:
            app.router.add_post(route, self.generate)
        app.router.add_get("/_control/knobs", self.control_knobs)
        app.router.add_post("/_control/knobs", self.control_knobs)
        app.router.add_get("/_control/stats", self.control_stats)
        app.router.add_post("/_control/reset", self.control_stats)
        return app

    def _refusal(self, request: web.Request) -> web.Response | None:
        k = self.knobs
        guarded = request.path.startswith("/v1/") if self.openai else True
        if k.api_key is None or not guarded:
            return None
        sent = request.headers.get("Authorization", "")
        if sent == f"Bearer {k.api_key}":
            return None
        self.refused += 1
        shown = f" (received {sent!r})" if k.echo_key and sent else ""
        if self.openai:
            return openai.error(
                k.refuse_status, f"Incorrect API key provided{shown}", "invalid_request_error", code="invalid_api_key"
            )
        return _error(k.refuse_status, f"Unauthorized{shown}", "unauthorized")

    async def _log_refused(self, request: web.Request) -> None:
        if request.method != "POST":
            return
        try:
            body = await request.json()
            source = body["inputs"] if "inputs" in body else [m for m in body["messages"] if m["role"] == "user"][-1]
            query = model.extract_query(source if isinstance(source, str) else str(source.get("content")))
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            query = None
        if query is not None:
            self.queries[query] += 1
        self._done(request.path, query, self.knobs.refuse_status)

    async def version(self, request: web.Request) -> web.Response:
        if not self.openai:
            raise web.HTTPNotFound()
        return web.json_response({"version": "0.11.0"})

    async def info(self, _: web.Request) -> web.Response:
        if self.openai:  # vLLM has no /info: that is how clients tell it from TGI
            return web.json_response({"detail": "Not Found"}, status=404)  # FastAPI's 404
        k = self.knobs
        return web.json_response(
            {
                "model_id": k.model_id,
                "model_sha": None,
                "model_pipeline_tag": "text-generation",
                "max_concurrent_requests": k.max_concurrent_requests,
                "max_best_of": 2,
                "max_stop_sequences": 4,
                "max_input_tokens": k.max_input_tokens,
                "max_total_tokens": k.max_total_tokens,
                "validation_workers": 2,
                "max_client_batch_size": 4,
                "router": "text-generation-router",
                "version": VERSION,
                "sha": None,
                "docker_label": None,
            }
        )

    async def health(self, _: web.Request) -> web.Response:
        return web.Response() if self.knobs.healthy else _error(503, "unhealthy", "healthcheck")

    async def models(self, _: web.Request) -> web.Response:
        k = self.knobs
        if self.openai:
            return web.json_response(openai.models_body(k.models, k.owned_by, self.started, k.max_total_tokens))
        name = k.model_id
        return web.json_response({"id": name, "object": "model", "created": self.started, "owned_by": name})

    async def control_knobs(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            try:
                self.knobs = self.knobs.updated(await request.json())
            except (ValueError, TypeError) as exc:
                return _error(400, str(exc), "knobs")
        return web.json_response(asdict(self.knobs))

    async def control_stats(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            self.reset()
            if request.query.get("knobs"):
                self.knobs = self.initial_knobs
        return web.json_response(self.stats())

    def _done(self, route: str, query: str | None, status: int | str, fault: str | None = None) -> None:
        self.statuses[str(status)] += 1
        entry = {"query": query, "route": route, "status": status, "fault": fault, "time": time.time()}
        self.log.append(entry)

    async def generate(self, request: web.Request) -> web.StreamResponse:
        if self.openai:
            if request.path != CHAT:
                return web.json_response({"detail": "Not Found"}, status=404)
            return await self.chat(request)
        route = request.path
        self.requests += 1
        try:
            body = await request.json()
            problem = body_problem(self.validators[route], body)
        except ValueError as exc:
            problem = f"Failed to parse the request body as JSON: {exc}"
        if problem:
            self._done(route, None, 422)
            return _error(422, problem, "validation")
        job = Job.from_body(route, body)
        grammar = job.grammar if isinstance(job.grammar, dict) else {}
        self.formats[str(grammar.get("type", "none"))] += 1
        query = model.extract_query(job.source)
        attempt = self.queries[query]
        self.queries[query] += 1
        if job.stream:
            self._done(route, query, 422)
            return _error(422, "Input validation error: this test server does not stream", "validation")
        if self.in_flight >= self.knobs.max_concurrent_requests:
            self._done(route, query, 429)  # TGI sends no Retry-After here
            return _error(429, "Model is overloaded", "overloaded")
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._answer(request, job, query, attempt)
        finally:
            self.in_flight -= 1

    def _draw_fault(self, rng: random.Random, attempt: int) -> str | None:
        k = self.knobs
        if attempt < k.fail_first_attempts:
            return k.fail_first_fault
        if k.fault_rate and rng.random() < k.fault_rate:
            return rng.choices(list(k.faults), weights=list(k.faults.values()))[0]
        return None

    async def _answer(self, request: web.Request, job: Job, query: str, attempt: int) -> web.StreamResponse:
        k = self.knobs
        problem = job.problem(k.max_input_tokens, k.max_total_tokens, k.strict_grammar)
        if problem:
            self._done(job.route, query, 422)
            return _error(422, f"Input validation error: {problem}", "validation")
        # Seeded by query and attempt, not arrival order: reproducible under any concurrency.
        rng = random.Random(f"{k.seed}:{query}:{attempt}")
        fault = self._draw_fault(rng, attempt)
        if fault:
            self.faults[fault] += 1
        if fault == "429":
            self._done(job.route, query, 429, fault)
            return _error(429, "Model is overloaded", "overloaded", k.retry_after)
        if fault == "503":  # what a proxy in front of TGI answers while it (re)starts
            self._done(job.route, query, 503, fault)
            return _error(503, "Service Unavailable", "unavailable", k.retry_after)
        delay = k.latency * (10 if fault == "slow" else 1) + (rng.uniform(0, k.jitter) if k.jitter else 0)
        if delay:
            await asyncio.sleep(delay)
        if fault == "drop":
            self._done(job.route, query, "drop", fault)
            if request.transport is not None:
                request.transport.close()
            return web.Response()  # never sent: aiohttp ignores writes to a closed transport
        if fault == "424":
            self._done(job.route, query, 424, fault)
            return _error(424, "Request failed during generation: Server error: CUDA out of memory", "generation")
        if fault == "500":
            self._done(job.route, query, 500, fault)
            return _error(500, "Incomplete generation", "incomplete_generation")
        text, finish = job.generate(query, fault, k.strict_grammar, k.tag_variant)
        self._done(job.route, query, 200, fault)
        headers = {}
        if job.route != CHAT:  # TGI's generate_internal sends the token counts as headers
            headers = {
                "x-prompt-tokens": str(job.input_tokens),
                "x-generated-tokens": str(len(model.split_tokens(text))),
            }
        return web.json_response(job.response(text, finish, k.model_id), headers=headers)


async def _serve(
    host: str, port: int, knobs: Knobs, exit_with_stdin: bool = False, tls: tuple[str, str] | None = None
) -> None:
    await serve_until_stopped(TGIServer(knobs).app(), host, port, exit_with_stdin, tls)


def _cli_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.servers.tgi_server", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on the READY line)")
    parser.add_argument("--knobs", type=json.loads, default={}, help="knobs as one JSON object")
    parser.add_argument("--exit-with-stdin", action="store_true", help="stop when stdin reaches EOF")
    parser.add_argument("--tls-cert", default=None, help="serve https with this certificate (PEM)")
    parser.add_argument("--tls-key", default=None, help="...and this private key (PEM)")
    for f in fields(Knobs):
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            type=_cli_value,
            default=argparse.SUPPRESS,
            help=f"knob (default {f.default!r}); JSON or plain text",
        )
    args = vars(parser.parse_args(argv))
    host, port, exit_with_stdin = args.pop("host"), args.pop("port"), args.pop("exit_with_stdin")
    cert, key = args.pop("tls_cert"), args.pop("tls_key")
    knobs = {**args.pop("knobs"), **args}
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(_serve(host, port, Knobs(**knobs), exit_with_stdin, (cert, key) if cert else None))


if __name__ == "__main__":
    main()
