"""The Batch-API emulator answers as its OpenAPI document says (the tests of instag batch rely on it)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid

import pytest

from tests.servers._batch_lines import EXPIRED_MESSAGE
from tests.servers.openai_batch_server import spec_validator, start_batch_server

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def api():
    with start_batch_server(api_key="k", polls=1) as server:
        yield server


def call(api, method: str, path: str, body: bytes | None = None, content_type: str = "application/json",
         key: str = "k") -> tuple[int, bytes]:  # fmt: skip
    request = urllib.request.Request(api.url + path, data=body, method=method)
    request.add_header("Authorization", f"Bearer {key}")
    if body is not None:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def upload(api, text: str, purpose: str = "batch") -> tuple[int, dict]:
    boundary = uuid.uuid4().hex
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n{purpose}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="r.jsonl"\r\n'
        f"Content-Type: application/jsonl\r\n\r\n{text}\r\n--{boundary}--\r\n"
    ).encode()
    status, raw = call(api, "POST", "/v1/files", body, f"multipart/form-data; boundary={boundary}")
    return status, json.loads(raw)


def line(custom_id: str, query: str) -> str:
    body = {"model": "m", "messages": [{"role": "user", "content": f"[begin]\n{query}\n[end]"}]}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body})


def create(api, file_id: str, **extra) -> tuple[int, dict]:
    body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h", **extra}
    status, raw = call(api, "POST", "/v1/batches", json.dumps(body).encode())
    return status, json.loads(raw)


def test_a_batch_runs_and_every_object_follows_the_document(api):
    api.reset(knobs=True)
    status, file = upload(api, "\n".join(line(f"r{i}", f"write code {i}") for i in range(3)))
    assert status == 200
    spec_validator("OpenAIFile").validate(file)
    status, batch = create(api, file["id"], metadata={"who": "test"})
    assert status == 200 and batch["status"] == "validating"
    spec_validator("Batch").validate(batch)
    seen = [json.loads(call(api, "GET", f"/v1/batches/{batch['id']}")[1]) for _ in range(3)]
    assert [b["status"] for b in seen] == ["in_progress", "completed", "completed"]
    for b in seen:
        spec_validator("Batch").validate(b)
    done = seen[-1]
    assert done["request_counts"] == {"total": 3, "completed": 3, "failed": 0} and "error_file_id" not in done
    status, raw = call(api, "GET", f"/v1/files/{done['output_file_id']}/content")
    results = [json.loads(x) for x in raw.decode().splitlines()]
    assert [r["custom_id"] for r in results] == ["r0", "r1", "r2"]
    assert all(r["response"]["status_code"] == 200 and r["error"] is None for r in results)
    assert json.loads(results[0]["response"]["body"]["choices"][0]["message"]["content"])  # the fake model's tags
    spec_validator("OpenAIFile").validate(json.loads(call(api, "GET", f"/v1/files/{done['output_file_id']}")[1]))


def test_bad_requests_get_openais_errors(api):
    api.reset(knobs=True)
    assert upload(api, line("a", "x"), purpose="training")[0] == 400
    file_id = upload(api, line("a", "x"))[1]["id"]
    status, error = create(api, file_id, completion_window="1h")
    assert status == 400 and error["error"]["type"] == "invalid_request_error"
    assert call(api, "GET", "/v1/batches", key="wrong")[0] == 401
    dup = upload(api, line("a", "x") + "\n" + line("a", "y") + "\nnot json")[1]["id"]
    failed = create(api, dup)[1]
    assert failed["status"] == "failed"
    assert [e["code"] for e in failed["errors"]["data"]] == ["duplicate_custom_id", "invalid_json_line"]


def test_a_batch_expires_with_part_of_its_lines_done(api):
    api.reset(knobs=True)
    api.set_knobs(expire_after=1)
    file_id = upload(api, "\n".join(line(f"r{i}", f"q {i}") for i in range(3)))[1]["id"]
    batch_id = create(api, file_id)[1]["id"]
    call(api, "GET", f"/v1/batches/{batch_id}")
    batch = json.loads(call(api, "GET", f"/v1/batches/{batch_id}")[1])
    assert batch["status"] == "expired" and batch["request_counts"] == {"total": 3, "completed": 1, "failed": 2}
    errors = [json.loads(x) for x in call(api, "GET", f"/v1/files/{batch['error_file_id']}/content")[1].splitlines()]
    assert [e["custom_id"] for e in errors] == ["r1", "r2"]
    assert all(e["response"] is None and e["error"] == {"code": "batch_expired", "message": EXPIRED_MESSAGE}
               for e in errors)  # fmt: skip
