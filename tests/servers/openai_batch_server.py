"""A loopback emulator of OpenAI's Files and Batch API, written from ``openai-batch-openapi.json``
(the Files + Batch subset of OpenAI's published OpenAPI document, copied here), for tests.

Routes (OpenAI): ``POST /v1/files`` (multipart ``file`` + ``purpose``), ``GET /v1/files/{id}``,
``GET /v1/files/{id}/content``, ``POST /v1/batches``, ``GET /v1/batches``,
``GET /v1/batches/{id}``, ``POST /v1/batches/{id}/cancel``. Routes (not OpenAI):
``GET|POST /_control/knobs``, ``GET /_control/stats``, ``POST /_control/reset``, as the
protocol server has them (so ``tests.servers._launch.TGIServerHandle`` drives both).

Behaviour copied from the document:

* Request bodies are validated against ``CreateFileRequest`` (``purpose`` enum) and
  ``CreateBatchRequest`` (``endpoint`` enum, ``completion_window`` ``24h``); a bad one gets
  400 ``{"error": {"message", "type": "invalid_request_error", "param", "code"}}``, as
  OpenAI answers. Every object returned follows ``OpenAIFile`` / ``Batch`` (a test checks).
* The input file must have purpose ``batch``; its lines must be JSON with a unique
  ``custom_id``, ``method`` POST and the batch's ``url``, at most 50,000 lines and 200 MB,
  or the batch ends ``failed`` with ``errors.data[{code, message, line}]``.
* A batch moves ``validating`` -> ``in_progress`` -> ``completed`` (or ``expired``) as it
  is polled: knob ``polls`` is how many ``GET /v1/batches/{id}`` see it in progress. When it
  finishes, its lines are run (``tests/servers/_batch_lines``) through the chat server at
  knob ``chat_url``, or answered by the fake tagging model when that is None. Lines that
  answer 200 go to the output file, others to the error file (purpose ``batch_output``).
* Knob ``expire_after``: the batch expires with only that many lines run; the others are
  in the error file as ``batch_expired`` lines, and ``request_counts`` say so.
* Knob ``api_key``: every ``/v1`` route wants ``Authorization: Bearer <api_key>`` (401 otherwise).

Run: ``python -m tests.servers.openai_batch_server --knobs '{"chat_url": "http://..."}'``
prints ``READY http://127.0.0.1:<port>``; from Python, ``with start_batch_server(...) as api:``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from aiohttp import web
from jsonschema import Draft202012Validator

from tests.servers import _tgi_model as model
from tests.servers._batch_lines import result_line, run_lines
from tests.servers._launch import TGIServerHandle, serve_until_stopped, spawn_server
from tests.servers._tgi_protocol import openapi_to_jsonschema

SPEC = json.loads((Path(__file__).parent / "openai_batch_openapi.json").read_text(encoding="utf-8"))
_DEFS = SPEC["components"]["schemas"]
MAX_LINES, MAX_BYTES = 50_000, 200 * 1024 * 1024


def spec_validator(name: str) -> Draft202012Validator:
    """A validator for one component schema of the document."""
    return Draft202012Validator(openapi_to_jsonschema(_DEFS[name], _DEFS))


@dataclass(frozen=True)
class BatchKnobs:
    api_key: str | None = None  # required Bearer key of every /v1 route
    chat_url: str | None = None  # where lines are run; None: the fake tagging model answers
    chat_api_key: str | None = None  # the key sent to chat_url
    polls: int = 1  # GETs that see a batch in progress before it finishes
    expire_after: int | None = None  # lines run before the batch expires; None: all

    def updated(self, changes: dict[str, Any]) -> BatchKnobs:
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(f"unknown knob(s) {sorted(unknown)}")
        return replace(self, **changes)


def _error(status: int, message: str, param: str | None = None, code: str | None = None) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}
    return web.json_response(body, status=status)


def _public(batch: dict[str, Any]) -> web.Response:
    """A Batch object as OpenAI sends it: fields not set yet are left out (the document types none as null)."""
    return web.json_response({k: v for k, v in batch.items() if v is not None})


def _fake_answer(line: dict[str, Any]) -> tuple[int, Any]:
    """A chat completion of the fake model for one request body (no chat server)."""
    body = line.get("body") or {}
    content = body["messages"][-1]["content"]
    rf = body.get("response_format") or {}
    schema = (rf.get("json_schema") or {}).get("schema") or rf.get("schema") or rf.get("value")
    text, _ = model.render(model.extract_query(content), schema, None)
    message = {"role": "assistant", "content": text}
    usage = {"prompt_tokens": model.count_tokens(content), "completion_tokens": model.count_tokens(text)}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    return 200, {"id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": body.get("model"),
                 "choices": [{"index": 0, "message": message, "finish_reason": "stop"}], "usage": usage}  # fmt: skip


class BatchServer:
    def __init__(self, knobs: BatchKnobs) -> None:
        self.initial = self.knobs = knobs
        self.files: dict[str, dict[str, Any]] = {}
        self.contents: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.polled: dict[str, int] = {}
        self.routes: dict[str, int] = {}
        self.lines_run = 0
        self._ids = itertools.count(1)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.guard], client_max_size=MAX_BYTES + (1 << 20))
        app.router.add_post("/v1/files", self.create_file)
        app.router.add_get("/v1/files/{file_id}", self.retrieve_file)
        app.router.add_get("/v1/files/{file_id}/content", self.file_content)
        app.router.add_post("/v1/batches", self.create_batch)
        app.router.add_get("/v1/batches", self.list_batches)
        app.router.add_get("/v1/batches/{batch_id}", self.retrieve_batch)
        app.router.add_post("/v1/batches/{batch_id}/cancel", self.cancel_batch)
        app.router.add_get("/_control/knobs", self.control_knobs)
        app.router.add_post("/_control/knobs", self.control_knobs)
        app.router.add_get("/_control/stats", self.control_stats)
        app.router.add_post("/_control/reset", self.control_reset)
        return app

    @web.middleware
    async def guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith("/_control/"):
            return await handler(request)
        route = request.match_info.route.resource.canonical if request.match_info.route.resource else request.path
        name = f"{request.method} {route}"
        self.routes[name] = self.routes.get(name, 0) + 1
        key = self.knobs.api_key
        if key is not None and request.headers.get("Authorization") != f"Bearer {key}":
            return _error(401, "Incorrect API key provided.", code="invalid_api_key")
        return await handler(request)

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}-{hashlib.sha256(str(next(self._ids)).encode()).hexdigest()[:20]}"

    def _store(self, data: bytes, filename: str, purpose: str) -> dict[str, Any]:
        file_id = self._new_id("file")
        now = int(time.time())
        self.files[file_id] = {"id": file_id, "object": "file", "bytes": len(data), "created_at": now,
                               "expires_at": now + 30 * 86400, "filename": filename, "purpose": purpose,
                               "status": "processed"}  # fmt: skip
        self.contents[file_id] = data
        return self.files[file_id]

    # -- files ------------------------------------------------------------------------------

    async def create_file(self, request: web.Request) -> web.Response:
        if not request.content_type.startswith("multipart/"):
            return _error(400, "Expected a multipart/form-data body with 'file' and 'purpose'.")
        form = await request.post()
        upload, purpose = form.get("file"), form.get("purpose")
        allowed = _DEFS["CreateFileRequest"]["properties"]["purpose"]["enum"]
        if purpose not in allowed:
            return _error(400, f"'{purpose}' is not one of {allowed} - 'purpose'", param="purpose")
        if not hasattr(upload, "file"):
            return _error(400, "Missing required parameter: 'file'.", param="file")
        return web.json_response(self._store(upload.file.read(), upload.filename, str(purpose)))  # type: ignore[union-attr]

    async def retrieve_file(self, request: web.Request) -> web.Response:
        found = self.files.get(request.match_info["file_id"])
        return web.json_response(found) if found else _error(404, "No such File object.", param="id")

    async def file_content(self, request: web.Request) -> web.Response:
        data = self.contents.get(request.match_info["file_id"])
        if data is None:
            return _error(404, "No such File object.", param="id")
        return web.Response(body=data, content_type="application/octet-stream")

    # -- batches ----------------------------------------------------------------------------

    async def create_batch(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "We could not parse the JSON body of your request.")
        problem = next(iter(spec_validator("CreateBatchRequest").iter_errors(body)), None)
        if problem is not None:
            where = ".".join(str(p) for p in problem.absolute_path) or None
            return _error(400, f"Invalid request: {problem.message}", param=where)
        source = self.files.get(body["input_file_id"])
        if source is None:
            return _error(400, f"Invalid 'input_file_id': '{body['input_file_id']}'.", param="input_file_id")
        if source["purpose"] != "batch":
            return _error(400, "The input file must be uploaded with purpose 'batch'.", param="input_file_id")
        batch_id, now = self._new_id("batch"), int(time.time())
        batch = {"id": batch_id, "object": "batch", "endpoint": body["endpoint"], "errors": None,
                 "input_file_id": source["id"], "completion_window": body["completion_window"],
                 "status": "validating", "output_file_id": None, "error_file_id": None, "created_at": now,
                 "expires_at": now + 86400, "request_counts": {"total": 0, "completed": 0, "failed": 0},
                 "metadata": body.get("metadata")}  # fmt: skip
        lines, errors = self._read_lines(self.contents[source["id"]], body["endpoint"])
        if errors:
            batch.update(status="failed", failed_at=now, errors={"object": "list", "data": errors})
        else:
            batch["request_counts"]["total"] = len(lines)
        self.batches[batch_id] = batch
        return _public(batch)

    def _read_lines(self, data: bytes, endpoint: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        if len(data) > MAX_BYTES:
            return [], [{"code": "file_too_large", "message": "The input file exceeds 200 MB.", "line": None}]
        lines, errors, seen = [], [], set()
        for number, text in enumerate(data.decode("utf-8", "replace").splitlines(), start=1):
            if not text.strip():
                continue
            try:
                line = json.loads(text)
            except ValueError:
                errors.append({"code": "invalid_json_line", "message": "This line is not valid JSON.", "line": number})
                continue
            if not isinstance(line, dict) or not isinstance(line.get("custom_id"), str):
                errors.append({"code": "missing_required_parameter", "message": "Missing custom_id.", "line": number})
            elif line["custom_id"] in seen:
                errors.append(
                    {"code": "duplicate_custom_id", "message": "The custom_id is not unique.", "line": number}
                )
            elif line.get("method") != "POST" or line.get("url") != endpoint:
                errors.append(
                    {"code": "mismatched_endpoint", "message": f"The url must be {endpoint}.", "line": number}
                )
            else:
                seen.add(line["custom_id"])
                lines.append(line)
        if len(lines) > MAX_LINES:
            errors.append({"code": "too_many_requests", "message": "More than 50,000 requests.", "line": None})
        return lines, errors

    async def list_batches(self, request: web.Request) -> web.Response:
        data = [{k: v for k, v in b.items() if v is not None} for b in self.batches.values()]
        return web.json_response({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                                  "last_id": data[-1]["id"] if data else None, "has_more": False})  # fmt: skip

    async def retrieve_batch(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["batch_id"])
        if batch is None:
            return _error(404, "No such Batch object.", param="batch_id")
        if batch["status"] == "validating":
            batch.update(status="in_progress", in_progress_at=int(time.time()))
        elif batch["status"] == "in_progress":
            self.polled[batch["id"]] = self.polled.get(batch["id"], 0) + 1
            if self.polled[batch["id"]] >= self.knobs.polls:
                await self._finish(batch)
        return _public(batch)

    async def _finish(self, batch: dict[str, Any]) -> None:
        lines, _ = self._read_lines(self.contents[batch["input_file_id"]], batch["endpoint"])
        knobs = self.knobs
        if knobs.chat_url is not None:
            outputs, errors = await asyncio.to_thread(
                run_lines, lines, knobs.chat_url, done=knobs.expire_after, api_key=knobs.chat_api_key
            )
        else:
            answered = lines if knobs.expire_after is None else lines[: knobs.expire_after]
            outputs = [result_line(line["custom_id"], *_fake_answer(line)) for line in answered]
            errors = run_lines(lines[len(answered) :], "", done=0)[1]  # batch_expired lines, nothing sent
        self.lines_run += min(len(lines), knobs.expire_after if knobs.expire_after is not None else len(lines))
        now = int(time.time())
        for kind, found in (("output_file_id", outputs), ("error_file_id", errors)):
            if found:
                data = "".join(json.dumps(line) + "\n" for line in found).encode()
                batch[kind] = self._store(data, f"{batch['id']}_{kind[:-8]}.jsonl", "batch_output")["id"]
        expired = knobs.expire_after is not None and knobs.expire_after < len(lines)
        counts = {"total": len(lines), "completed": len(outputs), "failed": len(errors)}
        batch.update(request_counts=counts, finalizing_at=now, status="expired" if expired else "completed")
        batch["expired_at" if expired else "completed_at"] = now

    async def cancel_batch(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["batch_id"])
        if batch is None:
            return _error(404, "No such Batch object.", param="batch_id")
        if batch["status"] in ("validating", "in_progress"):
            batch.update(status="cancelled", cancelling_at=int(time.time()), cancelled_at=int(time.time()))
        return _public(batch)

    # -- control ----------------------------------------------------------------------------

    async def control_knobs(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            try:
                self.knobs = self.knobs.updated(await request.json())
            except (ValueError, TypeError) as error:
                return web.json_response({"error": str(error)}, status=400)
        return web.json_response(asdict(self.knobs))

    async def control_stats(self, request: web.Request) -> web.Response:
        return web.json_response({"routes": self.routes, "files": len(self.files), "batches": len(self.batches),
                                  "lines_run": self.lines_run})  # fmt: skip

    async def control_reset(self, request: web.Request) -> web.Response:
        self.routes, self.lines_run = {}, 0
        if request.query.get("knobs"):
            self.knobs = self.initial
        return web.json_response({})


def start_batch_server(*, timeout: float = 30.0, **knobs: Any) -> TGIServerHandle:
    """Start the emulator in its own process; a handle (``url``, ``stats()``, ``set_knobs()``).

    Raises:
        ValueError: A knob is unknown.
        RuntimeError: It did not start.
    """
    BatchKnobs(**knobs)  # fail here, in the caller, on a bad knob
    args = ["--knobs", json.dumps(knobs)]
    return spawn_server("tests.servers.openai_batch_server", args, timeout=timeout, name="Batch API emulator")


async def _serve(host: str, port: int, knobs: BatchKnobs, exit_with_stdin: bool) -> None:
    await serve_until_stopped(BatchServer(knobs).app(), host, port, exit_with_stdin)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.servers.openai_batch_server", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on the READY line)")
    parser.add_argument("--knobs", type=json.loads, default={}, help="knobs as one JSON object")
    parser.add_argument("--exit-with-stdin", action="store_true", help="stop when stdin reaches EOF")
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.host, args.port, BatchKnobs(**args.knobs), args.exit_with_stdin))


if __name__ == "__main__":
    main()
