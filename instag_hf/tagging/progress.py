"""What tagging has done in this process: its counters, and the live bar that shows them
(queries/s, requests in flight, retries, errors, tokens).

The bar counts user queries as their answers arrive (from the endpoint or the cache), not
rows as batches finish: with ``atag`` many batches are in flight at once and each finishes
late, so a per-batch count would sit still for most of the run.

A tqdm bar from ``datasets.utils.tqdm``, so ``datasets.disable_progress_bars()`` and
``HF_DATASETS_DISABLE_PROGRESS_BARS=1`` silence it like every other bar of the chain.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

_REFRESH_SECONDS = 0.5  # postfix updates cost a terminal write: not on every batch


@dataclass
class TaggingStats:
    """Counters of one process, for progress bars, benchmarks, tests and the card.

    ``prompt_tokens`` and ``generated_tokens`` sum what the servers reported for every
    answered request (OpenAI ``usage``, TGI's ``x-prompt-tokens``/``x-generated-tokens``
    headers); ``unmetered`` counts answered requests whose server reported nothing.
    """

    requests: int = 0
    retries: int = 0
    cache_hits: int = 0
    answered: int = 0
    failed: int = 0
    reasked: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    unmetered: int = 0

    def count_usage(self, usage: tuple[int, int] | None) -> None:
        if usage is None:
            self.unmetered += 1
        else:
            self.prompt_tokens += usage[0]
            self.generated_tokens += usage[1]


class TaggingProgress:
    def __init__(self, stats: TaggingStats) -> None:
        from datasets.utils.tqdm import tqdm

        self.stats = stats
        self.bar = tqdm(desc="InsTag tagging", unit=" queries", dynamic_ncols=True)
        self._last = 0.0

    @classmethod
    def create(cls, enabled: bool | None, stats: TaggingStats) -> TaggingProgress | None:
        from datasets.utils.tqdm import are_progress_bars_disabled

        if enabled is False or (enabled is None and are_progress_bars_disabled()):
            return None
        return cls(stats)

    def update(self, queries: int, in_flight: int) -> None:
        self.bar.update(queries)
        now = time.monotonic()
        if now - self._last >= _REFRESH_SECONDS:
            self._last = now
            self._postfix(in_flight)

    def _postfix(self, in_flight: int, refresh: bool = True) -> None:
        s = self.stats
        self.bar.set_postfix(
            in_flight=in_flight,
            requests=s.requests,
            cached=s.cache_hits,
            retries=s.retries,
            errors=s.failed,
            prompt_tok=s.prompt_tokens,
            gen_tok=s.generated_tokens,
            refresh=refresh,
        )

    def close(self) -> None:
        # The last line stays on screen: its counts are the final ones, not the last refresh's.
        self._postfix(0, refresh=False)
        self.bar.close()
