"""What a Tagger holds in one process, and how it is let go.

Clients are per event loop (datasets makes one per map call and per worker); the progress
bar and the background loop of the synchronous path are per Tagger. A ``weakref.finalize``
on the Tagger calls :meth:`Runtime.close`, so a dropped Tagger closes its sessions and its
bar instead of keeping them open until exit.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from instag_hf.tagging.client import TaggingClient
from instag_hf.tagging.progress import TaggingProgress
from instag_hf.tagging.servers import ServerInfo, identities


class Runtime:
    """What a Tagger holds in one process: clients per event loop, the progress bar, the
    background loop of the synchronous path. Never pickled."""

    def __init__(self) -> None:
        self.clients: dict[tuple[int, tuple[str, ...]], tuple[asyncio.AbstractEventLoop, TaggingClient]] = {}
        self.progress: TaggingProgress | None = None
        self.thread_loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def client(
        self, endpoints: tuple[str, ...], infos: list[ServerInfo], make: Callable[[], TaggingClient]
    ) -> TaggingClient:
        """The running loop's client for ``endpoints``, made anew when what answers changed."""
        loop = asyncio.get_running_loop()
        entry = self.clients.get((id(loop), endpoints))
        if entry is not None and entry[0] is loop:
            if identities(entry[1].infos) == identities(infos) and not entry[1].stopped:
                return entry[1]
            # Another model answers there now (the synchronous path keeps its loop): a client
            # keyed on the old identity would file the new model's answers under the old one.
            # Or the client declared its endpoints dead: its map has ended, a new one starts afresh.
            close_client(loop, entry[1])
            del self.clients[(id(loop), endpoints)]
        # datasets makes a new event loop per map call and leaves the old one idle.
        for key, (old, client) in list(self.clients.items()):
            if old.is_closed() or not old.is_running():
                close_client(old, client)
                del self.clients[key]
        client = make()
        self.clients[(id(loop), endpoints)] = (loop, client)
        return client

    def background_loop(self) -> asyncio.AbstractEventLoop:
        """The loop the synchronous path runs its batches in, on a daemon thread of its own."""
        with self._lock:
            if self.thread_loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="instag-tagger", daemon=True).start()
                self.thread_loop = loop
            return self.thread_loop

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
