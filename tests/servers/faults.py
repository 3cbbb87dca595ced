"""Outages on cue: kill or freeze a server process while a map is running.

Shared by the reliability tests and ``benchmarks/bench_dead_endpoint.py``, so the benchmark's
figures come from the same outage the tests assert on.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any


@contextlib.contextmanager
def strike(server: Any, *, when: Callable[[], bool], how: str) -> Iterator[list[float]]:
    """Kill (``how="kill"``: SIGKILL, a crash) or freeze (``"stop"``: SIGSTOP, a hung server
    that keeps its connections) ``server.process`` from a thread once ``when()`` holds.

    Yields a list that receives the ``time.monotonic()`` of the strike. On exit the thread is
    joined and a frozen process is resumed, so the server can be closed.
    """
    if how not in ("kill", "stop"):
        raise ValueError(f"how must be 'kill' or 'stop', got {how!r}")
    struck: list[float] = []
    done = threading.Event()

    def run() -> None:
        while not when():
            if done.wait(0.01):  # the block ended before the cue: nothing to strike
                return
        os.kill(server.process.pid, signal.SIGKILL if how == "kill" else signal.SIGSTOP)
        struck.append(time.monotonic())

    thread = threading.Thread(target=run, name="strike", daemon=True)
    thread.start()
    try:
        yield struck
    finally:
        done.set()
        thread.join()
        if how == "stop" and struck:
            os.kill(server.process.pid, signal.SIGCONT)
