"""Benchmark: instag_hf.sample against Algorithm 1 written with plain Python sets.

    .venv/bin/python benchmarks/bench_sampling.py [--rows 1000000] [--tags 6600] [--n 6000]

Builds a memory-mapped Dataset (an Arrow file, as ``load_dataset`` leaves them) of Zipf-like
tags, about 4.5 per row, then times in one process:

- ``instag_hf.sample(ds, n)`` end to end: reading the tag column from Arrow batches into
  integer arrays, the passes, and ``ds.select``;
- the plain implementation: the tag lists as Python objects, sets, a sort by size, and the
  passes of Algorithm 1 as the paper writes them.

Both must return the same row indices. Prints the figures, the speed-up and the peak RSS
growth of each (polled every millisecond, after the Arrow pages were read once so that
neither side is charged for paging the file in). The machine may be shared: figures are
the best (and median) of ``--repeat`` runs for instag_hf, one run for the slow side.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.sampling.algorithm_1 import plain_algorithm_1  # noqa: E402

WORDS = ["math", "coding", "writing", "reasoning", "translation", "roleplay", "history", "biology", "physics"]


def build_dataset(rows: int, tags: int, folder: Path, seed: int = 0):
    """A Dataset of ``rows`` rows with Zipf-distributed, de-duplicated tags per row."""
    from datasets import Dataset

    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, tags + 1) ** 1.1
    weights /= weights.sum()
    drawn = 1 + rng.poisson(3.8, size=rows)
    row_of = np.repeat(np.arange(rows, dtype=np.int64), drawn)
    tag_of = rng.choice(tags, size=row_of.size, p=weights)
    # Keep each (row, tag) once, in the order drawn.
    _, first = np.unique(row_of * tags + tag_of, return_index=True)
    first.sort()
    row_of, tag_of = row_of[first], tag_of[first]
    offsets = np.zeros(rows + 1, dtype=np.int32)
    np.cumsum(np.bincount(row_of, minlength=rows), out=offsets[1:])
    names = pa.array([f"{WORDS[i % len(WORDS)]} topic {i}" for i in range(tags)])
    values = names.take(pa.array(tag_of))
    column = pa.ListArray.from_arrays(pa.array(offsets), values)
    table = pa.table({"id": pa.array(np.arange(rows)), "instag_tags": column})
    path = folder / "pool.arrow"
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=100_000)
    return Dataset.from_file(str(path))


class PeakRss:
    """Peak resident-set growth while the block runs (a thread polls psutil)."""

    def __enter__(self) -> PeakRss:  # noqa: PYI034 (typing.Self needs Python 3.11)
        gc.collect()
        self._process = psutil.Process()
        self.start = self.peak = self._process.memory_info().rss
        self._running = True
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        while self._running:
            self.peak = max(self.peak, self._process.memory_info().rss)
            time.sleep(0.001)

    def __exit__(self, *exc: object) -> None:
        self._running = False
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)

    @property
    def delta_mb(self) -> float:
        return (self.peak - self.start) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--tags", type=int, default=6_600)
    parser.add_argument("--n", type=int, default=6_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="instag-bench-") as tmp:
        os.environ.setdefault("HF_HOME", tmp)  # before datasets is imported: no real cache touched
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
        import datasets

        import instag_hf

        datasets.disable_progress_bars()
        began = time.perf_counter()
        ds = build_dataset(args.rows, args.tags, Path(tmp))
        column = ds.data.column("instag_tags")
        occurrences = int(pc.sum(pc.list_value_length(column)).as_py())
        distinct = len(pc.unique(pc.list_flatten(column)))  # also pages the whole column in
        print(
            f"dataset: {len(ds):,} rows, {distinct:,} distinct tags, {occurrences / len(ds):.2f} tags per row, "
            f"{occurrences:,} tag occurrences (built in {time.perf_counter() - began:.1f}s)"
        )

        fast_times, fast_mem = [], []
        for _ in range(args.repeat):
            with PeakRss() as mem:
                began = time.perf_counter()
                subset = instag_hf.sample(ds, args.n)
                fast_times.append(time.perf_counter() - began)
            fast_mem.append(mem.delta_mb)
        # numpy registers its buffers with tracemalloc: this peak is the arrays sample() holds.
        tracemalloc.start()
        instag_hf.sample(ds, args.n)
        traced_peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        fast_indices = list(subset["id"])
        info = instag_hf.selection_info(subset)
        fast, median = min(fast_times), statistics.median(fast_times)
        print(
            f"instag_hf.sample:   {fast:8.3f} s best, {median:.3f} s median of {args.repeat} runs; "
            f"{info.n_selected} rows, {info.passes} passes, coverage {info.coverage:.1%}, "
            f"{info.mean_tags:.2f} tags per row"
        )
        print(
            f"                    peak RSS +{max(fast_mem):.0f} MB (largest over the runs), numpy/Python "
            f"peak {traced_peak:.0f} MB = {traced_peak * 2**20 / occurrences:.1f} bytes per tag occurrence"
        )

        with PeakRss() as mem:
            began = time.perf_counter()
            tag_lists = ds.data.column("instag_tags").to_pylist()
            loaded = time.perf_counter()
            plain_indices = plain_algorithm_1(tag_lists, args.n)
            done = time.perf_counter()
        del tag_lists
        plain_load, plain_algo = loaded - began, done - loaded
        plain = plain_load + plain_algo
        print(
            f"plain Python sets:  {plain:8.3f} s  (to Python lists {plain_load:.3f} s + Algorithm 1 "
            f"{plain_algo:.3f} s), peak RSS +{mem.delta_mb:.0f} MB"
        )

        assert fast_indices == plain_indices, "instag_hf.sample and the plain implementation disagree"
        print("indices: identical")
        print(
            f"speed-up: {plain / fast:.1f}x end to end, {plain_algo / fast:.1f}x against the plain "
            f"algorithm alone (its Python lists given for free)"
        )
        print(
            f"peak RSS growth: instag_hf {max(fast_mem):.0f} MB, plain implementation {mem.delta_mb:.0f} MB "
            f"({mem.delta_mb * 2**20 / occurrences:.0f} bytes per tag occurrence)"
        )


if __name__ == "__main__":
    main()
