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
  (``dictionary_encode``, what any reader of tags as sets must do: the sampler records the
  pool's tag count and coverage, which need every tag's identity); the sampler's wall and
  CPU time are printed against both, medians of ``--repeat`` interleaved rounds (the
  sampler hashes on every core, the two reads in one thread).

Peak memory per step is sampled every 50 ms (or, for a large process, at most a tenth
of the time) over this process and its children (the ``num_proc`` workers), as PSS and
anonymous PSS (see :class:`Memory`). The machine may be shared: the
load average is printed with each figure.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
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
        pause = self._interval
        while not self._stop.wait(pause):
            start = time.perf_counter()
            now = self._now()
            # Reading smaps_rollup walks the page tables under the mmap lock: ~40 ms for a
            # 7 GB process, which at a fixed 50 ms took most of a core and stalled the
            # measured code's allocations (sample at 10M rows: 5.5 s polled, 3.5 s not).
            # Polling at most a tenth of the time keeps peaks that last a second or more.
            pause = max(self._interval, 9 * (time.perf_counter() - start))
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
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own_cpu_seconds() + children.ru_utime + children.ru_stime


def own_cpu_seconds() -> float:
    """CPU seconds of this process alone (all its threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(work) -> tuple[float, float]:
    """Wall and CPU seconds of ``work()``."""
    cpu, start = own_cpu_seconds(), time.perf_counter()
    work()
    return time.perf_counter() - start, own_cpu_seconds() - cpu


def read_column(ds, column: str, hash_tags: bool) -> None:
    """Read ``column`` from Arrow into memory, batch by batch, hashing every tag to an id or not."""
    from instag_hf.analysis.tagsets import BATCH_SIZE

    for batch in ds.with_format("arrow", columns=[column]).iter(batch_size=BATCH_SIZE):
        flat = pc.list_flatten(batch.column(column)).combine_chunks()
        if hash_tags:
            pc.dictionary_encode(flat)


def compare_with_reading(ds, n: int, repeat: int) -> tuple[float, int]:
    """Print the sampler's wall and CPU time against reading its column, median of ``repeat`` rounds.

    Each round reads the column (plain, then hashed) and samples, so all three meet the
    same state of the machine. Returns the median sampling time and the rows selected.
    """
    import instag_hf

    figures: dict[str, list[tuple[float, float]]] = {"read": [], "read+hash": [], "sample": []}
    subsets = []
    for _ in range(repeat):
        figures["read"].append(timed(lambda: read_column(ds, "instag_tags", hash_tags=False)))
        figures["read+hash"].append(timed(lambda: read_column(ds, "instag_tags", hash_tags=True)))
        figures["sample"].append(timed(lambda: subsets.append(instag_hf.sample(ds, n=n))))
    selected = len(subsets[-1])
    wall = {name: statistics.median(w for w, _ in runs) for name, runs in figures.items()}
    cpu = {name: statistics.median(c for _, c in runs) for name, runs in figures.items()}
    print(f"           medians of {repeat} rounds (wall / CPU of this process, both cores):")
    for name in figures:
        print(f"           {name:<10} {wall[name]:7.2f} s / {cpu[name]:6.2f} s")
    print(
        f"sampler vs reading the tag column: {wall['sample'] / wall['read']:.1f}x (CPU {cpu['sample'] / cpu['read']:.1f}x); "
        f"vs reading and hashing it: {wall['sample'] / wall['read+hash']:.2f}x (CPU {cpu['sample'] / cpu['read+hash']:.2f}x)"
    )
    return wall["sample"], selected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the pool (default 1000000)")
    parser.add_argument("--tags", type=int, default=100_000, help="distinct raw spellings (default 100000)")
    parser.add_argument("--zipf", type=float, default=0.8, help="Zipf exponent of tag frequency (default 0.8)")
    parser.add_argument("--num-proc", type=int, default=2, help="processes of the apply map (default 2)")
    parser.add_argument("--n", type=int, default=6000, help="rows to sample (default 6000)")
    parser.add_argument(
        "--repeat", type=int, default=3, help="rounds of read, read+hash and sample, medians printed (default 3)"
    )
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

    def step(name: str, start: float, seconds: float | None = None) -> None:
        """Record a step that began at ``start``; its time is ``seconds`` when given (a median)."""
        elapsed = time.perf_counter() - start if seconds is None else seconds
        figures.append((name, elapsed, memory.mark(), os.getloadavg()))
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

        start = time.perf_counter()
        sampled, selected = compare_with_reading(ds, args.n, args.repeat)
        # The step's time is the median sampling time; its memory peak and CPU cover every round.
        step("sample", start, seconds=sampled)
        print(f"           {selected:,} rows selected")
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
