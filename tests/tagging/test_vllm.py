"""The real vLLM (CPU build) as a tagging endpoint: detection, keys, model choice, tokens,
the request cache, a refused request and a server killed mid-map.

The session's server (``vllm_server`` in ``tests/conftest.py``) enforces ``--api-key``; its
Prometheus ``/metrics`` counts the requests it really received, so "0 requests" is the
server's word, not only ours. SmolLM2-135M tags poorly: the tests assert structure.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import datasets
import psutil
import pytest

import instag_hf
from instag_hf import Tagger
from instag_hf.errors import AuthenticationError, ConfigurationError, EndpointError
from instag_hf.local_vllm import SERVED_MODEL_NAME, check_cpu, serving_dtype, start_vllm
from instag_hf.tagging.dialects import VLLM
from tests.conftest import VLLM_API_KEY
from tests.test_cli import assert_ok, assert_one_line_error, invoke, make_rows, write_jsonl

pytestmark = pytest.mark.timeout(900)

MAX_NEW_TOKENS = 96  # enough for a few tags; keeps each test to seconds


def served_requests(server) -> float:
    """Requests the server finished, any outcome (vLLM's ``vllm:request_success_total`` plus
    its HTTP 4xx/5xx count), from its Prometheus ``/metrics``."""
    request = urllib.request.Request(server.url + "/metrics", headers={"Authorization": f"Bearer {server.api_key}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("vllm:request_success_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def prompts(count: int, prefix: str = "") -> datasets.Dataset:
    return datasets.Dataset.from_dict({"prompt": [f"{prefix}{row['prompt']}" for row in make_rows(count, seed=7)]})


def tagger_for(server, cache, **options) -> Tagger:
    return Tagger(
        server.url, api_key=server.api_key, cache=cache, max_new_tokens=MAX_NEW_TOKENS, progress=False, **options
    )


def test_vllm_is_detected_and_gets_json_schema(vllm_server, request_cache_dir):
    tagger = tagger_for(vllm_server, request_cache_dir)
    info = tagger.servers()[0]
    assert (info.kind, info.model_id) == (VLLM, SERVED_MODEL_NAME)
    assert info.max_total_tokens == 2048  # vLLM's /v1/models says its context length
    tagged = prompts(4, "detect ").map(tagger.atag, batched=True)
    assert len(tagged) == 4
    assert all(tags or error for tags, error in zip(tagged["instag_raw_tags"], tagged["instag_error"]))
    assert sum(1 for tags in tagged["instag_raw_tags"] if tags) >= 2  # json_schema constrains the answer
    assert tagger.stats.answered >= 2


def test_a_batched_map_with_the_ready_made_tag_and_the_key_from_the_environment(vllm_server, monkeypatch):
    monkeypatch.setenv("INSTAG_ENDPOINT", vllm_server.url)
    monkeypatch.setenv("INSTAG_API_KEY", vllm_server.api_key)
    ds = prompts(8, "ready-made ")
    before = served_requests(vllm_server)
    tagged = ds.map(instag_hf.tag, batched=True, batch_size=4)
    assert len(tagged) == 8 and tagged["prompt"] == ds["prompt"]  # every row back, in order
    assert all(tags or error for tags, error in zip(tagged["instag_raw_tags"], tagged["instag_error"]))
    assert served_requests(vllm_server) - before >= 8


def test_instag_tag_end_to_end_with_the_key_and_a_one_line_401_without(vllm_server, tmp_path, monkeypatch):
    pool = write_jsonl(tmp_path / "pool.jsonl", make_rows(6, seed=11))
    common = ("--endpoint", vllm_server.url, "--cache-dir", tmp_path / "req", "--max-new-tokens", MAX_NEW_TOKENS)
    monkeypatch.delenv("INSTAG_API_KEY", raising=False)
    refused = invoke("tag", pool, *common, "-o", tmp_path / "refused")
    assert_one_line_error(refused, vllm_server.url, "INSTAG_API_KEY")
    assert not (tmp_path / "refused").exists()

    monkeypatch.setenv("INSTAG_API_KEY", VLLM_API_KEY)
    result = invoke("tag", pool, *common, "-o", tmp_path / "tagged")
    assert_ok(result)
    last = result.stdout.strip().splitlines()[-1]
    assert re.search(r"Tagged 6 rows .*\d+ requests, 0 answers from cache; [1-9][\d,]* prompt tokens", last), last
    tagged = datasets.load_from_disk(str(tmp_path / "tagged"))
    assert len(tagged) == 6 and set(tagged.column_names) >= {"instag_raw_tags", "instag_error"}

    before = served_requests(vllm_server)
    again = invoke("tag", pool, *common, "-o", tmp_path / "again")
    assert_ok(again)
    # datasets' own cache or the request cache answers it: either way nothing is asked.
    assert "Tagged 6 rows" in again.stdout
    assert "; 0 requests, " in again.stdout.strip().splitlines()[-1]
    assert served_requests(vllm_server) == before  # the server's own count: nothing was sent


def test_a_refused_key_stops_the_map_at_once(vllm_server, request_cache_dir):
    tagger = Tagger(vllm_server.url, api_key="not-the-key", cache=request_cache_dir, progress=False)
    with pytest.raises(AuthenticationError) as caught:
        prompts(3).map(tagger.atag, batched=True)
    assert vllm_server.url in str(caught.value) and "not-the-key" not in str(caught.value)


def test_model_choice_by_the_served_model_name(vllm_server, request_cache_dir):
    tagger = tagger_for(vllm_server, request_cache_dir, model=SERVED_MODEL_NAME)
    assert tagger.servers()[0].model_id == SERVED_MODEL_NAME
    with pytest.raises(ConfigurationError, match=re.escape(SERVED_MODEL_NAME)):
        tagger_for(vllm_server, request_cache_dir, model="org/not-served").servers()


def test_the_card_carries_the_tokens_vllm_reported_and_a_rerun_sends_nothing(vllm_server, request_cache_dir):
    ds = prompts(10, "card ")
    tagger = tagger_for(vllm_server, request_cache_dir)
    pool = ds.map(tagger.atag, batched=True)
    stats = tagger.stats
    assert stats.prompt_tokens > 0 and stats.generated_tokens > 0 and stats.unmetered == 0  # from `usage`
    normalizer = instag_hf.TagNormalizer(min_frequency=1, semantic_aggregation=False)
    pool = pool.map(normalizer.fit(pool), batched=True)
    card = str(instag_hf.build_card(instag_hf.sample(pool, n=3, seed=0), pool=pool, tagger=tagger, plots=False))
    assert (
        f"- **Tagging cost:** 10 queries, {stats.prompt_tokens:,} prompt tokens, {stats.generated_tokens:,} "
        f"generated tokens, model `{SERVED_MODEL_NAME}` on server kind `vllm`"
    ) in card

    before = served_requests(vllm_server)
    again = tagger_for(vllm_server, request_cache_dir)
    rerun = ds.map(again.atag, batched=True, load_from_cache_file=False)
    assert again.stats.requests == 0 and again.stats.cache_hits == 10
    assert served_requests(vllm_server) == before
    assert rerun["instag_raw_tags"] == pool["instag_raw_tags"]


def test_a_request_the_server_refuses_is_a_row_error_and_no_row_is_lost(vllm_server, request_cache_dir):
    # Digits and spaces are about a token per character: cut at 3 characters per token to fit
    # 2048 tokens, this query is still ~4,500 tokens, and vLLM refuses it (HTTP 400).
    too_long = " ".join(str(i % 10) for i in range(12_000))
    ds = datasets.Dataset.from_dict({"prompt": ["Sort a list in Python.", too_long, "Name three rivers."]})
    tagger = tagger_for(vllm_server, request_cache_dir)
    tagged = ds.map(tagger.atag, batched=True)
    assert len(tagged) == 3 and tagged["prompt"] == ds["prompt"]
    error = tagged["instag_error"][1]
    assert error and "maximum context length" in error and tagged["instag_raw_tags"][1] == []
    assert all(tags or error for tags, error in zip(tagged["instag_raw_tags"], tagged["instag_error"]))


def test_a_vllm_killed_mid_map_ends_the_map_within_the_fail_fast_bound(vllm_server, request_cache_dir, tmp_path):
    # A second server of its own (the session's must live on), killed with its engine after
    # a few answers. fail_fast_seconds would stop the map by itself; the launcher's watcher
    # says why sooner. Everything answered before the kill is in the request cache.
    ds = prompts(48, "killed ")
    fail_fast = 20.0
    with start_vllm(api_key=VLLM_API_KEY, log_path=tmp_path / "doomed.log", progress=None) as doomed:
        tagger = tagger_for(doomed, request_cache_dir, fail_fast_seconds=fail_fast)
        killed_at: list[float] = []

        def kill_after_a_few_answers() -> None:
            deadline = time.monotonic() + 600
            while tagger.stats.answered < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            killed_at.append(time.monotonic())
            os.killpg(doomed.process.pid, signal.SIGKILL)

        killer = threading.Thread(target=kill_after_a_few_answers, daemon=True)
        killer.start()
        with pytest.raises(EndpointError) as caught:
            ds.map(tagger.atag, batched=True, batch_size=8)
        ended = time.monotonic()
        killer.join(5)
    assert killed_at, "the map ended before the server was killed"
    assert ended - killed_at[0] < fail_fast + 30, f"the map took {ended - killed_at[0]:.0f} s to stop"
    assert "SIGKILL" in str(caught.value) or doomed.url in str(caught.value)
    answered = tagger.stats.answered
    assert answered >= 3

    # The same model on the session's server: the cached answers are reused, the rest asked.
    again = tagger_for(vllm_server, request_cache_dir)
    tagged = ds.map(again.atag, batched=True)
    assert len(tagged) == 48 and tagged["prompt"] == ds["prompt"]
    assert again.stats.cache_hits >= answered and again.stats.cache_hits + again.stats.requests >= 48


def living_group_members(group: int, wait: float) -> list[psutil.Process]:
    """Processes of a process group that are still running after up to ``wait`` seconds
    (a zombie that init has not reaped yet runs nothing: it does not count)."""
    deadline = time.monotonic() + wait
    while True:
        living = []
        for process in psutil.process_iter(["status"]):
            with contextlib.suppress(psutil.Error, ProcessLookupError):
                if os.getpgid(process.pid) == group and process.info["status"] != psutil.STATUS_ZOMBIE:
                    living.append(process)
        if not living or time.monotonic() > deadline:
            return living
        time.sleep(0.5)


def test_ctrl_c_stops_the_server_and_its_engine(tmp_path):
    # `python -m instag_hf.local_vllm serve`, interrupted as a terminal would: the server
    # leads its own process group (its engine core is a child), and the whole group goes.
    environment = {**os.environ, "INSTAG_TEST_KEY": VLLM_API_KEY}
    serve = subprocess.Popen(
        [sys.executable, "-m", "instag_hf.local_vllm", "serve", "--api-key-env", "INSTAG_TEST_KEY"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=environment,
    )
    try:
        assert serve.stdout is not None
        line = serve.stdout.readline()  # printed once /v1/models answers
        found = re.search(r"at (http://127\.0\.0\.1:\d+) \(pid (\d+),", line)
        assert found, line
        url, pid = found[1], int(found[2])
        assert psutil.Process(pid).children(recursive=True)  # the API server has its engine core
        serve.send_signal(signal.SIGINT)
        assert serve.wait(timeout=60) == 130
    finally:
        if serve.poll() is None:
            serve.kill()
    assert not living_group_members(pid, wait=10), "a process of the server's group outlived it"
    with pytest.raises(OSError):
        urllib.request.urlopen(url + "/v1/models", timeout=5)


def test_a_cpu_without_avx2_is_refused_with_the_fallback_named():
    check_cpu("fpu sse sse2 avx avx2 fma", "x86_64")
    check_cpu("fp asimd", "aarch64")
    with pytest.raises(ConfigurationError, match=r"no AVX2.*--server llamacpp"):
        check_cpu("fpu sse sse2 sse4_2 avx", "x86_64")


def test_bf16_is_served_only_where_the_cpu_computes_in_it():
    assert serving_dtype("fpu avx2 fma avx512f avx512_bf16", "x86_64") == "bfloat16"
    assert serving_dtype("fpu avx2 fma amx_bf16 amx_tile", "x86_64") == "bfloat16"
    assert serving_dtype("fpu avx2 fma avx512f avx512bw", "x86_64") == "float32"  # AVX-512 without BF16
    assert serving_dtype("fpu avx2 fma", "x86_64") == "float32"
    assert serving_dtype("fp asimd bf16 i8mm", "aarch64") == "bfloat16"
    assert serving_dtype("fp asimd", "aarch64") == "float32"
