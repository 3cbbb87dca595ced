"""ds.map(instag_hf.tag, batched=True) against the TGI-protocol server and a real llama.cpp server."""

from __future__ import annotations

import json
import logging
import os
import pickle
import subprocess
import sys

import datasets
import pytest
from datasets.fingerprint import Hasher

import instag_hf
from instag_hf import Tagger
from instag_hf.errors import ConfigurationError, EndpointError, FormatError, NoEndpointError
from instag_hf.tagging.prompts import PAPER_TEMPLATE
from tests.conftest import REPO_ROOT

SHAREGPT = {
    "id": ["a", "b"],
    "conversations": [
        [
            {"from": "system", "value": "You are helpful."},
            {"from": "human", "value": "Write a python function that sorts a list"},
            {"from": "gpt", "value": "def f(x): return sorted(x)"},
            {"from": "human", "value": "Translate it to Rust please"},
        ],
        [{"from": "human", "value": "What is the derivative of x squared?"}, {"from": "gpt", "value": "2x"}],
    ],
}
MESSAGES = {
    "messages": [
        [{"role": "user", "content": "Summarize the plot of Hamlet"}, {"role": "assistant", "content": "..."}],
        [{"role": "system", "content": "Be brief"}, {"role": "user", "content": "Write a haiku about rain"}],
    ]
}
ALPACA = {
    "instruction": ["Correct the grammar of this sentence", "List three prime numbers"],
    "input": ["he go to school yesterday", ""],
    "output": ["He went to school yesterday.", "2, 3, 5"],
}
PROMPTS = {"prompt": ["Explain recursion to a child", "Write SQL to count users by country"]}
FORMATS = {"sharegpt": SHAREGPT, "messages": MESSAGES, "alpaca": ALPACA, "prompt": PROMPTS}
USER_TURNS = {"sharegpt": [2, 1], "messages": [1, 1], "alpaca": [1, 1], "prompt": [1, 1]}


def assert_tagged(ds: datasets.Dataset, turns_per_row: list[int]) -> None:
    assert ds.features["instag_raw_tags"] == datasets.List(
        {"turn": datasets.Value("int32"), "tag": datasets.Value("string"), "explanation": datasets.Value("string")}
    )
    assert ds.features["instag_error"] == datasets.Value("string")
    for row, turns in zip(ds, turns_per_row):
        assert row["instag_raw_tags"], row
        assert {t["turn"] for t in row["instag_raw_tags"]} <= set(range(turns))
        assert all(t["tag"].strip() for t in row["instag_raw_tags"])


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_each_format_against_tgi(tgi, request_cache_dir, fmt):
    ds = datasets.Dataset.from_dict(FORMATS[fmt])
    tagged = ds.map(Tagger(tgi.url, cache=request_cache_dir).atag, batched=True)
    assert_tagged(tagged, USER_TURNS[fmt])
    assert all(error is None for error in tagged["instag_error"])
    assert tagged.column_names[: len(ds.column_names)] == ds.column_names
    for column in ds.column_names:  # input columns untouched
        assert tagged[column] == ds[column]
    sent = tgi.stats()["queries"]
    assert len(sent) == sum(USER_TURNS[fmt])  # one request per user turn, none for others
    if fmt == "sharegpt":
        assert "You are helpful." not in sent and "def f(x): return sorted(x)" not in sent
        assert {t["turn"] for t in tagged[0]["instag_raw_tags"]} == {0, 1}
    if fmt == "alpaca":
        assert "Correct the grammar of this sentence\n\nhe go to school yesterday" in sent


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_each_format_against_llama_cpp(llama_server, request_cache_dir, fmt):
    ds = datasets.Dataset.from_dict(FORMATS[fmt])
    tagged = ds.map(Tagger(llama_server, cache=request_cache_dir, max_new_tokens=96).atag, batched=True)
    # A 135M model: structure, never content. Every row is tagged or says why not.
    assert len(tagged) == len(ds)
    for row in tagged:
        assert row["instag_raw_tags"] or row["instag_error"]
        assert all(isinstance(t["tag"], str) and t["tag"].strip() for t in row["instag_raw_tags"])


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_each_format_with_the_ready_made_tag_and_num_proc_2(tgi, monkeypatch, request_cache_dir, fmt):
    monkeypatch.setenv("INSTAG_ENDPOINT", tgi.url)
    monkeypatch.setenv("INSTAG_CACHE_DIR", str(request_cache_dir))
    tagged = datasets.Dataset.from_dict(FORMATS[fmt]).map(instag_hf.tag, batched=True, batch_size=1, num_proc=2)
    assert_tagged(tagged, USER_TURNS[fmt])
    assert all(error is None for error in tagged["instag_error"])


def test_ready_made_tag_with_num_proc_2_against_llama_cpp(llama_server, monkeypatch, request_cache_dir):
    monkeypatch.setenv("INSTAG_ENDPOINT", llama_server)
    monkeypatch.setenv("INSTAG_CACHE_DIR", str(request_cache_dir))
    ds = datasets.Dataset.from_dict(SHAREGPT)
    tagged = ds.map(instag_hf.tag, batched=True, batch_size=1, num_proc=2)
    assert tagged.num_rows == 2 and tagged["conversations"] == ds["conversations"]
    for row in tagged:
        assert row["instag_raw_tags"] or row["instag_error"]


def test_ready_made_tag_reads_the_endpoint_from_the_environment(tgi, monkeypatch):
    monkeypatch.setenv("INSTAG_ENDPOINT", tgi.url)
    tagged = datasets.Dataset.from_dict(PROMPTS).map(instag_hf.tag, batched=True)
    assert_tagged(tagged, [1, 1])


def test_synchronous_call_and_plain_dict_batches(tgi, request_cache_dir):
    tagger = Tagger(tgi.url, cache=request_cache_dir)
    tagged = datasets.Dataset.from_dict(PROMPTS).map(tagger, batched=True, batch_size=1)
    assert_tagged(tagged, [1, 1])
    out = tagger({"prompt": ["Explain recursion to a child"]})  # Ray Data's default batches
    assert out["prompt"] == ["Explain recursion to a child"] and out["instag_raw_tags"][0]


@pytest.mark.parametrize("server", ["tgi", "llama"])
def test_num_proc_2(server, tgi, llama_server, request_cache_dir):
    url = tgi.url if server == "tgi" else llama_server
    ds = datasets.Dataset.from_dict({"prompt": [f"Write a poem about the number {i}" for i in range(8)]})
    tagged = ds.map(Tagger(url, cache=request_cache_dir, max_new_tokens=64), batched=True, batch_size=2, num_proc=2)
    assert len(tagged) == 8 and tagged["prompt"] == ds["prompt"]
    for row in tagged:
        assert row["instag_raw_tags"] or row["instag_error"]
    if server == "tgi":
        assert all(error is None for error in tagged["instag_error"])
        assert len(tgi.stats()["queries"]) == 8


def test_second_identical_map_is_served_from_the_datasets_cache(tgi, tmp_path):
    # datasets only caches maps of datasets backed by files.
    datasets.Dataset.from_dict(PROMPTS).save_to_disk(tmp_path / "pool")
    ds = datasets.load_from_disk(tmp_path / "pool")
    # No request cache: only datasets' own cache can spare the second round of requests.
    first = ds.map(Tagger(tgi.url, cache=False).atag, batched=True)
    requests = tgi.stats()["requests"]
    second = ds.map(Tagger(tgi.url, cache=False).atag, batched=True)
    assert tgi.stats()["requests"] == requests == 2
    assert second._fingerprint == first._fingerprint
    assert second.to_dict() == first.to_dict()


FINGERPRINT_SCRIPT = """
import sys
from datasets.fingerprint import Hasher
from instag_hf import Tagger
t = Tagger(sys.argv[1], template="instagger", headers={"Authorization": "Bearer hf_supersecret"})
print(Hasher.hash(t.atag), Hasher.hash(t))
"""


def test_fingerprint_is_stable_across_processes_and_free_of_secrets(tgi):
    runs = {
        subprocess.run(
            [sys.executable, "-c", FINGERPRINT_SCRIPT, tgi.url],
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO_ROOT,
        ).stdout
        for _ in range(2)
    }
    assert len(runs) == 1
    with_secret = Tagger(tgi.url, template="instagger", headers={"Authorization": "Bearer hf_supersecret"})
    without = Tagger(tgi.url, template="instagger")
    assert runs.pop().split() == [Hasher.hash(with_secret.atag), Hasher.hash(with_secret)]
    assert Hasher.hash(with_secret) == Hasher.hash(without)
    assert b"hf_supersecret" not in pickle.dumps(with_secret)
    assert "hf_supersecret" not in repr(with_secret)


def test_headers_reach_the_server_but_not_the_logs(tgi, request_cache_dir, caplog):
    caplog.set_level(logging.DEBUG)
    tagger = Tagger(tgi.url, cache=request_cache_dir, headers={"Authorization": "Bearer hf_supersecret"})
    datasets.Dataset.from_dict(PROMPTS).map(tagger.atag, batched=True)
    assert "hf_supersecret" not in caplog.text


def test_default_template_is_the_papers_byte_exact(tgi, request_cache_dir):
    tagger = Tagger(tgi.url, cache=request_cache_dir)
    assert tagger.template.text == PAPER_TEMPLATE
    custom = Tagger(tgi.url, template="Tags for: {query}", cache=request_cache_dir)
    tagged = datasets.Dataset.from_dict(PROMPTS).map(custom.atag, batched=True)
    assert tagged.num_rows == 2  # the server extracts the whole message as the query
    instagger = Tagger(tgi.url, template="instagger", cache=request_cache_dir)
    tagged = datasets.Dataset.from_dict(PROMPTS).map(instagger.atag, batched=True)
    assert_tagged(tagged, [1, 1])
    assert tgi.stats()["routes"].get("/generate", 0) >= 2  # a raw template goes to /generate


# -- bad input ---------------------------------------------------------------------------


def test_bad_rows_get_a_per_row_error_and_no_request(tgi, request_cache_dir):
    ds = datasets.Dataset.from_dict(
        {
            "conversations": [
                [{"from": "human", "value": None}],
                [{"from": "human", "value": "   "}],
                [{"from": "gpt", "value": "only an answer"}],
                [],
                [{"from": "human", "value": "A fine question about chess"}, {"from": "human", "value": ""}],
            ]
        }
    )
    tagged = ds.map(Tagger(tgi.url, cache=request_cache_dir).atag, batched=True)
    errors = tagged["instag_error"]
    assert all(errors[:4]) and tagged["instag_raw_tags"][:4] == [[], [], [], []]
    assert "turn 1" in errors[4] and tagged[4]["instag_raw_tags"]
    assert list(tgi.stats()["queries"]) == ["A fine question about chess"]


def test_non_string_prompts_get_a_per_row_error(tgi, request_cache_dir):
    ds = datasets.Dataset.from_dict({"prompt": [1, 2]})
    tagged = ds.map(Tagger(tgi.url, cache=request_cache_dir).atag, batched=True)
    assert all("not a string" in e for e in tagged["instag_error"])
    assert tgi.stats()["requests"] == 0


def test_an_all_error_batch_and_an_empty_dataset_keep_the_schema(tgi, request_cache_dir):
    tagger = Tagger(tgi.url, cache=request_cache_dir)
    ds = datasets.Dataset.from_dict({"prompt": ["", None, "Tell me a joke about cats"]})
    tagged = ds.map(tagger.atag, batched=True, batch_size=2)  # first batch: errors only
    assert_tagged(tagged.select([2]), [1])
    empty = datasets.Dataset.from_dict({"prompt": []}, features=datasets.Features({"prompt": datasets.Value("string")}))
    assert empty.map(tagger, batched=True).num_rows == 0


def test_long_queries_are_truncated_or_refused_by_rule(tgi, request_cache_dir):
    long_query = "word " * 5000
    ds = datasets.Dataset.from_dict({"prompt": [long_query, "Short question about maps"]})
    tagged = ds.map(Tagger(tgi.url, cache=request_cache_dir).atag, batched=True)
    assert "truncated" in tagged[0]["instag_error"] and tagged[0]["instag_raw_tags"]
    assert tgi.stats()["statuses"].get("422", 0) == 0
    refused = ds.map(Tagger(tgi.url, cache=request_cache_dir, long_queries="error").atag, batched=True)
    assert "exceeds" in refused[0]["instag_error"] and refused[0]["instag_raw_tags"] == []


def test_no_endpoint_fails_at_once_with_the_fix(monkeypatch):
    monkeypatch.delenv("INSTAG_ENDPOINT", raising=False)
    with pytest.raises(NoEndpointError, match="INSTAG_ENDPOINT=http://host:port"):
        datasets.Dataset.from_dict(PROMPTS).map(instag_hf.tag, batched=True)


def test_unrecognised_columns_fail_before_any_request(tgi):
    with pytest.raises(FormatError, match=r"\['id', 'foo'\].*Tagger\(column="):
        datasets.Dataset.from_dict({"id": [1], "foo": ["x"]}).map(Tagger(tgi.url).atag, batched=True)
    assert tgi.stats()["requests"] == 0


def test_column_override(tgi, request_cache_dir):
    ds = datasets.Dataset.from_dict({"id": [1], "body": ["Plan a trip to Kyoto"]})
    tagged = ds.map(Tagger(tgi.url, column="body", cache=request_cache_dir).atag, batched=True)
    assert_tagged(tagged, [1])


def test_unreachable_endpoint_fails_fast():
    with pytest.raises(EndpointError, match="does not answer"):
        datasets.Dataset.from_dict(PROMPTS).map(Tagger("http://127.0.0.1:9", cache=False).atag, batched=True)


@pytest.mark.parametrize(
    "bad",
    [
        {"endpoint": "localhost:8080"},
        {"format": "csv"},
        {"max_new_tokens": 0},
        {"long_queries": "drop"},
        {"concurrency": 0},
        {"template": "no placeholder"},
        {"timeout": 0},
        {"timeout": -1.5},
        {"endpoint": "ftp://127.0.0.1/x"},
    ],
)
def test_bad_configuration_is_rejected_when_built(bad):
    kwargs = {"endpoint": "http://127.0.0.1:8080", **bad}
    with pytest.raises(ConfigurationError):
        Tagger(kwargs.pop("endpoint"), **kwargs)


def test_errors_unpickle_across_processes():
    error = EndpointError("down", url="http://x")
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is EndpointError and str(clone) == "down" and clone.context == {"url": "http://x"}
    assert json.dumps(str(clone))
    assert os.environ.get("HF_HOME", "").startswith("/")  # conftest isolated the Hub cache
