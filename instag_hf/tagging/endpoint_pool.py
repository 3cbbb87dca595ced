"""Spreading requests over endpoints without overloading any of them.

Each endpoint has an adaptive bound on requests in flight (AIMD, as TCP does): it starts
at the server's ``max_concurrent_requests`` (TGI's ``/info``) or a modest default, halves on
429 "Model is overloaded" and on timeouts — once per round trip: only a rejection of a
request sent after the last decrease counts, so one burst of rejections counts once — and
grows back by one slot per bound's worth of
successes, never above the server's limit. A request goes to the endpoint with the most
free slots. An endpoint whose connections keep failing is set aside for a cooling-off time
that doubles while it stays down, then tried again.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from instag_hf.tagging.servers import ServerInfo

logger = logging.getLogger(__name__)

#: In-flight bound for a server that does not say its own (llama.cpp, OpenAI-compatible).
DEFAULT_CONCURRENCY = 8
_SET_ASIDE_AFTER = 3  # consecutive connection failures
_COOL_OFF_FIRST, _COOL_OFF_MAX = 2.0, 60.0


@dataclass
class EndpointSlot:
    """One endpoint's live state inside one event loop."""

    info: ServerInfo
    max_limit: int
    limit: float = 0.0
    in_flight: int = 0
    failures: int = 0
    down_until: float = 0.0
    cool_off: float = _COOL_OFF_FIRST
    last_decrease: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        self.limit = float(self.max_limit)

    def free(self, now: float) -> float:
        if now < self.down_until:
            return 0.0
        return int(self.limit) - self.in_flight


class EndpointPool:
    """Hands out endpoint slots; all waiting happens here.

    Args:
        infos: the detected endpoints.
        concurrency: an optional cap on in-flight requests per endpoint (below the server's).
    """

    def __init__(self, infos: list[ServerInfo], concurrency: int | None = None) -> None:
        self.slots = [EndpointSlot(info, _max_limit(info, concurrency)) for info in infos]
        # Plain futures, not an asyncio.Condition: when a map is stopped, hundreds of waiting
        # requests are cancelled at once, and each cancelled Condition.wait() must take the
        # lock back before it can end; that left tasks "cancelling" forever and hung the map
        # (seen with 128 slots and a killed server). Between two awaits nothing else runs, so
        # checking a slot and taking it needs no lock.
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def in_flight(self) -> int:
        return sum(slot.in_flight for slot in self.slots)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[EndpointSlot]:
        """Wait for a free slot on the best endpoint and hold it for one request."""
        loop = asyncio.get_running_loop()
        while True:
            now = time.monotonic()
            best = max(self.slots, key=lambda s: s.free(now))
            if best.free(now) >= 1:
                break
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            wake = [s.down_until - now for s in self.slots if s.down_until > now]
            # An endpoint set aside comes back by itself: wake up when its cooling-off ends.
            timer = loop.call_later(min(wake), _wake, waiter) if wake else None
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake_next()  # woken, then cancelled: the wake-up goes to the next one
                raise
            finally:
                if timer is not None:
                    timer.cancel()
        best.in_flight += 1
        try:
            yield best
        finally:
            best.in_flight -= 1
            self._wake_next()

    def _wake_next(self) -> None:
        # One slot freed, one waiter woken: waking all would wake every waiting request of
        # the whole map (thousands) on each answer, quadratic CPU.
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():  # cancelled, or woken by its timer: skip it
                waiter.set_result(None)
                return

    def succeeded(self, slot: EndpointSlot) -> None:
        slot.failures = 0
        slot.cool_off = _COOL_OFF_FIRST
        if slot.limit < slot.max_limit:
            slot.limit = min(slot.max_limit, slot.limit + 1.0 / slot.limit)

    def overloaded(self, slot: EndpointSlot, sent_at: float) -> None:
        """A 429 or a timeout of a request sent at ``sent_at``: the server has less room than we thought."""
        if sent_at >= slot.last_decrease:
            slot.limit = max(1.0, slot.limit / 2)
            slot.last_decrease = time.monotonic()
            logger.debug("%s overloaded: in-flight bound now %d", slot.info.url, int(slot.limit))

    def unreachable(self, slot: EndpointSlot) -> None:
        """A refused or dropped connection: set the endpoint aside once it keeps happening."""
        slot.failures += 1
        if slot.failures >= _SET_ASIDE_AFTER and time.monotonic() >= slot.down_until:
            slot.down_until = time.monotonic() + slot.cool_off
            logger.warning("Endpoint %s keeps failing; set aside for %.0fs", slot.info.url, slot.cool_off)
            slot.cool_off = min(slot.cool_off * 2, _COOL_OFF_MAX)


def _max_limit(info: ServerInfo, cap: int | None) -> int:
    limit = info.max_concurrent_requests or DEFAULT_CONCURRENCY
    return max(1, min(limit, cap) if cap else limit)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
