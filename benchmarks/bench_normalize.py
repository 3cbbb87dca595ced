"""Benchmark TagNormalizer.fit (and one map pass) on a synthetic pool shaped like the paper's.

The pool: N samples, about T distinct raw tags with a Zipf-like frequency, about 4.5 tags
per sample, a quarter of the rows with two user turns, 1% of rows with an instag_error.
Raw tags are concept phrases ("python code debugging") written with the surface variation
taggers produce (case, hyphens/underscores, trailing dots, word-form and plural variants),
so rule aggregation has work; a few concepts always come with their domain tag, so
association aggregation has work too. Built with pyarrow (no per-row Python objects), saved
with ``save_to_disk`` and memory-mapped back, as a real pool would be.

Fitting runs in a fresh child process; its peak RSS is the maximum of psutil samples taken
every 50 ms in a thread and of ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` at the end
(both include the interpreter, torch and the embedding model).

    python benchmarks/bench_normalize.py                              # 300K samples, 12K tags
    python benchmarks/bench_normalize.py --samples 1000000 --tags 100000
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import shutil
import sys
import tempfile
import threading
import time

import numpy as np


def _words(text: str) -> list[str]:
    return text.split()


DOMAINS = _words(
    """python java javascript sql rust math physics chemistry biology history finance marketing
    legal medical cooking travel music poetry fiction education sports gaming health fitness
    business economics philosophy psychology geography art design film linguistics statistics
    algebra geometry calculus networking security cloud database web mobile email career
    parenting gardening fashion nutrition astronomy"""
)
OBJECTS = _words(
    """code data text question problem story essay report query function equation dataset
    article recipe plan letter summary list table argument review script poem proof chart
    model strategy policy document message schedule budget product concept definition example
    outline interview lesson quiz exercise algorithm api diagram contract speech slogan
    headline caption tutorial guide note email survey resume proposal invoice itinerary
    playlist workout menu"""
)
# (noun form, -ing form, verb form): Porter merges some of them, not all, as real tags do.
ACTIVITIES = [
    ("analysis", "analyzing", "analyze"), ("generation", "generating", "generate"),
    ("writing", "writing", "write"), ("explanation", "explaining", "explain"),
    ("correction", "correcting", "correct"), ("classification", "classifying", "classify"),
    ("optimization", "optimizing", "optimize"), ("extraction", "extracting", "extract"),
    ("comparison", "comparing", "compare"), ("evaluation", "evaluating", "evaluate"),
    ("recommendation", "recommending", "recommend"), ("formatting", "formatting", "format"),
    ("debugging", "debugging", "debug"), ("calculation", "calculating", "calculate"),
    ("interpretation", "interpreting", "interpret"), ("planning", "planning", "plan"),
    ("editing", "editing", "edit"), ("summarization", "summarizing", "summarize"),
    ("conversion", "converting", "convert"), ("validation", "validating", "validate"),
    ("translation", "translating", "translate"), ("creation", "creating", "create"),
    ("review", "reviewing", "review"), ("simplification", "simplifying", "simplify"),
    ("expansion", "expanding", "expand"), ("visualization", "visualizing", "visualize"),
    ("organization", "organizing", "organize"), ("prediction", "predicting", "predict"),
    ("description", "describing", "describe"), ("definition", "defining", "define"),
]  # fmt: skip


def _variants(rng: np.random.Generator, domain: str, obj: str, activity: tuple[str, str, str]) -> list[str]:
    """The main spelling of a concept first, then 0-3 surface variants of it."""
    noun, ing, _ = activity
    main = f"{domain} {obj} {noun}"
    pool = [
        main.title(),
        f"{domain}-{obj} {noun}",
        f"{domain}_{obj}_{noun}",
        f"{domain} {obj}s {noun}",
        f"{ing} {domain} {obj}",
        f"{domain} {obj} {ing}",
        f"{main}.",
    ]
    extra = int(rng.choice(4, p=[0.35, 0.35, 0.2, 0.1]))
    picks = rng.choice(len(pool), size=extra, replace=False)
    return [main] + [pool[i] for i in sorted(picks)]


def build_vocabulary(n_tags: int, zipf: float, seed: int) -> tuple[list[str], np.ndarray, dict[int, int]]:
    """Raw tag strings, their sampling weights, and tag -> companion tag (association)."""
    rng = np.random.default_rng(seed)
    combos = [(d, o, a) for d in DOMAINS for o in OBJECTS for a in ACTIVITIES]
    order = rng.permutation(len(combos))
    tags: list[str] = [d.title() for d in DOMAINS]  # bare domains: companions below
    weights: list[float] = [1.0 / (i + 1) ** zipf for i in range(len(DOMAINS))]
    index = {tag: i for i, tag in enumerate(tags)}
    companion: dict[int, int] = {}
    concept = 0
    while len(tags) < n_tags and concept < len(combos):
        domain, obj, activity = combos[order[concept]]
        concept += 1
        weight = 1.0 / (concept + len(DOMAINS)) ** zipf
        spellings = [s for s in _variants(rng, domain, obj, activity) if s not in index]
        for rank, spelling in enumerate(spellings):
            index[spelling] = len(tags)
            tags.append(spelling)
            weights.append(weight * (0.75 if rank == 0 else 0.25 / max(len(spellings) - 1, 1)))
            if concept % 30 == 0:  # about 3% of concepts always come with their domain tag
                companion[index[spelling]] = DOMAINS.index(domain)
    if len(tags) < n_tags:
        sys.exit(f"only {len(tags)} distinct synthetic tags can be made; ask for fewer")
    tags, weights = tags[:n_tags], np.array(weights[:n_tags])
    companion = {k: v for k, v in companion.items() if k < n_tags}
    return tags, weights / weights.sum(), companion


def build_pool(n_samples: int, n_tags: int, zipf: float, seed: int, folder: str) -> None:
    """Write the synthetic pool to ``folder`` with save_to_disk."""
    import datasets
    import pyarrow as pa

    tags, weights, companion = build_vocabulary(n_tags, zipf, seed)
    rng = np.random.default_rng(seed + 1)
    per_row = 1 + rng.poisson(3.5, size=n_samples)
    picks = rng.choice(n_tags, size=int(per_row.sum()), p=weights)
    row_of_pick = np.repeat(np.arange(n_samples), per_row)
    position = np.arange(len(picks)) - np.repeat(np.cumsum(per_row) - per_row, per_row)
    two_turns = rng.random(n_samples) < 0.25
    turn = (two_turns[row_of_pick] & (position >= per_row[row_of_pick] // 2)).astype(np.int32)
    # Companion tags go right after the tag that brings them, in the same row and turn.
    partner = np.full(n_tags, -1)
    partner[list(companion)] = list(companion.values())
    extra = partner[picks] >= 0
    at = np.flatnonzero(extra) + 1
    picks = np.insert(picks, at, partner[picks[extra]])
    row_of_pick = np.insert(row_of_pick, at, row_of_pick[extra])
    turn = np.insert(turn, at, turn[extra])
    per_row = np.bincount(row_of_pick, minlength=n_samples)
    offsets = np.concatenate([[0], np.cumsum(per_row)]).astype(np.int32)
    tag_array = pa.array(tags).take(pa.array(picks))
    explanation = pa.array(["synthetic"]).take(pa.array(np.zeros(len(picks), dtype=np.int32)))
    items = pa.StructArray.from_arrays([pa.array(turn), tag_array, explanation], names=["turn", "tag", "explanation"])
    errors = pa.array(np.where(rng.random(n_samples) < 0.01, "timeout after 3 retries", None).tolist())
    table = pa.table({"instag_raw_tags": pa.ListArray.from_arrays(pa.array(offsets), items), "instag_error": errors})
    features = datasets.Features(
        {
            "instag_raw_tags": datasets.List(
                {
                    "turn": datasets.Value("int32"),
                    "tag": datasets.Value("string"),
                    "explanation": datasets.Value("string"),
                }
            ),
            "instag_error": datasets.Value("string"),
        }
    )
    ds = datasets.Dataset(datasets.table.InMemoryTable(table), info=datasets.DatasetInfo(features=features))
    ds.save_to_disk(folder)
    print(
        f"pool: {n_samples:,} samples, {len(tags):,} raw tags asked, {len(picks) / n_samples:.2f} tags/sample, "
        f"{int(two_turns.sum()):,} two-turn rows"
    )


def fit_in_child(folder: str, artifact: str, queue: multiprocessing.Queue) -> None:
    """Fit on the saved pool, apply it once, report figures through ``queue``."""
    import psutil

    process, peak, stop = psutil.Process(), [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    import datasets

    from instag_hf.normalization.normalizer import TagNormalizer

    datasets.disable_progress_bars()
    ds = datasets.load_from_disk(folder)
    start = time.perf_counter()
    normalizer = TagNormalizer().fit(ds)
    fit_seconds = time.perf_counter() - start
    fit_peak = max(peak[0], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    normalizer.save(artifact)
    start = time.perf_counter()
    mapped = ds.map(normalizer, batched=True, batch_size=10_000, keep_in_memory=True, remove_columns=ds.column_names)
    map_seconds = time.perf_counter() - start
    stop.set()
    queue.put(
        {
            "fit_seconds": fit_seconds,
            "steps": normalizer.timings,
            "fit_peak_rss": fit_peak,
            "map_seconds": map_seconds,
            "mapped_rows": len(mapped),
            "report": normalizer.report.to_dict(),
            "artifact_bytes": os.path.getsize(artifact),
            "threads": __import__("torch").get_num_threads(),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=300_000, help="rows in the pool (default 300000)")
    parser.add_argument("--tags", type=int, default=12_000, help="distinct raw tags (default 12000)")
    # 0.8: the frequency filter keeps about 70% of 12K tags at 300K samples, as in the paper.
    parser.add_argument("--zipf", type=float, default=0.8, help="Zipf exponent of tag frequency (default 0.8)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    workdir = tempfile.mkdtemp(prefix="bench_normalize_")
    try:
        start = time.perf_counter()
        build_pool(args.samples, args.tags, args.zipf, args.seed, os.path.join(workdir, "pool"))
        print(f"pool built in {time.perf_counter() - start:.1f} s")
        queue: multiprocessing.Queue = multiprocessing.get_context("spawn").Queue()
        child = multiprocessing.get_context("spawn").Process(
            target=fit_in_child,
            args=(os.path.join(workdir, "pool"), os.path.join(workdir, "normalizer.json"), queue),
        )
        child.start()
        result = queue.get()
        child.join()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    report = result["report"]
    print(f"cpus: {os.cpu_count()} (torch threads {result['threads']}), load average {os.getloadavg()}")
    print(
        f"fit: {result['fit_seconds']:.1f} s; per step: "
        + ", ".join(f"{step} {seconds:.1f} s" for step, seconds in result["steps"].items())
    )
    print(f"peak RSS of the fitting process: {result['fit_peak_rss'] / 2**20:.0f} MiB")
    print(f"map (apply to every row): {result['map_seconds']:.1f} s for {result['mapped_rows']:,} rows")
    print(f"artifact: {result['artifact_bytes'] / 2**20:.1f} MiB")
    print(f"rows {report['rows']:,} (with instag_error {report['rows_with_error']:,}), queries {report['queries']:,}")
    print(
        "vocabulary: raw {raw_tags:,} -> frequency {after_frequency:,} -> rule {after_rule:,} -> "
        "semantic {after_semantic:,} -> association {after_association:,} "
        "({association_rules:,} rules)".format(**report)
    )


if __name__ == "__main__":
    main()
