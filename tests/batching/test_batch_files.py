"""``instag batch prepare`` / ``collect``: OpenAI Batch files in, the tagged dataset and the
request cache out, and every way a results file can be wrong.

Results files are made by answering each request line through the loopback chat server
(``tests/servers/_batch_lines``), as a Batch API would.
"""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

from instag_hf import Tagger, pipeline
from instag_hf.batching import collect_batch, prepare_batch
from instag_hf.batching.cached_tags import NO_RESULT
from instag_hf.batching.target import parse_custom_id
from instag_hf.errors import BatchError, ConfigurationError
from tests.servers._batch_lines import read_jsonl, result_line, run_lines, write_jsonl
from tests.servers._openai_protocol import spec_validator
from tests.test_cli import assert_ok, assert_one_line_error, invoke, make_rows
from tests.test_cli import write_jsonl as write_rows

pytestmark = pytest.mark.timeout(300)

MODEL = "instag-fake/tgi-tagger"  # what the loopback server serves by default


def offline(cache: Path, **options) -> Tagger:
    """The tagger a batch is prepared with: no endpoint, the model and server kind named."""
    return Tagger(model=MODEL, server="vllm", cache=cache, progress=False, **options)


def pool(n: int = 8, seed: int = 1) -> datasets.Dataset:
    rows = make_rows(n, seed=seed)
    rows.append(dict(rows[0], id="dup"))  # a query asked twice: one request, both rows tagged
    return datasets.Dataset.from_list(rows)


def run(files, server, tmp_path: Path, name: str = "output.jsonl", **options) -> tuple[Path, Path]:
    lines = [line for f in files for line in read_jsonl(f)]
    outputs, errors = run_lines(lines, server.url, **options)
    return write_jsonl(tmp_path / name, outputs), write_jsonl(tmp_path / f"errors-{name}", errors)


@pytest.fixture
def server(openai_server):
    return openai_server()


def test_prepare_writes_one_valid_line_per_missing_query(request_cache_dir, tmp_path):
    ds = pool()
    prepared = prepare_batch(ds, offline(request_cache_dir), tmp_path / "requests.jsonl")
    assert [f.name for f in prepared.files] == ["requests-00000.jsonl"]
    lines = read_jsonl(prepared.files[0])
    assert len(lines) == prepared.requests == 8 == prepared.plan.distinct  # the duplicate row asks once
    validator = spec_validator("CreateChatCompletionRequest")
    for row, line in enumerate(lines):
        assert set(line) == {"custom_id", "method", "url", "body"}
        assert (line["method"], line["url"]) == ("POST", "/v1/chat/completions")
        validator.validate(line["body"])
        body = line["body"]
        assert body["model"] == MODEL and body["temperature"] == 0.0 and body["max_tokens"] == 512
        assert body["response_format"]["type"] == "json_schema"
        assert ds[row]["prompt"] in body["messages"][0]["content"]
        assert parse_custom_id(line["custom_id"]).row == row
    assert len({line["custom_id"] for line in lines}) == 8
    assert "wrote 8 requests for instag-fake/tgi-tagger (server kind vllm) in 1 file" in prepared.describe()


def test_the_dialect_and_the_answer_form_shape_the_lines(request_cache_dir, tmp_path):
    tagger = Tagger(model="m", server="llamacpp", answer="tags", max_new_tokens=64, cache=request_cache_dir)
    files = prepare_batch(pool(3), tagger, tmp_path / "r.jsonl").files
    body = read_jsonl(files[0])[0]["body"]
    assert body["response_format"]["type"] == "json_object" and body["max_tokens"] == 64
    assert body["response_format"]["schema"]["properties"]["tags"]["items"] == {"type": "string"}
    assert "JSON format: [str]." in body["messages"][0]["content"]
    with pytest.raises(ConfigurationError, match="A batch file names its model: give --model"):
        prepare_batch(pool(3), Tagger(cache=request_cache_dir), tmp_path / "r.jsonl")
    with pytest.raises(ConfigurationError, match="raw prompt for TGI"):
        prepare_batch(pool(3), Tagger(model="m", server="tgi", template="instagger"), tmp_path / "r.jsonl")


def test_files_are_split_by_lines_and_bytes_and_stale_parts_go(request_cache_dir, tmp_path):
    ds, tagger, out = pool(), offline(request_cache_dir), tmp_path / "requests.jsonl"
    assert len(prepare_batch(ds, tagger, out, max_lines=3).files) == 3  # 3 + 3 + 2
    sizes = [len(read_jsonl(f)) for f in sorted(tmp_path.glob("requests-*.jsonl"))]
    assert sizes == [3, 3, 2]
    one_each = prepare_batch(ds, tagger, out, max_bytes=10)  # a line larger than the limit still goes alone
    assert len(one_each.files) == 8
    again = prepare_batch(ds, tagger, out)
    assert sorted(tmp_path.glob("requests-*.jsonl")) == list(again.files) and len(again.files) == 1


def test_collect_tags_as_instag_tag_would_and_tag_then_sends_nothing(server, request_cache_dir, tmp_path):
    ds = pool()
    files = prepare_batch(ds, offline(request_cache_dir), tmp_path / "requests.jsonl").files
    output, errors = run(files, server, tmp_path)
    tagged, report = collect_batch(ds, offline(request_cache_dir), [output, errors])
    assert (report.lines, report.answered, report.failed, report.missing) == (8, 8, 0, 0)
    assert report.rows == 9 and report.rows_with_error == 0
    online = pipeline.tag_dataset(ds, Tagger(server.url, cache=tmp_path / "elsewhere", progress=False))
    assert tagged.features == online.features and tagged.column_names == online.column_names
    assert tagged["instag_raw_tags"] == online["instag_raw_tags"]
    assert tagged["instag_error"] == online["instag_error"]
    assert "answer form paper" in tagged.info.description and MODEL in tagged.info.description
    server.reset()
    again = Tagger(server.url, cache=request_cache_dir, progress=False)
    retagged = pipeline.tag_dataset(ds, again)
    assert server.stats()["requests"] == 0 and again.stats.cache_hits == 8
    assert retagged["instag_raw_tags"] == tagged["instag_raw_tags"]
    assert prepare_batch(ds, offline(request_cache_dir), tmp_path / "requests.jsonl").files == ()


def test_a_missing_line_leaves_its_rows_untagged_and_prepare_writes_only_it(server, request_cache_dir, tmp_path):
    ds = pool()
    files = prepare_batch(ds, offline(request_cache_dir), tmp_path / "requests.jsonl").files
    output, _ = run(files, server, tmp_path)
    lines = read_jsonl(output)
    write_jsonl(output, lines[1:])  # the answer of row 0 (and of the "dup" row that asks the same) is lost
    tagged, report = collect_batch(ds, offline(request_cache_dir), [output])
    assert report.missing == 1 and report.answered == 7 and report.rows_with_error == 2
    assert tagged["instag_error"][0] == tagged["instag_error"][8] == NO_RESULT
    assert tagged["instag_raw_tags"][0] == [] and all(tagged["instag_raw_tags"][1:8])
    assert "1 of 8 distinct queries have no answer (run `instag batch prepare` again" in report.describe()
    again = prepare_batch(ds, offline(request_cache_dir), tmp_path / "requests.jsonl")
    assert again.plan.cached == 7 and [line["custom_id"] for line in read_jsonl(again.files[0])] == [
        lines[0]["custom_id"]
    ]


def test_duplicates_are_kept_once_and_different_answers_to_one_request_are_refused(server, request_cache_dir, tmp_path):
    ds = pool()
    files = prepare_batch(ds, offline(request_cache_dir), tmp_path / "requests.jsonl").files
    output, errors = run(files, server, tmp_path)
    _, report = collect_batch(ds, offline(request_cache_dir), [output, output])  # the same file twice
    assert report.duplicates == 8 and report.answered == 8
    lines = read_jsonl(output)
    changed = json.loads(json.dumps(lines[2]))
    changed["response"]["body"]["choices"][0]["message"]["content"] = '{"tags": [{"tag": "other", "explanation": ""}]}'
    conflicting = write_jsonl(tmp_path / "other-run.jsonl", [changed])
    with pytest.raises(BatchError, match=r"answered twice with different answers: .*output.jsonl:3 and .*other-run"):
        collect_batch(ds, offline(request_cache_dir), [output, conflicting])
    # An answer beats an error for the same request, in either order.
    failed = write_jsonl(tmp_path / "failed.jsonl", [result_line(lines[2]["custom_id"], 500, {"error": {}})])
    _, report = collect_batch(ds, offline(request_cache_dir), [failed, output])
    assert report.failed == 0 and report.answered == 8


def test_lines_of_other_settings_or_another_dataset_are_refused_and_nothing_is_written(
    server, request_cache_dir, tmp_path
):
    ds = pool()
    other = prepare_batch(ds, offline(tmp_path / "c2", max_new_tokens=64), tmp_path / "short.jsonl").files
    short, _ = run(other, server, tmp_path, "short-out.jsonl")
    with pytest.raises(BatchError, match=r"8 line\(s\) were prepared with other settings .*short-out.jsonl:1"):
        collect_batch(ds, offline(request_cache_dir), [short])
    elsewhere = prepare_batch(pool(seed=9), offline(tmp_path / "c3"), tmp_path / "else.jsonl").files
    foreign, _ = run(elsewhere, server, tmp_path, "else-out.jsonl")
    with pytest.raises(
        BatchError, match=r"ask queries this dataset does not hold: .*else-out.jsonl:1 \(row 0, turn 0\)"
    ):
        collect_batch(ds, offline(request_cache_dir), [foreign])
    stranger = write_jsonl(tmp_path / "stranger.jsonl", [result_line("request-1", 200, {})])
    with pytest.raises(BatchError, match="custom_id `instag batch prepare` did not write"):
        collect_batch(ds, offline(request_cache_dir), [stranger])
    assert prepare_batch(ds, offline(request_cache_dir), tmp_path / "requests.jsonl").plan.cached == 0


def test_failed_expired_and_cut_off_lines_become_row_errors_and_are_prepared_again(server, request_cache_dir, tmp_path):
    ds = pool()
    files = prepare_batch(ds, offline(request_cache_dir), tmp_path / "requests.jsonl").files
    requests = read_jsonl(files[0])
    output, errors = run(files, server, tmp_path, done=6)  # the batch expired after 6 of 8 lines
    assert [line["error"]["code"] for line in read_jsonl(errors)] == ["batch_expired"] * 2
    lines = read_jsonl(output)
    lines[1] = result_line(lines[1]["custom_id"], 400, {"error": {"message": "max_tokens is too large", "type": "x"}})
    text = "".join(json.dumps(line) + "\n" for line in lines)
    output.write_text(text[: text.rindex("{") + 60], encoding="utf-8")  # the file was cut off mid-line
    tagged, report = collect_batch(ds, offline(request_cache_dir), [output, errors])
    assert (report.answered, report.failed, report.unreadable) == (4, 3, 1)
    problems = tagged["instag_error"]
    assert problems[1] == "batch request failed (HTTP 400: max_tokens is too large)"
    assert problems[5].startswith("its batch result line ") and "output.jsonl:6 is not valid JSON" in problems[5]
    assert problems[6] == problems[7] == "batch request failed (batch_expired This request could not be executed " \
        "before the completion window expired.)"  # fmt: skip
    assert "output.jsonl:6 is not a JSON result line" in report.describe()
    again = prepare_batch(ds, offline(request_cache_dir), tmp_path / "requests.jsonl")
    assert {line["custom_id"] for line in read_jsonl(again.files[0])} == {
        requests[i]["custom_id"] for i in (1, 5, 6, 7)
    }


def test_the_cli_prepares_and_collects(server, tmp_path):
    rows = write_rows(tmp_path / "pool.jsonl", make_rows(6, seed=4))
    common = ("--model", MODEL, "--server", "vllm", "--cache-dir", tmp_path / "cache")
    result = invoke("batch", "prepare", rows, *common, "-o", tmp_path / "requests.jsonl")
    assert_ok(result)
    assert (
        "Batch requests: 6 rows, 6 user queries (6 distinct); 0 answered by the request cache; wrote 6" in result.output
    )
    half = tmp_path / "half.jsonl"
    write_jsonl(half, read_jsonl(tmp_path / "requests-00000.jsonl")[:3])
    first, _ = run([half], server, tmp_path, "first.jsonl")
    rest = tmp_path / "rest.jsonl"
    write_jsonl(rest, read_jsonl(tmp_path / "requests-00000.jsonl")[3:])
    second, _ = run([rest], server, tmp_path, "second.jsonl")
    result = invoke("batch", "collect", rows, *common, "--results", first, second, "-o", tmp_path / "tagged.jsonl")
    assert_ok(result)
    assert "Collected 6 result lines: 6 answers written to the request cache" in result.output
    tagged = datasets.load_dataset("json", data_files=str(tmp_path / "tagged.jsonl"), split="train")
    assert all(tagged["instag_raw_tags"]) and not any(tagged["instag_error"])
    assert_one_line_error(
        invoke("batch", "collect", rows, "--model", MODEL, "--no-cache", "--results", first, "-o", tmp_path / "x"),
        "turn the cache on",
    )
