"""Past one machine: the same Tagger and TagNormalizer as Ray Data ``map_batches`` callables.

A local Ray cluster (2 CPUs, a bounded object store, no dashboard) is started once for the
module; the maps run in Ray's worker processes against the TGI-protocol server, with faults
injected and with a worker killed mid-run, and against the real vLLM.
"""

from __future__ import annotations

import collections

import datasets
import psutil
import pytest
import ray

from instag_hf import Tagger, TagNormalizer
from instag_hf.tagging.cache import RequestCache
from instag_hf.tagging.retry import RetryPolicy
from tests.servers.faults import strike

FAST_RETRY = RetryPolicy(max_attempts=8, base_delay=0.01, max_delay=0.05)


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A local Ray cluster of this machine only, for the module."""
    ray.init(
        address="local",
        num_cpus=2,
        object_store_memory=256 * 2**20,
        include_dashboard=False,
        _temp_dir=str(tmp_path_factory.mktemp("ray")),
        log_to_driver=False,
        configure_logging=False,
    )
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    try:
        yield
    finally:
        ray.shutdown()


def prompts(n: int, salt: str = "") -> datasets.Dataset:
    return datasets.Dataset.from_dict(
        {"i": list(range(n)), "prompt": [f"{salt}How do I solve puzzle number {i} with python?" for i in range(n)]}
    )


def ray_map(
    ds: datasets.Dataset, fn, *, blocks: int = 4, batch_size: int = 50, concurrency: int = 2, **ray_remote_args
) -> list[dict]:
    """``from_huggingface(ds).map_batches(fn, batch_format="pyarrow")``, rows in input order."""
    mapped = ray.data.from_huggingface(ds, override_num_blocks=blocks).map_batches(
        fn, batch_format="pyarrow", batch_size=batch_size, concurrency=concurrency, **ray_remote_args
    )
    return sorted(mapped.take_all(), key=lambda row: row["i"])


def assert_every_row_once(rows: list[dict], ds: datasets.Dataset) -> None:
    assert [row["i"] for row in rows] == list(range(ds.num_rows))  # none lost, none twice
    assert [row["prompt"] for row in rows] == ds["prompt"]
    for row in rows:
        assert row["instag_raw_tags"] or row["instag_error"], row  # tags, or an explicit error


def test_a_ray_map_under_faults_returns_every_row_once_and_a_rerun_sends_nothing(ray_cluster, tgi, request_cache_dir):
    faults = ["429", "503", "drop", "prose", "dict", "truncated", "500"]
    tgi.set_knobs(fault_rate=0.2, faults=faults, retry_after=0)
    ds = prompts(400)
    tagger = Tagger(tgi.url, cache=request_cache_dir, retry=FAST_RETRY, progress=False)
    rows = ray_map(ds, tagger)
    assert_every_row_once(rows, ds)
    assert set(faults) & set(tgi.stats()["faults"])
    assert sum(bool(row["instag_raw_tags"]) for row in rows) >= 390  # transport faults are retried
    assert all(isinstance(row["instag_error"], str) for row in rows if not row["instag_raw_tags"])

    tgi.reset()
    again = ray_map(ds, tagger)
    assert tgi.stats()["requests"] == 0  # every worker found every answer in the one cache
    assert [row["instag_raw_tags"] for row in again] == [row["instag_raw_tags"] for row in rows]
    assert [row["instag_error"] for row in again] == [row["instag_error"] for row in rows]


def test_a_ray_map_equals_dataset_map(ray_cluster, tgi, request_cache_dir):
    ds = prompts(120, "same ")
    tagger = Tagger(tgi.url, cache=request_cache_dir, progress=False)
    by_ray = ray_map(ds, tagger, blocks=3, batch_size=16)
    by_datasets = ds.map(tagger, batched=True, batch_size=16)
    assert [row["instag_raw_tags"] for row in by_ray] == by_datasets["instag_raw_tags"]
    assert [row["instag_error"] for row in by_ray] == by_datasets["instag_error"]


class _BusyRayWorker:
    """What ``faults.strike`` kills: a Ray worker process running a map task (found when struck)."""

    @property
    def process(self) -> psutil.Process:
        for child in psutil.Process().children(recursive=True):
            try:
                title = " ".join(child.cmdline())
            except psutil.Error:
                continue
            if title.startswith("ray::") and "Map" in title:
                return child
        raise AssertionError("no Ray worker is running a map task")


def test_a_ray_worker_killed_mid_map_loses_nothing_on_the_rerun(ray_cluster, tgi, request_cache_dir):
    tgi.set_knobs(latency=0.05)
    ds = prompts(400, "killed ")
    tagger = Tagger(tgi.url, cache=request_cache_dir, concurrency=4, progress=False)
    with strike(_BusyRayWorker(), when=lambda: tgi.stats()["requests"] >= 60, how="kill") as struck:
        # Ray Data retries a task whose worker died (max_retries=-1): the retry is the rerun.
        rows = ray_map(ds, tagger, batch_size=25)
    assert struck, "the worker was not killed"
    assert_every_row_once(rows, ds)
    assert all(row["instag_raw_tags"] and row["instag_error"] is None for row in rows)
    asked = collections.Counter(tgi.stats()["queries"])
    assert len(asked) == 400
    # Answers are committed as they arrive: only the requests in flight in the killed
    # worker (at most its batch's concurrency) were asked twice.
    assert sum(count - 1 for count in asked.values()) <= 4
    assert len(RequestCache(request_cache_dir)) == 400

    tgi.reset()
    again = ray_map(ds, tagger, batch_size=25)
    assert tgi.stats()["requests"] == 0
    assert [row["instag_raw_tags"] for row in again] == [row["instag_raw_tags"] for row in rows]


def test_normalizer_apply_as_a_ray_map_equals_dataset_map(ray_cluster, tgi, request_cache_dir):
    ds = prompts(300, "normalize ")
    tagged = ds.map(Tagger(tgi.url, cache=request_cache_dir, progress=False), batched=True, batch_size=50)
    normalizer = TagNormalizer(min_frequency=2, semantic_aggregation=False, association_min_support=5).fit(tagged)
    by_datasets = tagged.map(normalizer, batched=True, batch_size=40)
    by_ray = ray_map(tagged, normalizer, blocks=3, batch_size=40)
    assert [row["instag_tags"] for row in by_ray] == by_datasets["instag_tags"]
    assert any(by_datasets["instag_tags"])
    # The raw tags ride along: a Ray map keeps only what the callable returns.
    assert [row["instag_raw_tags"] for row in by_ray] == tagged["instag_raw_tags"]


def test_a_small_ray_map_against_the_real_vllm(ray_cluster, vllm_server, request_cache_dir, monkeypatch):
    ds = prompts(8, "vllm ")
    # A key given as Tagger(api_key=...) never leaves this process: workers read INSTAG_API_KEY,
    # which Ray hands them through the task's runtime environment.
    monkeypatch.setenv("INSTAG_API_KEY", vllm_server.api_key)
    tagger = Tagger(vllm_server.url, cache=request_cache_dir, progress=False)
    environment = {"env_vars": {"INSTAG_API_KEY": vllm_server.api_key}}
    rows = ray_map(ds, tagger, blocks=2, batch_size=4, runtime_env=environment)
    assert_every_row_once(rows, ds)
    assert sum(bool(row["instag_raw_tags"]) for row in rows) >= 1  # a tiny model: structure, not content
    vllm_server.check()
