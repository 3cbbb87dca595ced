"""What a Tagger holds in one process, and how it is let go.

Clients are per event loop (datasets makes one per map call and per worker); the progress
bar and the background loop of the synchronous path are per Tagger. A ``weakref.finalize``
on the Tagger calls :meth:`Runtime.close`, so a dropped Tagger closes its sessions and its
bar instead of keeping them open until exit.
"""

from __future__ import annotations

import asyncio
import threading

from instag_hf.tagging.client import TaggingClient
from instag_hf.tagging.progress import TaggingProgress


class Runtime:
    """What a Tagger holds in one process: clients per event loop, the progress bar, the
    background loop of the synchronous path. Never pickled."""

    def __init__(self) -> None:
        self.clients: dict[tuple[int, tuple[str, ...]], tuple[asyncio.AbstractEventLoop, TaggingClient]] = {}
        self.progress: TaggingProgress | None = None
        self.thread_loop: asyncio.AbstractEventLoop | None = None

    def close(self) -> None:
        for key, (loop, client) in list(self.clients.items()):
            if loop is self.thread_loop or not loop.is_running():
                close_client(loop, client)
                del self.clients[key]
        if self.thread_loop is not None:
            self.thread_loop.call_soon_threadsafe(self.thread_loop.stop)
            self.thread_loop = None
        if self.progress is not None:
            self.progress.close()
            self.progress = None


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def close_client(loop: asyncio.AbstractEventLoop, client: TaggingClient) -> None:
    """Close a client's session inside the loop that opened it."""
    if loop.is_closed():
        return
    if loop.is_running():  # the background loop of the synchronous path
        if _running_loop() is loop:  # collected on that loop's own thread: waiting would deadlock
            loop.create_task(client.close())
        else:
            asyncio.run_coroutine_threadsafe(client.close(), loop).result(timeout=10)
        return
    # An idle loop left by datasets: run it once more, in a thread of its own because this
    # thread may be running another loop.
    closer = threading.Thread(target=loop.run_until_complete, args=(client.close(),))
    closer.start()
    closer.join(timeout=10)
