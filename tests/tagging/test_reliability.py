"""Tagging that survives a misbehaving fleet: faults, retries, fail-fast, adaptive concurrency,
several endpoints, the request cache, kill-and-resume, progress."""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import warnings

import datasets
import pytest
from datasets.fingerprint import Hasher

from instag_hf import Tagger
from instag_hf.errors import EndpointError
from instag_hf.tagging.cache import RequestCache
from instag_hf.tagging.retry import RetryPolicy
from tests.conftest import REPO_ROOT
from tests.servers.faults import strike
from tests.servers.tgi_server import start_tgi_server

FAST_RETRY = RetryPolicy(max_attempts=8, base_delay=0.01, max_delay=0.05)


def prompts(n: int, salt: str = "") -> datasets.Dataset:
    return datasets.Dataset.from_dict(
        {"prompt": [f"{salt}How do I solve puzzle number {i} with python?" for i in range(n)]}
    )


def assert_nothing_lost(ds: datasets.Dataset) -> None:
    for row in ds:
        assert row["instag_raw_tags"] or row["instag_error"], row


def test_twenty_percent_mixed_faults_lose_no_row(tgi, request_cache_dir):
    tgi.set_knobs(fault_rate=0.2, faults=["429", "503", "drop", "prose", "dict", "truncated"], retry_after=0)
    ds = prompts(2000)
    tagger = Tagger(tgi.url, cache=request_cache_dir, retry=FAST_RETRY, progress=False)
    tagged = ds.map(tagger.atag, batched=True, batch_size=250)
    assert tagged.num_rows == 2000 and tagged["prompt"] == ds["prompt"]
    assert_nothing_lost(tagged)
    stats = tgi.stats()
    assert {"429", "503", "drop", "prose", "dict", "truncated"} <= set(stats["faults"])
    assert tagger.stats.retries > 0
    tagged_rows = sum(bool(tags) for tags in tagged["instag_raw_tags"])
    assert tagged_rows >= 1990  # transport faults are retried; prose and dicts are recovered
    errors = [e for e in tagged["instag_error"] if e]
    assert all(("cut off" in e) or ("failed after" in e) or e for e in errors)


def test_a_422_is_a_per_row_error_and_is_not_retried(tgi, request_cache_dir):
    tagger = Tagger(tgi.url, cache=request_cache_dir, retry=FAST_RETRY, progress=False)
    prompts(1).map(tagger.atag, batched=True)  # detection sees the default limits
    tgi.set_knobs(max_input_tokens=3)  # the server tightens its limit afterwards
    tgi.reset()
    tagged = prompts(4, "long ").map(tagger.atag, batched=True)
    assert all("HTTP 422" in e for e in tagged["instag_error"])
    assert set(tgi.stats()["queries"].values()) == {1}


def test_retry_after_is_honoured(tgi, request_cache_dir):
    tgi.set_knobs(fail_first_attempts=1, fail_first_fault="429", retry_after=1)
    start = time.monotonic()
    tagged = prompts(3).map(Tagger(tgi.url, cache=request_cache_dir, progress=False).atag, batched=True)
    assert time.monotonic() - start >= 1.0
    assert all(error is None for error in tagged["instag_error"])
    assert set(tgi.stats()["queries"].values()) == {2}


def test_unparseable_answers_are_asked_again_once(tgi, tmp_path):
    tgi.set_knobs(fail_first_attempts=1, fail_first_fault="garbage")
    tagger = Tagger(tgi.url, cache=tmp_path / "a", progress=False)
    tagged = prompts(5).map(tagger.atag, batched=True)
    assert all(tags for tags in tagged["instag_raw_tags"]) and tagger.stats.reasked == 5
    tgi.reset()
    tgi.set_knobs(fail_first_attempts=1, fail_first_fault="garbage")
    stubborn = Tagger(tgi.url, cache=tmp_path / "b", parse_retries=0, progress=False)
    tagged = prompts(5, "other ").map(stubborn.atag, batched=True)
    assert all("no JSON" in e or "answer" in e for e in tagged["instag_error"])
    assert tagged["instag_raw_tags"] == [[]] * 5


def test_an_endpoint_that_fails_everything_stops_the_map_fast(tgi, request_cache_dir):
    tgi.set_knobs(fault_rate=1.0, faults=["503"], retry_after=0)
    tagger = Tagger(tgi.url, cache=request_cache_dir, retry=FAST_RETRY, fail_fast_seconds=0.2, progress=False)
    with pytest.raises(
        EndpointError, match=r"No tagging endpoint answered for \d+s: .*HTTP 503.*run the same map again"
    ):
        prompts(500).map(tagger.atag, batched=True)
    assert tgi.stats()["requests"] < 500 * FAST_RETRY.max_attempts / 2  # stopped, not exhausted


FAIL_FAST_SECONDS = 2.0
# What the map may take past fail_fast_seconds: a watchdog tick, one backoff step of the
# default policy and the unwinding of a 500-row map, with room for a loaded 2-core machine.
SLACK_SECONDS = 12.0


def _dead_server_map(
    request_cache_dir, *, slots: int, latency: float, how: str, timeout: float = 120.0
) -> tuple[EndpointError, float, int]:
    """Tag 500 rows with the server killed (or stopped) mid-map; returns (error, seconds from
    the kill to the error, answers received before it)."""
    server = start_tgi_server(latency=latency, max_concurrent_requests=slots)
    tagger = Tagger(
        server.url, cache=request_cache_dir, fail_fast_seconds=FAIL_FAST_SECONDS, timeout=timeout, progress=False
    )
    with strike(server, when=lambda: tagger.stats.answered >= 40, how=how) as struck:
        with pytest.raises(EndpointError) as caught:
            prompts(500, "dead ").map(tagger.atag, batched=True)
        ended = time.monotonic()
    server.close()
    return caught.value, ended - struck[0], tagger.stats.answered


def _rerun_sends_only_the_rest(request_cache_dir) -> None:
    cached = len(RequestCache(request_cache_dir))
    assert 40 <= cached < 500
    with start_tgi_server() as restarted:
        tagged = prompts(500, "dead ").map(
            Tagger(restarted.url, cache=request_cache_dir, progress=False).atag, batched=True
        )
        assert all(error is None for error in tagged["instag_error"])
        assert len(restarted.stats()["queries"]) == 500 - cached  # only what was not answered


@pytest.mark.parametrize("slots,latency", [(4, 0.02), (128, 0.5)], ids=["4-slots", "128-slots"])
def test_a_server_killed_mid_map_stops_it_within_fail_fast_seconds(request_cache_dir, slots, latency):
    error, seconds, answered = _dead_server_map(request_cache_dir, slots=slots, latency=latency, how="kill")
    assert re.search(
        r"No tagging endpoint answered for \d+s: http://127\.0\.0\.1:\d+ failed \d+ attempts? \(last: ", str(error)
    ), error
    assert "run the same map again" in str(error)
    assert seconds < FAIL_FAST_SECONDS + SLACK_SECONDS, f"the map ran on for {seconds:.1f}s after the kill"
    assert answered >= 40
    _rerun_sends_only_the_rest(request_cache_dir)


def test_a_hung_server_stops_the_map_within_timeout_plus_fail_fast_seconds(request_cache_dir):
    # SIGSTOP: connections are still accepted by the kernel, nothing answers.
    error, seconds, _ = _dead_server_map(request_cache_dir, slots=4, latency=0.02, how="stop", timeout=3.0)
    assert "timed out after 3s" in str(error), error
    assert seconds < 3.0 + FAIL_FAST_SECONDS + SLACK_SECONDS, f"the map ran on for {seconds:.1f}s after the hang"
    _rerun_sends_only_the_rest(request_cache_dir)


def test_a_server_restarting_within_fail_fast_seconds_is_ridden_out(request_cache_dir):
    server = start_tgi_server(latency=0.02, max_concurrent_requests=4)
    port = int(server.url.rsplit(":", 1)[1])
    tagger = Tagger(server.url, cache=request_cache_dir, fail_fast_seconds=30, progress=False)
    revived: list = []

    def restart() -> None:
        while tagger.stats.answered < 40:
            time.sleep(0.01)
        server.close()
        time.sleep(1.0)
        revived.append(start_tgi_server(port=port, latency=0.02, max_concurrent_requests=4))

    restarter = threading.Thread(target=restart, daemon=True)
    restarter.start()
    try:
        tagged = prompts(500, "restart ").map(tagger.atag, batched=True)
    finally:
        restarter.join()
    with revived[0] as back:
        assert back.stats()["requests"] > 0
    assert all(error is None for error in tagged["instag_error"])


def test_concurrency_adapts_to_429_and_stays_under_the_server_limit(tgi, request_cache_dir):
    tagger = Tagger(tgi.url, cache=request_cache_dir, retry=FAST_RETRY, progress=False)
    prompts(1, "warm ").map(tagger.atag, batched=True)
    tgi.set_knobs(max_concurrent_requests=4, latency=0.02)  # /info said 128
    tgi.reset()
    tagged = prompts(300).map(tagger.atag, batched=True)
    assert all(error is None for error in tagged["instag_error"])
    stats = tgi.stats()
    assert stats["statuses"].get("429", 0) > 0
    assert stats["statuses"]["200"] == 300
    assert stats["statuses"].get("429", 0) < 300  # the bound shrank instead of hammering


def test_concurrency_starts_at_the_servers_max_concurrent_requests(tgi, request_cache_dir):
    tgi.set_knobs(latency=0.2, max_concurrent_requests=16)
    tagged = prompts(64).map(Tagger(tgi.url, cache=request_cache_dir, progress=False).atag, batched=True)
    assert all(error is None for error in tagged["instag_error"])
    assert tgi.stats()["max_in_flight"] == 16 and tgi.stats()["statuses"].get("429", 0) == 0


def test_load_spreads_over_endpoints_and_a_dead_one_is_set_aside(tgi, request_cache_dir):
    with start_tgi_server(latency=0.02) as other:
        tagger = Tagger([tgi.url, other.url], cache=request_cache_dir, retry=FAST_RETRY, progress=False)
        tagged = prompts(200).map(tagger.atag, batched=True)
        assert all(error is None for error in tagged["instag_error"])
        assert tgi.stats()["requests"] > 0 and other.stats()["requests"] > 0
    # `other` is gone now: the same tagger keeps going on the endpoint that is left.
    tagged = prompts(200, "after ").map(tagger.atag, batched=True)
    assert all(error is None for error in tagged["instag_error"])


def test_a_set_aside_endpoint_is_tried_again_when_it_comes_back(tgi, request_cache_dir):
    other = start_tgi_server()
    port = int(other.url.rsplit(":", 1)[1])
    tagger = Tagger([tgi.url, other.url], cache=request_cache_dir, retry=FAST_RETRY, progress=False)
    prompts(20, "first ").map(tagger.atag, batched=True)  # both endpoints detected
    other.close()
    tgi.set_knobs(latency=0.02, max_concurrent_requests=4)  # this map lasts ~3 s on `tgi` alone
    revived: list = []
    timer = threading.Timer(0.5, lambda: revived.append(start_tgi_server(port=port)))
    timer.start()
    try:
        tagged = prompts(600, "during ").map(tagger.atag, batched=True)
    finally:
        timer.join()
    with revived[0] as back:
        assert all(error is None for error in tagged["instag_error"])
        assert back.stats()["requests"] > 0  # set aside while down, used again once back


def test_an_endpoint_down_at_start_is_left_out(tgi, request_cache_dir, caplog):
    tagger = Tagger(f"{tgi.url},http://127.0.0.1:9", cache=request_cache_dir, progress=False)
    tagged = prompts(10).map(tagger.atag, batched=True)
    assert all(error is None for error in tagged["instag_error"])
    assert "left out" in caplog.text


def test_the_request_cache_answers_a_rerun_and_can_be_turned_off_or_cleared(tgi, request_cache_dir):
    ds = prompts(20)
    ds.map(Tagger(tgi.url, cache=request_cache_dir, progress=False).atag, batched=True)
    assert tgi.stats()["requests"] == 20
    again = Tagger(tgi.url, cache=request_cache_dir, progress=False)
    ds.map(again.atag, batched=True)  # in memory: datasets' own cache is not involved
    assert tgi.stats()["requests"] == 20 and again.stats.cache_hits == 20
    ds.map(Tagger(tgi.url, cache=False, progress=False).atag, batched=True)
    assert tgi.stats()["requests"] == 40
    cache = RequestCache(request_cache_dir)
    assert len(cache) == 20
    cache.clear()
    assert len(cache) == 0


def test_the_cache_never_stores_a_secret(tgi, request_cache_dir):
    tagger = Tagger(tgi.url, cache=request_cache_dir, headers={"Authorization": "Bearer hf_supersecret"})
    prompts(3).map(tagger.atag, batched=True)
    rows = sqlite3.connect(request_cache_dir / RequestCache.FILENAME).execute("SELECT * FROM answers").fetchall()
    assert rows and "hf_supersecret" not in repr(rows)
    assert "127.0.0.1" not in repr(rows)  # keyed by model, not address


def test_the_cache_is_shared_by_num_proc_workers(tgi, request_cache_dir):
    ds = prompts(40)
    ds.map(Tagger(tgi.url, cache=request_cache_dir, progress=False), batched=True, batch_size=5, num_proc=2)
    assert len(RequestCache(request_cache_dir)) == 40


RESUMABLE_SCRIPT = """
import sys, datasets
from instag_hf import Tagger
url, cache = sys.argv[1], sys.argv[2]
ds = datasets.Dataset.from_dict({"prompt": [f"Resumable question {i} about cooking" for i in range(600)]})
tagged = ds.map(Tagger(url, cache=cache, progress=False).atag, batched=True, batch_size=100)
print(sum(1 for e in tagged["instag_error"] if e is None))
"""


def test_kill_and_resume_sends_no_second_request_for_answered_queries(tgi, request_cache_dir):
    tgi.set_knobs(latency=0.05, max_concurrent_requests=8)
    command = [sys.executable, "-c", RESUMABLE_SCRIPT, tgi.url, str(request_cache_dir)]
    child = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while sum(1 for e in tgi.stats()["log"] if e["status"] == 200) < 300:
        assert child.poll() is None and time.monotonic() < deadline, "the map ended before it could be killed"
        time.sleep(0.05)
    answered = {e["query"] for e in tgi.stats()["log"] if e["status"] == 200}
    time.sleep(0.3)  # answers received by now were committed as they arrived
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL

    rerun = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert rerun.stdout.strip().splitlines()[-1] == "600"
    counts = tgi.stats()["queries"]
    assert len(counts) == 600
    assert {counts[q] for q in answered} == {1}


def test_progress_is_silent_when_datasets_progress_bars_are_disabled(tgi, request_cache_dir, capsys):
    datasets.disable_progress_bars()
    try:
        prompts(5).map(Tagger(tgi.url, cache=request_cache_dir).atag, batched=True)
    finally:
        datasets.enable_progress_bars()
    assert "InsTag tagging" not in capsys.readouterr().err
    prompts(5, "shown ").map(Tagger(tgi.url, cache=request_cache_dir, progress=True).atag, batched=True)
    err = capsys.readouterr().err
    assert "InsTag tagging" in err and "in_flight" in err


# -- hardening (issue 11): poisoned answers, a model swapped behind a URL, damaged caches -----


@pytest.mark.parametrize("fault", ["surrogate", "raw_surrogate"])
def test_a_poisoned_answer_is_a_row_error_and_the_map_completes(tgi, request_cache_dir, fault):
    # Every first answer holds a tag that is not valid text (a lone surrogate, a NUL): as JSON
    # escapes ("surrogate", what the probe found) or in the generated text itself.
    tgi.set_knobs(fail_first_attempts=1, fail_first_fault=fault)
    ds = prompts(6, fault)
    tagged = ds.map(Tagger(tgi.url, cache=request_cache_dir, progress=False).atag, batched=True)
    assert tagged.num_rows == 6 and tgi.stats()["requests"] == 6
    for row in tagged:
        tags = [t["tag"] for t in row["instag_raw_tags"]]
        assert tags and not any("poisoned" in t for t in tags)  # the row keeps its other tags
        assert "dropped 1 tag that is not valid text" in row["instag_error"]
    # The answers were cached as they came: a rerun is served from the cache, the same way.
    again = ds.map(Tagger(tgi.url, cache=request_cache_dir, progress=False).atag, batched=True)
    assert tgi.stats()["requests"] == 6
    assert again.to_dict() == tagged.to_dict()


def old_cache(directory, answers: dict[str, str]) -> None:
    """A request cache as versions before the per-entry checksum wrote it."""
    directory.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(directory / RequestCache.FILENAME)
    conn.execute("CREATE TABLE answers (key TEXT PRIMARY KEY, answer TEXT NOT NULL, created REAL NOT NULL)")
    conn.executemany("INSERT INTO answers VALUES (?, ?, 0)", list(answers.items()))
    conn.commit()
    conn.close()


def cache_key(tagger: Tagger, url: str, query: str) -> str:
    from instag_hf.tagging.cache import request_key

    params = {"max_new_tokens": tagger.max_new_tokens, "do_sample": False}
    return request_key(Tagger(url).servers()[0].identity, tagger.template.sha256, query, params)


def test_a_poisoned_answer_in_a_cache_of_an_older_version_is_a_row_error(tgi, request_cache_dir):
    ds = prompts(2, "old cache ")
    tagger = Tagger(tgi.url, cache=request_cache_dir, progress=False)
    poisoned = json.dumps([{"tag": "math", "explanation": "sums"}, {"tag": "bad \ud800", "explanation": ""}])
    clean = json.dumps([{"tag": "puzzle", "explanation": "a riddle"}])
    old_cache(
        request_cache_dir,
        {cache_key(tagger, tgi.url, ds[0]["prompt"]): poisoned, cache_key(tagger, tgi.url, ds[1]["prompt"]): clean},
    )
    tagged = ds.map(tagger.atag, batched=True)
    assert tgi.stats()["requests"] == 0  # both answers come from the old file, which keeps working
    assert [[t["tag"] for t in tags] for tags in tagged["instag_raw_tags"]] == [["math"], ["puzzle"]]
    assert "not valid text" in tagged["instag_error"][0] and tagged["instag_error"][1] is None


def file_backed_prompts(folder, n: int, salt: str = "") -> datasets.Dataset:
    # datasets caches map results only for datasets backed by files.
    prompts(n, salt).save_to_disk(folder)
    return datasets.load_from_disk(folder)


def test_a_model_swapped_behind_the_url_is_not_mistaken_for_the_old_one(tgi, request_cache_dir, tmp_path):
    ds = file_backed_prompts(tmp_path / "pool", 5, "swap ")
    first_model = tgi.knobs()["model_id"]
    tagger = Tagger(tgi.url, cache=request_cache_dir, progress=False)
    first = ds.map(tagger.atag, batched=True)
    assert tgi.stats()["requests"] == 5

    tgi.set_knobs(model_id="another-org/another-model")  # same URL, another model behind it
    tgi.reset()
    swapped = ds.map(Tagger(tgi.url, cache=request_cache_dir, progress=False).atag, batched=True)
    assert tgi.stats()["requests"] == 5  # neither datasets' cache nor the request cache answered
    assert swapped._fingerprint != first._fingerprint
    # The Tagger that saw the first model asked once and keeps it (pickling sends nothing): a
    # swap behind the URL is for a new Tagger to notice, as above.
    again = ds.map(tagger.atag, batched=True)
    assert again._fingerprint == first._fingerprint and tgi.stats()["requests"] == 5

    tgi.set_knobs(model_id=first_model)  # the first model is back: its map result is reused
    tgi.reset()
    back = ds.map(Tagger(tgi.url, cache=request_cache_dir, progress=False).atag, batched=True)
    assert tgi.stats()["requests"] == 0 and back._fingerprint == first._fingerprint


def test_pickling_asks_the_server_once_per_tagger_and_a_copy_never(tgi):
    tagger = Tagger(tgi.url, cache=False, progress=False)
    first = Hasher.hash(tagger)
    asked = tgi.stats()["routes"].get("/info", 0)
    assert asked == 1
    copy = pickle.loads(pickle.dumps(tagger))
    assert Hasher.hash(tagger) == Hasher.hash(copy) == first
    prompts(3, "asked once ").map(tagger, batched=True)  # tagging reuses what hashing asked
    assert tgi.stats()["routes"].get("/info", 0) == asked
    assert Hasher.hash(Tagger(tgi.url, cache=False, progress=False)) == first  # same model: same fingerprint


def test_an_unreachable_server_is_named_when_the_fingerprint_cannot_name_its_model():
    dead = "http://127.0.0.1:9"  # the discard port: nothing listens
    tagger = Tagger(dead, cache=False, progress=False, timeout=2)
    with pytest.warns(UserWarning, match=rf"Could not ask {dead} which model it serves .*fingerprint is random"):
        fingerprint = Hasher.hash(tagger)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # asked once: the same Tagger hashes the same, silently
        assert Hasher.hash(tagger) == fingerprint
    assert Hasher.hash(pickle.loads(pickle.dumps(tagger))) == fingerprint


@pytest.mark.parametrize("damage", ["not-a-database", "malformed"])
def test_a_corrupt_request_cache_is_moved_aside_and_a_new_one_started(tgi, request_cache_dir, caplog, damage):
    path = request_cache_dir / RequestCache.FILENAME
    if damage == "not-a-database":
        request_cache_dir.mkdir(parents=True)
        path.write_bytes(b"this is not an SQLite file at all" * 200)
    else:  # a real cache whose pages after the first (the schema) were overwritten
        old_cache(request_cache_dir, {f"key {i}": "answer " * 100 for i in range(300)})
        data = bytearray(path.read_bytes())
        data[4096:] = b"\xff" * (len(data) - 4096)
        path.write_bytes(bytes(data))
    caplog.set_level(logging.WARNING)
    tagged = prompts(4, "after damage ").map(
        Tagger(tgi.url, cache=request_cache_dir, progress=False).atag, batched=True
    )
    assert all(tags for tags in tagged["instag_raw_tags"]) and tgi.stats()["requests"] == 4
    aside = [p for p in request_cache_dir.iterdir() if p.name.startswith(RequestCache.FILENAME + ".corrupt")]
    assert len(aside) == 1
    assert str(path) in caplog.text and str(aside[0]) in caplog.text and "new one" in caplog.text
    assert len(RequestCache(request_cache_dir)) == 4  # the new cache holds the new answers


def test_a_cached_answer_changed_on_disk_is_asked_again(tgi, request_cache_dir):
    ds = prompts(3, "tamper ")
    first = ds.map(Tagger(tgi.url, cache=request_cache_dir, progress=False).atag, batched=True)
    conn = sqlite3.connect(request_cache_dir / RequestCache.FILENAME)
    key = conn.execute("SELECT key FROM answers ORDER BY key LIMIT 1").fetchone()[0]
    conn.execute("UPDATE answers SET answer = ? WHERE key = ?", ('[{"tag": "tampered", "explanation": ""}]', key))
    conn.commit()
    conn.close()
    tgi.reset()
    again = ds.map(Tagger(tgi.url, cache=request_cache_dir, progress=False).atag, batched=True)
    assert tgi.stats()["requests"] == 1  # the changed entry is a miss; the other two are hits
    assert again.to_dict() == first.to_dict()


def test_a_single_object_answer_is_kept_as_one_tag_and_said(tgi, request_cache_dir):
    tgi.set_knobs(fail_first_attempts=1, fail_first_fault="dict")  # one object where a list was asked for
    tagged = prompts(3, "one object ").map(Tagger(tgi.url, cache=request_cache_dir, progress=False).atag, batched=True)
    assert all(len(tags) == 1 for tags in tagged["instag_raw_tags"])
    assert all("answer was one object, not a list" in error for error in tagged["instag_error"])
