"""Tagging throughput against the TGI-protocol server and its OpenAI-compatible (vLLM)
personality, as a fraction of the bound C/L.

The server (its own process, so its CPU is not counted) answers every request after
latency L (plus uniform jitter) and admits C = max_concurrent_requests in flight (429 above).
No client can tag faster than C/L rows per second. Measured in one run:

- ``ds.map(instag_hf.tag, batched=True)``: the async path; datasets overlaps batches.
- ``ds.map(Tagger(...), batched=True)``: the synchronous path; each batch waits for its
  slowest request, so slots idle at every batch boundary.
- a naive loop of ``huggingface_hub.InferenceClient.text_generation`` calls, one at a time.
- ``ds.map(Tagger(openai_url).atag, batched=True)`` against the server's OpenAI personality
  (chat completions with ``json_schema`` as vLLM serves them; requests above C wait in its
  queue, as vLLM's scheduler holds them), with the same C and L: its fraction of C/L is
  printed next to the TGI one, with their ratio.

Client CPU per request is the process CPU time (user + system) of the map divided by the
requests it sent. Run: ``python benchmarks/bench_tagging.py [--rows 5120 --latency 0.5]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="instag-bench-"))
os.environ["INSTAG_CACHE"] = "0"  # every row must reach the server

import datasets  # noqa: E402

import instag_hf  # noqa: E402
from instag_hf.tagging.prompts import TAGS_JSON_SCHEMA  # noqa: E402
from tests.servers.tgi_server import start_tgi_server  # noqa: E402


def timed_map(ds: datasets.Dataset, function, server) -> tuple[float, float, int]:
    server.reset()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    tagged = ds.map(function, batched=True, batch_size=1000)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    assert all(e is None for e in tagged["instag_error"]), "benchmark rows must all be tagged"
    return wall, cpu, server.stats()["requests"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5120)
    parser.add_argument("--latency", type=float, default=0.5, help="seconds per request (L)")
    parser.add_argument("--jitter", type=float, default=0.1, help="uniform extra seconds per request")
    parser.add_argument("--concurrency", type=int, default=128, help="server max_concurrent_requests (C)")
    parser.add_argument("--naive-requests", type=int, default=10)
    parser.add_argument(
        "--slow-rate",
        type=float,
        default=0.01,
        help="second scenario: this share of requests takes 10 x L (stragglers)",
    )
    args = parser.parse_args()
    datasets.disable_progress_bars()

    rows = [f"Benchmark query {i}: write a function that parses dates" for i in range(args.rows)]
    ds = datasets.Dataset.from_dict({"prompt": rows})
    with start_tgi_server(latency=args.latency, jitter=args.jitter, max_concurrent_requests=args.concurrency) as server:
        os.environ["INSTAG_ENDPOINT"] = server.url
        mean_latency = args.latency + args.jitter / 2
        bound = args.concurrency / mean_latency
        print(
            f"server: C={args.concurrency}, L={args.latency}s + U(0, {args.jitter})s -> bound C/L = {bound:.1f} rows/s"
        )
        print(f"rows: {args.rows}, batch_size=1000\n")

        results = {}
        for name, function in (
            ("ds.map(instag_hf.tag) [async]", instag_hf.tag),
            ("ds.map(Tagger(...)) [sync]", instag_hf.Tagger(server.url, progress=False)),
        ):
            wall, cpu, requests = timed_map(ds, function, server)
            results[name] = args.rows / wall
            print(
                f"{name:34s} {args.rows / wall:8.1f} rows/s = {args.rows / wall / bound:.3f} of C/L; "
                f"client CPU {1000 * cpu / requests:.2f} ms/request; max in flight {server.stats()['max_in_flight']}"
            )

        # Stragglers: a batch that waits for its slowest request leaves slots idle; the
        # async map keeps filling them from the other batches.
        server.set_knobs(fault_rate=args.slow_rate, faults=["slow"])
        slow_latency = args.latency * (1 - args.slow_rate) + 10 * args.latency * args.slow_rate + args.jitter / 2
        slow_bound = args.concurrency / slow_latency
        print(f"\nwith {args.slow_rate:.0%} stragglers at 10 x L: bound C/L = {slow_bound:.1f} rows/s")
        for name, function in (
            ("ds.map(instag_hf.tag) [async]", instag_hf.tag),
            ("ds.map(Tagger(...)) [sync]", instag_hf.Tagger(server.url, progress=False)),
        ):
            wall, cpu, requests = timed_map(ds, function, server)
            print(f"{name:34s} {args.rows / wall:8.1f} rows/s = {args.rows / wall / slow_bound:.3f} of C/L")
        server.set_knobs(fault_rate=0.0)

        from huggingface_hub import InferenceClient

        client = InferenceClient(base_url=server.url)
        grammar = {"type": "json", "value": {"type": "object", "properties": {"tags": TAGS_JSON_SCHEMA}}}
        start = time.perf_counter()
        for query in rows[: args.naive_requests]:
            client.text_generation(instag_hf.Tagger().template.render(query), max_new_tokens=512, grammar=grammar)
        naive = args.naive_requests / (time.perf_counter() - start)
        print(f"{'naive InferenceClient loop':34s} {naive:8.1f} rows/s = {naive / bound:.3f} of C/L")
        print(
            f"\nasync map / naive loop: {results['ds.map(instag_hf.tag) [async]'] / naive:.0f}x; "
            f"async / sync map: {results['ds.map(instag_hf.tag) [async]'] / results['ds.map(Tagger(...)) [sync]']:.2f}x"
        )

    with start_tgi_server(
        personality="openai", latency=args.latency, jitter=args.jitter, max_concurrent_requests=args.concurrency
    ) as server:
        name = "OpenAI-compatible (vLLM) [async]"
        wall, cpu, requests = timed_map(ds, instag_hf.Tagger(server.url, progress=False).atag, server)
        openai_rate = args.rows / wall
        tgi_rate = results["ds.map(instag_hf.tag) [async]"]
        print(
            f"\n{name:34s} {openai_rate:8.1f} rows/s = {openai_rate / bound:.3f} of C/L; "
            f"client CPU {1000 * cpu / requests:.2f} ms/request; max in flight {server.stats()['max_in_flight']}"
        )
        print(
            f"OpenAI-compatible / TGI: {openai_rate / bound:.3f} vs {tgi_rate / bound:.3f} of C/L "
            f"= {openai_rate / tgi_rate:.3f} (target: within 5%)"
        )


if __name__ == "__main__":
    main()
