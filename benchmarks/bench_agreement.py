"""Benchmark the tag-agreement measures: 100K rows x 5 tags against 100K x 5 reference tags.

Tags are the synthetic concept phrases of ``bench_normalize.py`` (Zipf-distributed, with the
surface variants taggers write: case, hyphens, word forms), so rule keys and embeddings
have real work. Each row gets 5 tag draws for the candidate; the reference keeps each of
them with probability ``--agree``, takes a neighbour in the vocabulary (often another
spelling of the same concept, or a sibling concept) with probability ``--near``, and draws
an unrelated tag otherwise.

Reported: the exact measures alone (raw strings and rule keys), then the full measure with
semantic matching on a fresh :class:`TagMatcher` (model load, each distinct tag embedded
once, every same-row pair's similarity, one maximum bipartite matching over all rows), and
the same call again on that matcher (embeddings kept: matching alone).

    python benchmarks/bench_agreement.py                      # 100K rows, 12K distinct tags
    python benchmarks/bench_agreement.py --rows 1000000 --tags 20000
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
from bench_normalize import build_vocabulary


def build_rows(n_rows: int, per_row: int, n_tags: int, agree: float, near: float, seed: int) -> tuple[list, list]:
    tags, weights, _ = build_vocabulary(n_tags, 0.8, seed)
    rng = np.random.default_rng(seed + 1)
    picks = rng.choice(n_tags, size=(n_rows, per_row), p=weights)
    other = rng.choice(n_tags, size=(n_rows, per_row), p=weights)
    # A concept's spellings sit next to each other in the vocabulary.
    step = rng.choice([-3, -2, -1, 1, 2, 3], size=(n_rows, per_row))
    neighbour = np.clip(picks + step, 0, n_tags - 1)
    draw = rng.random((n_rows, per_row))
    reference = np.where(draw < agree, picks, np.where(draw < agree + near, neighbour, other))
    names = np.array(tags, dtype=object)
    return names[picks].tolist(), names[reference].tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows on each side (default 100000)")
    parser.add_argument("--per-row", type=int, default=5, help="tag draws per row and side (default 5)")
    parser.add_argument("--tags", type=int, default=12_000, help="distinct tags to draw from (default 12000)")
    parser.add_argument("--agree", type=float, default=0.3, help="chance a reference tag repeats the candidate's")
    parser.add_argument("--near", type=float, default=0.3, help="chance it is a neighbour of the candidate's")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import datasets

    from instag_hf.agreement import TagMatcher
    from instag_hf.normalization.steps.rule import rule_key

    datasets.disable_progress_bars()
    start = time.perf_counter()
    rule_key("warm up")  # imports nltk's stemmer: once per process, ~1-2 s, not per call
    warm_seconds = time.perf_counter() - start
    predictions, references = build_rows(args.rows, args.per_row, args.tags, args.agree, args.near, args.seed)
    distinct = len({t for row in predictions + references for t in row})
    print(f"rows: {args.rows:,} x {args.per_row} candidate tags vs {args.rows:,} x {args.per_row} reference tags; "
          f"{distinct:,} distinct tags")  # fmt: skip

    start = time.perf_counter()
    exact = TagMatcher(mode="exact").match(predictions, references).scores
    exact_seconds = time.perf_counter() - start

    matcher = TagMatcher(mode="all")
    start = time.perf_counter()
    matcher.resolved_model_id()
    full = matcher.match(predictions, references).scores
    full_seconds = time.perf_counter() - start
    embedded = len(matcher._vectors)  # what the encoder was asked for: each distinct text once

    start = time.perf_counter()
    matcher.match(predictions, references)
    again_seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"nltk import (once per process): {warm_seconds:.2f} s")
    print(f"exact only (raw + rule key): {exact_seconds:.2f} s")
    print(f"all three, fresh matcher (model load + {embedded:,} tags embedded once + matching): {full_seconds:.1f} s")
    print(f"all three again, embeddings kept (similarities + maximum matching): {again_seconds:.2f} s")
    print(f"so model load + embedding: ~{full_seconds - again_seconds:.1f} s ({embedded / (full_seconds - again_seconds):,.0f} "
          "tags/s)")  # fmt: skip
    print(f"peak RSS: {peak:,.0f} MiB")
    for kind, s in {**exact, "semantic": full["semantic"]}.items():
        print(f"  {kind:<9} micro F1 {s.micro_f1:.3f}  macro F1 {s.macro_f1:.3f}  "
              f"({s.matched:,} matched of {s.predicted:,} / {s.referenced:,})")  # fmt: skip


if __name__ == "__main__":
    main()
