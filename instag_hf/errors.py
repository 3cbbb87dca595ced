"""Every exception instag_hf raises.

Each class has a stdlib base as well as :class:`InstagError`, so callers can catch
``ValueError`` or ``ConnectionError`` without importing this module. Exceptions cross
``Dataset.map(num_proc=...)`` worker processes by pickling: every class here takes its
message as the only positional argument and keeps extra context as keyword-only
attributes, which ``__reduce__`` carries along.
"""

from __future__ import annotations

from typing import Any


class InstagError(Exception):
    """Base class of every error raised by instag_hf."""

    def __init__(self, message: str = "", **context: Any) -> None:
        super().__init__(message)
        self.context = context

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), str(self), self.context))

    def __str__(self) -> str:
        return self.args[0] if self.args else ""


def _rebuild(cls: type[InstagError], message: str, context: dict[str, Any]) -> InstagError:
    return cls(message, **context)


class ConfigurationError(InstagError, ValueError):
    """A setting or argument is invalid; the message says which and how to fix it."""


class NoEndpointError(ConfigurationError):
    """Tagging was asked for but no endpoint is configured."""


class FormatError(InstagError, ValueError):
    """The dataset's rows are in no format the tagger recognises."""


class MissingColumnError(InstagError, ValueError):
    """A column that an earlier step of the chain writes is missing."""


class EndpointError(InstagError, ConnectionError):
    """The tagging endpoint cannot be used (unreachable, or failing for every request)."""


class AuthenticationError(EndpointError, PermissionError):
    """An endpoint refused the key it was sent (HTTP 401/403), or was sent none.

    The message names the endpoint and where the key was read from; it never holds the key.
    """


class MissingExtraError(InstagError, ImportError):
    """A step needs a package of an optional extra that is not installed.

    The message is one line naming the extra: ``pip install 'instag_hf[normalize]'``.
    """


class NormalizationError(InstagError, ValueError):
    """A TagNormalizer cannot be fitted, applied, saved or loaded."""


class NotFittedError(NormalizationError):
    """A TagNormalizer was used before ``fit`` or ``load``."""


class SamplingError(InstagError, ValueError):
    """A sampling request cannot be met."""


class AgreementError(InstagError, ValueError):
    """Two taggings cannot be compared (no shared query, nothing tagged on one side)."""


class CardError(InstagError, ValueError):
    """A dataset card cannot be built from what was given."""


class HubError(InstagError, RuntimeError):
    """Pushing to, or reading from, the Hub failed; nothing half-made was left behind."""


class OutputError(InstagError, OSError):
    """A result could not be written to a local folder or file (``save``, ``instag ... -o``)."""


class CacheError(InstagError, RuntimeError):
    """The request cache file is unusable and could not be replaced; the message says how to recover."""


class BatchError(InstagError, ValueError):
    """Batch results that cannot be collected as given (lines of another dataset or other
    settings, one request answered twice differently), or a batch state file that does not
    match its requests; the message names the file and line and says what to pass instead."""


class RefreshError(InstagError, RuntimeError):
    """A scheduled refresh could not complete; the message names the target."""


def scrub_secrets(text: str, secrets: list[str] | set[str] | tuple[str, ...]) -> str:
    """``text`` with every secret replaced by ``***``: the one scrubber of error messages.

    Longest first, so a key that contains another is hidden whole; secrets shorter than 4
    characters are left alone (hiding every ``a`` would garble the message, not protect it).
    """
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


__all__ = [
    "AgreementError",
    "AuthenticationError",
    "BatchError",
    "CacheError",
    "CardError",
    "ConfigurationError",
    "EndpointError",
    "FormatError",
    "HubError",
    "InstagError",
    "MissingColumnError",
    "MissingExtraError",
    "NoEndpointError",
    "NormalizationError",
    "NotFittedError",
    "OutputError",
    "RefreshError",
    "SamplingError",
]
