"""The one retry policy: what is retried, how often, and how long to wait.

Modelled on ``huggingface_hub.utils.http_backoff``: exponential backoff with full jitter,
``Retry-After`` honoured, a bounded number of attempts. Every request the tagger sends goes
through :meth:`RetryPolicy.decide`; no retry constant lives anywhere else.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from instag_hf.errors import ConfigurationError

#: Status codes worth another attempt: overloaded (429), TGI's generation error (424) and
#: server-side failures. 4xx validation errors (400, 413, 422) are the request's fault and
#: become per-row errors at once.
RETRYABLE_STATUS = frozenset({408, 424, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """How failed requests are retried.

    Args:
        max_attempts: attempts per request, the first one included.
        base_delay: seconds before the second attempt; doubled for each further one.
        max_delay: cap on one wait (backoff and ``Retry-After`` alike).
        jitter: fraction of each backoff drawn at random, so that many clients that failed
            together do not retry together.

    Example:
        >>> RetryPolicy(max_attempts=3).decide(attempt=1, status=503, retry_after=None) is not None
        True
    """

    max_attempts: int = 6
    base_delay: float = 0.5
    max_delay: float = 30.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigurationError(f"RetryPolicy.max_attempts must be >= 1, got {self.max_attempts}")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ConfigurationError("RetryPolicy delays must be >= 0")
        if not 0 <= self.jitter <= 1:
            raise ConfigurationError(f"RetryPolicy.jitter must be within [0, 1], got {self.jitter}")

    def is_retryable(self, status: int | None) -> bool:
        """``status`` None stands for a timeout or a connection that failed or dropped."""
        return status is None or status in RETRYABLE_STATUS

    def decide(self, attempt: int, status: int | None, retry_after: float | None) -> float | None:
        """Seconds to wait before the next attempt, or None when there is none.

        Args:
            attempt: how many attempts were made so far (1 after the first failure).
            status: the HTTP status of the failed attempt, None for timeouts and broken
                connections.
            retry_after: the server's ``Retry-After`` in seconds, when it sent one.
        """
        if attempt >= self.max_attempts or not self.is_retryable(status):
            return None
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_delay)
        backoff = min(self.base_delay * (2 ** (attempt - 1)), self.max_delay)
        return backoff * (1 - self.jitter) + random.uniform(0, backoff * self.jitter)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds form; HTTP dates are rare here)."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None
