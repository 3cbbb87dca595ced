"""Running OpenAI Batch request lines, as the Batch API does: result lines out.

Shared by the Batch-API emulator (``openai_batch_server``) and tests that need results
files without it. A request line ``{custom_id, method, url, body}`` is answered by POSTing
its body to a chat server (the loopback protocol server, or a real vLLM); the result line is
``{id, custom_id, response: {status_code, request_id, body}, error}`` as OpenAI's
``BatchRequestOutput`` documents it. Requests that did not run before the window closed get
``{"response": null, "error": {"code": "batch_expired", ...}}`` in the error file.
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from typing import Any

EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."


def _id(prefix: str, text: str) -> str:
    return f"{prefix}_{hashlib.sha256(text.encode()).hexdigest()[:24]}"


def result_line(custom_id: str, status: int, body: Any) -> dict[str, Any]:
    """One line of an output (200) or error (other status) file."""
    return {
        "id": _id("batch_req", custom_id),
        "custom_id": custom_id,
        "response": {"status_code": status, "request_id": _id("req", custom_id), "body": body},
        "error": None,
    }


def expired_line(custom_id: str) -> dict[str, Any]:
    """The error-file line of a request the batch never ran."""
    return {
        "id": _id("batch_req", custom_id),
        "custom_id": custom_id,
        "response": None,
        "error": {"code": "batch_expired", "message": EXPIRED_MESSAGE},
    }


def post_chat(chat_url: str, path: str, body: Any, api_key: str | None = None) -> tuple[int, Any]:
    """(status, JSON body) of one request to the chat server at ``chat_url``."""
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(chat_url + path, data=json.dumps(body).encode(), headers=headers, method="POST")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        raw = error.read()
        try:
            return error.code, json.loads(raw)
        except ValueError:
            return error.code, {"error": {"message": raw.decode(errors="replace"), "type": "server_error"}}


def run_lines(
    lines: list[dict[str, Any]], chat_url: str, *, done: int | None = None, api_key: str | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(output lines, error lines) of running ``lines``; only the first ``done`` run when given
    (the rest expire)."""
    outputs, errors = [], []
    for index, line in enumerate(lines):
        if done is not None and index >= done:
            errors.append(expired_line(line["custom_id"]))
            continue
        status, body = post_chat(chat_url, line["url"], line["body"], api_key)
        (outputs if status == 200 else errors).append(result_line(line["custom_id"], status, body))
    return outputs, errors


def read_jsonl(path: Any) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def write_jsonl(path: Any, lines: list[dict[str, Any]]) -> Any:
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
    return path
