"""The batch path for real: ``instag batch prepare`` -> ``vllm run-batch`` (offline, no server)
-> ``collect``, against online tagging of the session's real vLLM with the same model.

Both ask greedily (temperature 0), so the rows both parsed get the same tags; afterwards
online tagging of the same dataset and settings is answered by the request cache, which the
server's own ``/metrics`` confirms. SmolLM2-135M tags poorly: structure, not content.
"""

from __future__ import annotations

import datasets
import pytest

from instag_hf import Tagger, pipeline
from instag_hf.batching import collect_batch, prepare_batch
from instag_hf.local_vllm import SERVED_MODEL_NAME, run_batch
from tests.servers._batch_lines import read_jsonl
from tests.tagging.test_vllm import served_requests
from tests.test_cli import make_rows

pytestmark = pytest.mark.timeout(1800)

MAX_NEW_TOKENS = 96


def test_prepare_run_batch_collect_gives_the_online_tags(request, tmp_path):
    ds = datasets.Dataset.from_dict({"prompt": [row["prompt"] for row in make_rows(8, seed=11)]})
    cache = tmp_path / "batch-cache"
    offline = Tagger(model=SERVED_MODEL_NAME, server="vllm", max_new_tokens=MAX_NEW_TOKENS, cache=cache, progress=False)
    prepared = prepare_batch(ds, offline, tmp_path / "requests.jsonl")
    (requests,) = prepared.files
    lines = read_jsonl(requests)
    assert len(lines) == 8 and all(line["body"]["temperature"] == 0.0 for line in lines)  # greedy, as online
    # Before the session's server starts, if it has not: two vLLMs at once need ~6 GB.
    run_batch(requests, tmp_path / "results.jsonl", log_path=tmp_path / "run-batch.log")
    results = read_jsonl(tmp_path / "results.jsonl")
    assert sorted(r["custom_id"] for r in results) == sorted(line["custom_id"] for line in lines)
    tagged, report = collect_batch(ds, offline, [tmp_path / "results.jsonl"])
    assert (report.lines, report.answered, report.missing) == (8, 8, 0)

    server = request.getfixturevalue("vllm_server")
    online = pipeline.tag_dataset(
        ds, Tagger(server.url, api_key=server.api_key, max_new_tokens=MAX_NEW_TOKENS, cache=tmp_path / "online",
                   progress=False),
    )  # fmt: skip
    both = [i for i in range(8) if tagged["instag_error"][i] is None and online["instag_error"][i] is None]
    assert both, (tagged["instag_error"], online["instag_error"])
    for i in both:
        assert tagged["instag_raw_tags"][i] == online["instag_raw_tags"][i], i

    before = served_requests(server)
    again = Tagger(server.url, api_key=server.api_key, max_new_tokens=MAX_NEW_TOKENS, cache=cache, progress=False)
    retagged = pipeline.tag_dataset(ds, again)
    assert again.stats.requests == 0 and again.stats.cache_hits == 8
    assert served_requests(server) == before  # the server's own count
    assert retagged["instag_raw_tags"] == tagged["instag_raw_tags"]
