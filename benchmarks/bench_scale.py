"""Benchmark the chain at the sizes people curate: normalize, analyze and sample 1M-10M rows.

    python benchmarks/bench_scale.py                         # 1M rows, ~100K raw spellings
    python benchmarks/bench_scale.py --rows 10000000         # the 10M-row figure
    python benchmarks/bench_scale.py --no-semantic           # without the embedding model

The pool is shaped like real tag data: ``--tags`` raw spellings (concept phrases and their
surface variants, from ``bench_normalize.build_vocabulary``) drawn with Zipf frequencies,
1-12 tags per query, a quarter of the rows with two user turns, 1% with an ``instag_error``,
a few concepts that always come with their domain tag. It is written as parquet in row
groups (never whole in memory), loaded with ``Dataset.from_parquet`` (datasets turns it
into an Arrow file and memory-maps it, as ``load_dataset`` does) and then, in this process:

- ``TagNormalizer().fit(ds)`` (per-step times; the semantic step embeds every group name
  once with the packaged all-MiniLM-L6-v2 on CPU),
- ``ds.map(normalizer, batched=True, num_proc=--num-proc)`` (the apply),
- ``instag_hf.analyze(ds)`` and ``instag_hf.sample(ds, n=6000)``,
- the time to read the ``instag_tags`` column from Arrow, two ways: bringing every byte of
  it into memory (``combine_chunks``), and that plus hashing every tag string to an id
  (``dictionary_encode``, what any reader of tags as sets must do); the sampler's cost is
  printed against both.

Peak memory per step is sampled every 50 ms over this process and its children (the
``num_proc`` workers), as PSS and anonymous PSS (see :class:`Memory`). The machine may be shared: the
load average is printed with each figure.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_normalize import build_vocabulary  # noqa: E402

EXPLANATIONS = [
    "The user asks for this directly.",
    "Needed to answer the question.",
    "The query mentions it explicitly.",
    "Implied by the requested output.",
]
ROW_GROUP = 500_000


class Memory:
    """Peak PSS and anonymous PSS of this process tree, sampled in a thread between marks.

    PSS (proportional set size, from ``/proc/<pid>/smaps_rollup``) splits a page shared by
    several processes among them, so the ``num_proc`` workers forked from this process are
    not charged again for its pages, as a sum of RSS would. Anonymous PSS leaves out
    file-backed pages: the memory-mapped Arrow files, which the kernel drops when it needs room.
    """

    def __init__(self, interval: float = 0.05) -> None:
        self._root = psutil.Process()
        self._interval = interval
        self._lock = threading.Lock()
        self._peak = (0, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _now(self) -> tuple[int, int]:
        pss = anon = 0
        for process in [self._root, *self._root.children(recursive=True)]:
            try:
                with open(f"/proc/{process.pid}/smaps_rollup") as rollup:
                    fields = dict(line.split(":", 1) for line in rollup if line.startswith(("Pss:", "Pss_Anon:")))
            except OSError:
                continue
            pss += int(fields.get("Pss", "0 kB").split()[0]) * 1024
            anon += int(fields.get("Pss_Anon", "0 kB").split()[0]) * 1024
        return pss, anon

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            now = self._now()
            with self._lock:
                self._peak = (max(self._peak[0], now[0]), max(self._peak[1], now[1]))

    def mark(self) -> tuple[int, int]:
        """Peak (PSS, anonymous PSS) in bytes since the last mark."""
        now = self._now()
        with self._lock:
            peak = (max(self._peak[0], now[0]), max(self._peak[1], now[1]))
            self._peak = now
        return peak

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def write_pool(path: Path, rows: int, n_tags: int, zipf: float, seed: int) -> None:
    """The synthetic pool as parquet, one row group of ``ROW_GROUP`` rows at a time."""
    from instag_hf.columns import RAW_TAGS_TYPE

    tags, weights, companion = build_vocabulary(n_tags, zipf, seed)
    tag_strings = pa.array(tags, pa.string())
    cumulative = np.cumsum(weights)
    partner = np.full(n_tags, -1)
    partner[list(companion)] = list(companion.values())
    explanations = pa.array(EXPLANATIONS)
    rng = np.random.default_rng(seed + 1)
    schema = pa.schema([("instag_raw_tags", RAW_TAGS_TYPE), ("instag_error", pa.string())])
    occurrences = 0
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, ROW_GROUP):
            size = min(ROW_GROUP, rows - start)
            per_row = np.minimum(1 + rng.poisson(3.5, size=size), 12)
            picks = np.minimum(np.searchsorted(cumulative, rng.random(int(per_row.sum()))), n_tags - 1)
            row_of = np.repeat(np.arange(size), per_row)
            position = np.arange(len(picks)) - np.repeat(np.cumsum(per_row) - per_row, per_row)
            two_turns = rng.random(size) < 0.25
            turn = (two_turns[row_of] & (position >= per_row[row_of] // 2)).astype(np.int32)
            # A companion goes right after the tag that brings it (same row, same turn), if
            # the row still has room under 12 tags.
            extra = (partner[picks] >= 0) & (per_row[row_of] < 12)
            at = np.flatnonzero(extra) + 1
            picks = np.insert(picks, at, partner[picks[extra]])
            row_of, turn = np.insert(row_of, at, row_of[extra]), np.insert(turn, at, turn[extra])
            offsets = np.zeros(size + 1, dtype=np.int32)
            np.cumsum(np.bincount(row_of, minlength=size), out=offsets[1:])
            items = pa.StructArray.from_arrays(
                [
                    pa.array(turn),
                    tag_strings.take(pa.array(picks)),
                    explanations.take(pa.array(rng.integers(0, len(EXPLANATIONS), len(picks)))),
                ],
                fields=list(RAW_TAGS_TYPE.value_type),
            )
            errors = pa.array(np.where(rng.random(size) < 0.01, "timeout after 3 retries", None).tolist(), pa.string())
            raw = pa.ListArray.from_arrays(pa.array(offsets), items, type=RAW_TAGS_TYPE)
            writer.write_table(pa.table({"instag_raw_tags": raw, "instag_error": errors}, schema=schema))
            occurrences += len(picks)
    print(
        f"pool: {rows:,} rows, {n_tags:,} raw spellings asked, {occurrences / rows:.2f} tags/row, "
        f"parquet {path.stat().st_size / 2**20:,.0f} MiB"
    )


def cpu_seconds() -> float:
    """CPU seconds of this process and its ended children (the ``num_proc`` workers).

    On a shared machine wall time follows the load; CPU time much less so.
    """
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def read_seconds(ds, column: str) -> tuple[float, float]:
    """Seconds to read ``column`` into memory, and to read it and hash every tag to an id."""
    from instag_hf.analysis.tagsets import BATCH_SIZE

    reader = ds.select_columns([column]).with_format("arrow")
    start = time.perf_counter()
    for batch in reader.iter(batch_size=BATCH_SIZE):
        pc.list_flatten(batch.column(column)).combine_chunks()
    copied = time.perf_counter() - start
    start = time.perf_counter()
    for batch in reader.iter(batch_size=BATCH_SIZE):
        pc.dictionary_encode(pc.list_flatten(batch.column(column)).combine_chunks())
    return copied, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the pool (default 1000000)")
    parser.add_argument("--tags", type=int, default=100_000, help="distinct raw spellings (default 100000)")
    parser.add_argument("--zipf", type=float, default=0.8, help="Zipf exponent of tag frequency (default 0.8)")
    parser.add_argument("--num-proc", type=int, default=2, help="processes of the apply map (default 2)")
    parser.add_argument("--n", type=int, default=6000, help="rows to sample (default 6000)")
    parser.add_argument("--no-semantic", action="store_true", help="fit without the embedding step")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", help="where the pool and the Arrow files go (default: a temp dir, removed)")
    args = parser.parse_args()

    import datasets

    import instag_hf
    from instag_hf import TagNormalizer

    datasets.disable_progress_bars()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_scale_"))
    workdir.mkdir(parents=True, exist_ok=True)
    memory = Memory()
    figures: list[tuple[str, float, tuple[int, int], tuple[float, float, float]]] = []

    cpu = [cpu_seconds()]

    def step(name: str, start: float) -> None:
        figures.append((name, time.perf_counter() - start, memory.mark(), os.getloadavg()))
        seconds, (rss, anon), load = figures[-1][1:]
        cpu.append(cpu_seconds())
        print(
            f"{name:<10} {seconds:8.1f} s  cpu {cpu[-1] - cpu[-2]:7.1f} s   peak PSS {rss / 2**30:5.2f} GiB, "
            f"anon {anon / 2**30:5.2f} GiB   load {load[0]:.1f}",
            flush=True,
        )

    try:
        start = time.perf_counter()
        write_pool(workdir / "pool.parquet", args.rows, args.tags, args.zipf, args.seed)
        step("build", start)
        start = time.perf_counter()
        ds = datasets.Dataset.from_parquet(str(workdir / "pool.parquet"), cache_dir=str(workdir / "cache"))
        step("load", start)

        start = time.perf_counter()
        normalizer = TagNormalizer(semantic_aggregation=not args.no_semantic).fit(ds)
        step("fit", start)
        print("           per step: " + ", ".join(f"{k} {v:.1f} s" for k, v in normalizer.timings.items()))
        r = normalizer.report
        print(
            f"           vocabulary: raw {r.raw_tags:,} -> frequency {r.after_frequency:,} -> rule {r.after_rule:,} "
            f"-> semantic {r.after_semantic:,} -> association {r.after_association:,}"
        )

        start = time.perf_counter()
        ds = ds.map(normalizer, batched=True, batch_size=10_000, num_proc=args.num_proc)
        step("apply", start)

        start = time.perf_counter()
        stats = instag_hf.analyze(ds)
        step("analyze", start)
        print(f"           {stats.unique_tags:,} tags, {stats.mean_tags:.2f} tags/row")

        copied, hashed = read_seconds(ds, "instag_tags")
        step("read", time.perf_counter() - copied - hashed)
        start = time.perf_counter()
        subset = instag_hf.sample(ds, n=args.n)
        step("sample", start)
        sampled = figures[-1][1]
        print(f"           {len(subset):,} rows selected")
        print(
            f"sampler {sampled:.2f} s vs reading the tag column {copied:.2f} s (ratio {sampled / copied:.1f}x), "
            f"vs reading and hashing it {hashed:.2f} s (ratio {sampled / hashed:.1f}x)"
        )
        chain = sum(seconds for name, seconds, _, _ in figures if name in ("fit", "apply", "sample"))
        peak = max(rss for name, _, (rss, _), _ in figures if name not in ("build",))
        peak_anon = max(anon for name, _, (_, anon), _ in figures if name not in ("build",))
        print(
            f"fit + apply + sample: {chain:.1f} s; peak PSS {peak / 2**30:.2f} GiB (anon {peak_anon / 2**30:.2f} GiB); "
            f"{os.cpu_count()} cpus"
        )
    finally:
        memory.stop()
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
