"""``instag batch submit / status / download`` against the loopback Batch-API emulator
(``tests/servers/openai_batch_server.py``), which runs each line through the loopback chat server."""

from __future__ import annotations

import json

import pytest

from instag_hf import Tagger, pipeline
from instag_hf.batching import collect_batch, prepare_batch
from instag_hf.batching.api import batch_status, download_results, submit_batches
from instag_hf.batching.state import BatchState, state_path
from instag_hf.errors import AuthenticationError, ConfigurationError
from tests.batching.test_batch_files import MODEL, offline, pool
from tests.servers._batch_lines import read_jsonl
from tests.servers.openai_batch_server import start_batch_server
from tests.test_cli import assert_ok, assert_one_line_error, invoke, make_rows, write_jsonl

pytestmark = pytest.mark.timeout(300)

KEY = "sk-batch-test-key"


@pytest.fixture(scope="module")
def batch_api():
    with start_batch_server(api_key=KEY, polls=2) as server:
        yield server


@pytest.fixture
def api(batch_api, openai_server, monkeypatch):
    """The emulator, running lines through the loopback chat server; the key in INSTAG_API_KEY."""
    chat = openai_server()
    batch_api.reset(knobs=True)
    batch_api.set_knobs(chat_url=chat.url)
    monkeypatch.setenv("INSTAG_API_KEY", KEY)
    batch_api.chat = chat
    return batch_api


def test_submit_status_download_collect_and_tag_sends_nothing(api, tmp_path):
    rows = write_jsonl(tmp_path / "pool.jsonl", make_rows(6, seed=2))
    requests = tmp_path / "requests.jsonl"
    common = ("--model", MODEL, "--server", "vllm", "--cache-dir", tmp_path / "cache")
    assert_ok(invoke("batch", "prepare", rows, *common, "-o", requests))
    result = invoke("batch", "submit", requests, "--endpoint", api.url + "/v1")
    assert_ok(result)
    assert "requests-00000.jsonl: batch batch-" in result.output and "validating" in result.output
    saved = json.loads(state_path(requests).read_text())
    assert saved["endpoint"] == api.url and saved["jobs"][0]["batch_id"].startswith("batch-")
    assert KEY not in state_path(requests).read_text()
    for expected in ("in_progress (0 of 6 done, 0 failed)", "in_progress", "completed (6 of 6 done, 0 failed)"):
        result = invoke("batch", "status", requests)  # the state file knows the endpoint
        assert_ok(result)
        assert expected in result.output
    assert_ok(invoke("batch", "status", requests))  # finished: asked no more
    assert api.stats()["routes"]["GET /v1/batches/{batch_id}"] == 3
    result = invoke("batch", "download", requests)
    assert_ok(result)
    outputs = sorted(tmp_path.glob("requests-00000.batch-*.output.jsonl"))
    assert len(outputs) == 1 and str(outputs[0]) in result.output and len(read_jsonl(outputs[0])) == 6
    assert_ok(invoke("batch", "download", requests))
    assert api.stats()["routes"]["GET /v1/files/{file_id}/content"] == 1  # not fetched twice
    result = invoke("batch", "collect", rows, *common, "--results", outputs[0], "-o", tmp_path / "tagged")
    assert_ok(result)
    assert "6 answers written to the request cache" in result.output
    api.chat.reset()
    result = invoke("tag", rows, "--endpoint", api.chat.url, "--cache-dir", tmp_path / "cache", "-o", tmp_path / "t2")
    assert_ok(result)
    assert api.chat.stats()["requests"] == 0 and "0 requests, 6 answers from cache" in result.output


def test_submit_again_resumes_from_the_state_file(api, request_cache_dir, tmp_path):
    requests = tmp_path / "requests.jsonl"
    prepare_batch(pool(), offline(request_cache_dir), requests, max_lines=4)  # 2 files
    state = BatchState.load(requests)
    state.endpoint = api.url
    interrupted = state.job_for(tmp_path / "requests-00000.jsonl")
    interrupted.input_file_id = "file-uploaded-before"  # uploaded, then the session ended
    state.save()
    api_files_before = api.stats()["files"]
    with pytest.raises(Exception, match="Invalid 'input_file_id'"):
        submit_batches(requests)  # the emulator never saw that upload: the API's own error
    state = BatchState.load(requests)
    state.jobs[0].input_file_id = None
    state.save()
    first = submit_batches(requests)
    assert [job.file for job in first.jobs] == ["requests-00000.jsonl", "requests-00001.jsonl"]
    assert api.stats()["files"] == api_files_before + 2
    again = submit_batches(requests)  # nothing new: no upload, no batch
    assert api.stats()["routes"]["POST /v1/files"] == 2 and api.stats()["routes"]["POST /v1/batches"] == 3
    assert [job.batch_id for job in again.jobs] == [job.batch_id for job in first.jobs]
    with pytest.raises(Exception, match="records batches at"):
        submit_batches(requests, endpoint="http://127.0.0.1:9")


def test_an_expired_batch_is_collected_in_part_and_its_rest_prepared_and_submitted_again(
    api, request_cache_dir, tmp_path
):
    ds, requests = pool(), tmp_path / "requests.jsonl"
    api.set_knobs(expire_after=5, polls=1)
    prepare_batch(ds, offline(request_cache_dir), requests)
    submit_batches(requests, endpoint=api.url)
    batch_status(requests)  # validating -> in_progress
    state, files = download_results(requests)  # in_progress -> expired, with 5 of 8 lines done
    job = state.jobs[0]
    assert job.status == "expired" and job.request_counts == {"total": 8, "completed": 5, "failed": 3}
    assert sorted(f.name.rsplit(".", 2)[-2] for f in files) == ["errors", "output"]
    tagged, report = collect_batch(ds, offline(request_cache_dir), files)
    assert (report.answered, report.failed) == (5, 3)
    expired = [e for e in tagged["instag_error"] if e]
    assert len(expired) == 3 and all("batch_expired" in e for e in expired)
    api.set_knobs(expire_after=None)
    rest = prepare_batch(ds, offline(request_cache_dir), requests)
    assert rest.requests == 3
    state = submit_batches(requests)
    assert len(state.jobs) == 2  # the new file is a new batch; the first one's record stays
    batch_status(requests)
    state, files = download_results(requests)
    assert state.jobs[1].status == "completed" and len(files) == 3
    tagged, report = collect_batch(ds, offline(request_cache_dir), files)
    assert report.missing == 0 and not any(tagged["instag_error"])
    online = pipeline.tag_dataset(ds, Tagger(api.chat.url, cache=tmp_path / "elsewhere", progress=False))
    assert tagged["instag_raw_tags"] == online["instag_raw_tags"]


def test_a_refused_key_and_a_missing_endpoint_say_what_to_do(api, request_cache_dir, tmp_path, monkeypatch):
    requests = tmp_path / "requests.jsonl"
    prepare_batch(pool(2), offline(request_cache_dir), requests)
    monkeypatch.setenv("INSTAG_API_KEY", "sk-wrong")
    with pytest.raises(AuthenticationError, match=r"refused /v1/files with HTTP 401.*\$INSTAG_API_KEY"):
        submit_batches(requests, endpoint=api.url)
    monkeypatch.setenv("OTHER_KEY", KEY)
    assert submit_batches(requests, endpoint=api.url, api_key_env="OTHER_KEY").jobs[0].batch_id
    with pytest.raises(ConfigurationError, match="No Batch API endpoint: pass --endpoint"):
        submit_batches(tmp_path / "other.jsonl")
    assert_one_line_error(invoke("batch", "submit", tmp_path / "none.jsonl", "--endpoint", api.url), "prepare` first")
