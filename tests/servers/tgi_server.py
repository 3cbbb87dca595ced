"""A loopback server that speaks TGI's HTTP API, for tests and benchmarks.

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

Knobs (``Knobs`` below) are set at start and at runtime. Faults are drawn per request from
``random.Random(f"{seed}:{query}:{attempt}")``, so a run is reproducible whatever order
concurrent requests arrive in. Fault kinds: "429" and "503" (immediate, with
``Retry-After: <retry_after>``); after the latency, "424", "500", "drop" (TCP closed, no
response), the content faults "prose", "dict", "truncated", "empty", "garbage", and the
poisoned ones "surrogate" and "raw_surrogate" (a tag that is not valid text); and "slow"
(10 x latency). Faults apply with or without a grammar: they model a misbehaving deployment.

Statistics cover generation requests: ``requests``, ``statuses`` ("drop" for dropped ones),
``faults``, ``in_flight``, ``max_in_flight``, ``queries`` (requests per extracted query, the
model's key; rejected ones included) and ``log`` (``{query, route, status, fault, time}`` in
answer order); ``routes`` counts every non-control path, ``/info`` included.

Run: ``python -m tests.servers.tgi_server --host 127.0.0.1 --port 0 --latency 0.05``
prints ``READY http://127.0.0.1:<port>`` once listening; SIGTERM/SIGINT stop it. From
Python, ``with start_tgi_server(latency=0.05) as server: ...`` (see ``TGIServerHandle``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import queue
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.servers import _tgi_model as model
from tests.servers._tgi_protocol import REQUEST_SCHEMAS, VERSION, Job, body_problem, request_validators

FAULT_KINDS = ("429", "503", "500", "424", "drop", "prose", "dict", "truncated", "empty", "garbage", "slow",
               "surrogate", "raw_surrogate")
REPO_ROOT = Path(__file__).resolve().parents[2]


def _fault_weights(faults: Any) -> dict[str, float]:
    if isinstance(faults, (str, int)):  # "prose,dict" from the command line
        faults = [part.strip() for part in str(faults).split(",") if part.strip()]
    if isinstance(faults, dict):
        return {str(kind): float(weight) for kind, weight in faults.items()}
    return {str(kind): 1.0 for kind in faults}


@dataclass(frozen=True)
class Knobs:
    """Server behaviour, set at start and changeable at runtime (partial updates)."""

    latency: float = 0.0  # seconds every generation request takes
    jitter: float = 0.0  # plus uniform(0, jitter) seconds
    max_concurrent_requests: int = 128  # in flight across generation routes; more get 429
    max_input_tokens: int = 1024  # tokens = whitespace-separated words
    max_total_tokens: int = 2048  # input + max_new_tokens
    model_id: str = "instag-fake/tgi-tagger"
    tag_variant: int = 0  # another fake model's tags (see _tgi_model.tag_query); 0: the default model
    seed: int = 0  # seeds the fault draws (the tags themselves never depend on it)
    fault_rate: float = 0.0  # probability that a request gets a fault drawn from `faults`
    faults: Any = FAULT_KINDS  # kinds (equal weights), "a,b" text, or {kind: weight}; stored as dict
    retry_after: float | None = 1  # Retry-After seconds on injected 429/503; None: no header
    fail_first_attempts: int = 0  # the first K requests of every query fail with...
    fail_first_fault: str = "503"  # ...this fault kind, whatever fault_rate says
    strict_grammar: bool = True  # reject JSON grammars without top-level "properties", as TGI does
    healthy: bool = True  # False: GET /health answers 503

    def __post_init__(self) -> None:
        weights = _fault_weights(self.faults)
        unknown = sorted((set(weights) | {self.fail_first_fault}) - set(FAULT_KINDS))
        if unknown:
            raise ValueError(f"unknown fault kind(s) {unknown}; choose from {list(FAULT_KINDS)}")
        object.__setattr__(self, "faults", weights)
        for name, kind in (("latency", float), ("jitter", float), ("fault_rate", float), ("seed", int),
                           ("max_concurrent_requests", int), ("max_input_tokens", int),
                           ("max_total_tokens", int), ("fail_first_attempts", int), ("tag_variant", int)):
            object.__setattr__(self, name, kind(getattr(self, name)))
        if min(self.latency, self.jitter, self.fail_first_attempts, self.seed, self.retry_after or 0) < 0:
            raise ValueError("latency, jitter, retry_after, seed and fail_first_attempts must be >= 0")
        if not 0.0 <= self.fault_rate <= 1.0:
            raise ValueError(f"fault_rate must be in [0, 1], got {self.fault_rate}")
        if self.fault_rate and sum(weights.values()) <= 0:
            raise ValueError("fault_rate > 0 needs at least one fault kind with a positive weight")
        if not 0 < self.max_input_tokens < self.max_total_tokens or self.max_concurrent_requests < 1:
            raise ValueError("need 0 < max_input_tokens < max_total_tokens and max_concurrent_requests >= 1")

    def updated(self, changes: dict[str, Any]) -> Knobs:
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(f"unknown knob(s) {sorted(unknown)}")
        return replace(self, **changes)


def _error(status: int, message: str, error_type: str, retry_after: float | None = None) -> web.Response:
    headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
    return web.json_response({"error": message, "error_type": error_type}, status=status, headers=headers)


class TGIServer:
    """The aiohttp application and its state: knobs, in-flight count, statistics."""

    def __init__(self, knobs: Knobs) -> None:
        self.knobs = self.initial_knobs = knobs
        self.validators = request_validators()
        self.in_flight = 0
        self.started = int(time.time())
        self.reset()

    def reset(self) -> None:
        self.requests, self.max_in_flight, self.log = 0, self.in_flight, []
        self.routes, self.statuses, self.faults, self.queries = Counter(), Counter(), Counter(), Counter()

    def stats(self) -> dict[str, Any]:
        return {"requests": self.requests, "routes": dict(self.routes), "statuses": dict(self.statuses),
                "faults": dict(self.faults), "in_flight": self.in_flight, "max_in_flight": self.max_in_flight,
                "queries": dict(self.queries), "log": self.log}

    def app(self) -> web.Application:
        @web.middleware
        async def count_routes(request: web.Request, handler: Any) -> web.StreamResponse:
            if not request.path.startswith("/_control/"):
                self.routes[request.path] += 1
            return await handler(request)

        app = web.Application(middlewares=[count_routes], client_max_size=64 * 1024 * 1024)
        app.router.add_get("/info", self.info)
        app.router.add_get("/health", self.health)
        app.router.add_get("/v1/models", self.models)
        for route in REQUEST_SCHEMAS:
            app.router.add_post(route, self.generate)
        app.router.add_get("/_control/knobs", self.control_knobs)
        app.router.add_post("/_control/knobs", self.control_knobs)
        app.router.add_get("/_control/stats", self.control_stats)
        app.router.add_post("/_control/reset", self.control_stats)
        return app

    async def info(self, _: web.Request) -> web.Response:
        k = self.knobs
        return web.json_response({
            "model_id": k.model_id, "model_sha": None, "model_pipeline_tag": "text-generation",
            "max_concurrent_requests": k.max_concurrent_requests, "max_best_of": 2, "max_stop_sequences": 4,
            "max_input_tokens": k.max_input_tokens, "max_total_tokens": k.max_total_tokens,
            "validation_workers": 2, "max_client_batch_size": 4, "router": "text-generation-router",
            "version": VERSION, "sha": None, "docker_label": None})

    async def health(self, _: web.Request) -> web.Response:
        return web.Response() if self.knobs.healthy else _error(503, "unhealthy", "healthcheck")

    async def models(self, _: web.Request) -> web.Response:
        name = self.knobs.model_id
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
            return _error(424, "Request failed during generation: Server error: CUDA out of memory",
                          "generation")
        if fault == "500":
            self._done(job.route, query, 500, fault)
            return _error(500, "Incomplete generation", "incomplete_generation")
        text, finish = job.generate(query, fault, k.strict_grammar, k.tag_variant)
        self._done(job.route, query, 200, fault)
        return web.json_response(job.response(text, finish, k.model_id))


async def _serve(host: str, port: int, knobs: Knobs, exit_with_stdin: bool = False) -> None:
    app = TGIServer(knobs).app()
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    # A deep backlog: benchmarks open 128+ connections at once and must not wait on SYN retries.
    await web.TCPSite(runner, host, port, backlog=4096).start()
    print(f"READY http://{host}:{runner.addresses[0][1]}", flush=True)
    loop, stop = asyncio.get_running_loop(), asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if exit_with_stdin:  # the parent holds our stdin: EOF means it died without stopping us

        def wait_for_eof() -> None:
            sys.stdin.read()
            loop.call_soon_threadsafe(stop.set)

        threading.Thread(target=wait_for_eof, daemon=True).start()
    await stop.wait()
    await runner.cleanup()


def _cli_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.servers.tgi_server",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on the READY line)")
    parser.add_argument("--knobs", type=json.loads, default={}, help="knobs as one JSON object")
    parser.add_argument("--exit-with-stdin", action="store_true", help="stop when stdin reaches EOF")
    for f in fields(Knobs):
        parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=_cli_value,
                            default=argparse.SUPPRESS,
                            help=f"knob (default {f.default!r}); JSON or plain text")
    args = vars(parser.parse_args(argv))
    host, port, exit_with_stdin = args.pop("host"), args.pop("port"), args.pop("exit_with_stdin")
    knobs = {**args.pop("knobs"), **args}
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(_serve(host, port, Knobs(**knobs), exit_with_stdin))


class TGIServerHandle:
    """A running server process: ``url``, knobs, statistics; a context manager that stops it."""

    def __init__(self, process: subprocess.Popen[str], url: str, stderr: Any) -> None:
        self.process, self.url, self._stderr = process, url, stderr
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with self._opener.open(request, timeout=30) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise ValueError(f"{method} {path} failed with {exc.code}: {exc.read().decode()}") from None

    def set_knobs(self, **knobs: Any) -> dict[str, Any]:
        """Change some knobs (the others keep their values); returns all knobs."""
        return self._call("POST", "/_control/knobs", knobs)

    def knobs(self) -> dict[str, Any]:
        return self._call("GET", "/_control/knobs")

    def stats(self) -> dict[str, Any]:
        """requests, routes, statuses, faults, in_flight, max_in_flight, queries, log."""
        return self._call("GET", "/_control/stats")

    def reset(self, knobs: bool = False) -> None:
        """Zero the statistics; with ``knobs=True`` also restore the knobs the server started with."""
        self._call("POST", "/_control/reset?knobs=1" if knobs else "/_control/reset")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe:
                pipe.close()
        self._stderr.close()

    def __enter__(self) -> TGIServerHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def start_tgi_server(
    *, host: str = "127.0.0.1", port: int = 0, timeout: float = 30.0, **knobs: Any
) -> TGIServerHandle:
    """Start the server in its own process (its CPU never counts against the client).

    Args:
        host, port: where to listen; port 0 picks a free one.
        timeout: seconds to wait for the READY line.
        **knobs: initial ``Knobs`` values.

    Returns:
        A handle; use it as a context manager or call ``close()``.

    Raises:
        ValueError: a knob is unknown or invalid.
        RuntimeError: the server did not start; the message carries its stderr.
    """
    Knobs(**knobs)  # fail here, in the caller, on a bad knob
    stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 -- lives as long as the server
    command = [sys.executable, "-m", "tests.servers.tgi_server", "--host", host, "--port", str(port),
               "--knobs", json.dumps(knobs), "--exit-with-stdin"]
    # Our end of its stdin closes when this process dies, however it dies: no orphan servers.
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=stderr, text=True)
    lines: queue.Queue[str] = queue.Queue()

    def read_ready_line() -> None:
        lines.put(process.stdout.readline())  # type: ignore[union-attr]

    threading.Thread(target=read_ready_line, daemon=True).start()
    try:
        line = lines.get(timeout=timeout)
    except queue.Empty:
        line = ""
    if not line.startswith("READY "):
        process.kill()
        process.wait()
        stderr.seek(0)
        message = (f"TGI test server did not start within {timeout}s (stdout {line!r}); "
                   f"its stderr:\n{stderr.read()}")
        stderr.close()
        raise RuntimeError(message)
    return TGIServerHandle(process, line.split(" ", 1)[1].strip(), stderr)


if __name__ == "__main__":
    main()
