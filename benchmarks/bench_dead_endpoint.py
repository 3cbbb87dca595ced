"""Benchmark: how long a map runs on after its only endpoint dies or hangs.

    .venv/bin/python benchmarks/bench_dead_endpoint.py [--rows 3000] [--fail-fast 30] [--timeout 120]

For each scenario, starts the TGI-protocol test server in its own process, tags ``--rows``
queries with ``Tagger(url, cache=False).atag`` (batch_size 100, the defaults otherwise),
and after 300 answers kills the server (SIGKILL) or stops it (SIGSTOP: connections are
accepted, nothing answers). Prints the seconds from the kill to the end of the map, the
exception that ended it, and the bound the Tagger documents: ``fail_fast_seconds`` plus a
watchdog tick for a dead server, ``timeout + fail_fast_seconds`` for a hung one.

Before issue 10 the same measurement (3,000 rows, killed after 8 s) gave 30.5 s at 128 slots,
483 s at 8 and 1,203 s at 4, and a hung server at 4 slots took hours at the default timeout.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import datasets

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from instag_hf import Tagger  # noqa: E402
from tests.servers.faults import strike  # noqa: E402
from tests.servers.tgi_server import start_tgi_server  # noqa: E402


def measure(rows: int, slots: int, how: str, fail_fast: float, timeout: float) -> tuple[float, str]:
    server = start_tgi_server(latency=0.05, max_concurrent_requests=slots)
    tagger = Tagger(server.url, cache=False, progress=False, fail_fast_seconds=fail_fast, timeout=timeout)
    ds = datasets.Dataset.from_dict({"prompt": [f"{how} {slots}: how do I sort list number {i}?" for i in range(rows)]})
    with strike(server, when=lambda: tagger.stats.answered >= 300, how=how) as struck:
        try:
            ds.map(tagger.atag, batched=True, batch_size=100)
            outcome = "the map completed (not expected)"
        except Exception as error:  # noqa: BLE001 -- what ended the map is the measurement
            outcome = f"{type(error).__name__}: {str(error)[:150]}"
        ended = time.monotonic()
    server.close()
    return ended - struck[0], outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--fail-fast", type=float, default=30.0, help="fail_fast_seconds (default: the Tagger's)")
    parser.add_argument("--timeout", type=float, default=120.0, help="request timeout (default: the Tagger's)")
    args = parser.parse_args()
    datasets.disable_progress_bars()
    print(f"{args.rows} rows, fail_fast_seconds={args.fail_fast:g}, timeout={args.timeout:g}")
    for how, slots in (("kill", 128), ("kill", 8), ("kill", 4), ("stop", 4)):
        seconds, outcome = measure(args.rows, slots, how, args.fail_fast, args.timeout)
        bound = args.fail_fast + 1 if how == "kill" else args.timeout + args.fail_fast + 1
        label = {"kill": "killed", "stop": "hung"}[how]
        print(f"server {label:6} at {slots:3} slots: map ended {seconds:6.1f} s later (bound {bound:g} s) -- {outcome}")


if __name__ == "__main__":
    main()
