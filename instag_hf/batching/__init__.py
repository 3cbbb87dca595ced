"""Tagging through batch files (OpenAI's Batch API, Groq, Cerebras, ``vllm run-batch``).

The other way to run the tagging step: instead of asking an endpoint query by query,

    prepare_batch(ds, tagger, "requests.jsonl")      # requests-00000.jsonl, ... (requests.py)
    ... run them: submit_batches / batch_status / download_results (api.py), or vllm run-batch
    tagged, report = collect_batch(ds, tagger, ["requests-00000.output.jsonl"])   (results.py)

``target`` says what each line asks and how its ``custom_id`` ties it back to a query;
``cached_tags`` writes the columns from the request cache, as the Tagger would.
"""

from instag_hf.batching.requests import PreparedBatch, prepare_batch
from instag_hf.batching.results import CollectReport, collect_batch

__all__ = ["CollectReport", "PreparedBatch", "collect_batch", "prepare_batch"]
