"""The one place that turns ``huggingface_hub``'s errors into ours, each saying what to do.

Every call that reads from or writes to the Hub (:mod:`~instag_hf.dataset_io`,
:mod:`~instag_hf.refresh.runner`, :mod:`~instag_hf.publishing.hub`) catches
:data:`HUB_ERRORS` and raises :func:`hub_error`'s answer, so a 401 or a dropped connection
reads the same wherever it happened. Secrets (the token) never reach a message.

    >>> try:
    ...     HfApi().dataset_info("me/data")
    ... except HUB_ERRORS as error:
    ...     raise hub_error(error, "read the revision of 'me/data'", repo_id="me/data") from error
"""

from __future__ import annotations

from typing import Any

import huggingface_hub
from httpx2 import TransportError
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    HFValidationError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from instag_hf.errors import ConfigurationError, HubError, InstagError, scrub_secrets

#: What a Hub call may raise that :func:`hub_error` explains: the HTTP client's connection
#: errors, huggingface_hub's typed HTTP errors, a bad repo id. (A call that also reads a
#: downloaded file adds ``OSError``, which :func:`hub_error` explains too.)
HUB_ERRORS = (TransportError, HfHubHTTPError, HFValidationError)

__all__ = [
    "HUB_ERRORS",
    "EntryNotFoundError",
    "RepositoryNotFoundError",
    "RevisionNotFoundError",
    "TransportError",
    "hub_error",
]


def hub_error(
    error: BaseException,
    what: str,
    *,
    repo_id: str | None = None,
    revision: str | None = None,
    secrets: list[str] | None = None,
    then: str = "",
    writing: bool = False,
) -> InstagError:
    """Our error for ``error``, raised by a Hub call made to ``what``.

    Args:
        error: What huggingface_hub (or its HTTP client) raised.
        what: What could not be done, e.g. ``"push to me/data"``, ``"read the revision of 'me/data'"``.
        repo_id: The repo the call was about (kept on the error, named in the advice).
        revision: The revision asked for, named when the Hub has no such revision.
        secrets: Texts to keep out of the message (default: the token huggingface_hub uses).
        then: What to do after fixing the cause, or what state things are in
            (``"Nothing was committed."``), appended to the message.
        writing: The call writes (a push): a missing repo is the Hub refusing, not a typo in
            a source to read.

    Returns:
        A :class:`~instag_hf.errors.ConfigurationError` when the request names something
        that does not exist (repo, revision, bad id), else a
        :class:`~instag_hf.errors.HubError` carrying ``status`` when the Hub answered one.
    """
    hidden = secrets if secrets is not None else [huggingface_hub.get_token() or ""]
    context: dict[str, Any] = {"repo_id": repo_id} if repo_id is not None else {}
    tail = f" {then}" if then else ""
    endpoint = huggingface_hub.constants.ENDPOINT
    if isinstance(error, TransportError):
        detail = scrub_secrets(f"{type(error).__name__}: {error}".rstrip(": "), hidden)
        return HubError(
            f"Cannot reach the Hub at {endpoint} to {what} ({detail}): check the network or HF_ENDPOINT.{tail}",
            **context,
        )
    if isinstance(error, RevisionNotFoundError):
        return ConfigurationError(f"Dataset {repo_id!r} has no revision {revision!r}.{tail}", **context)
    if isinstance(error, (RepositoryNotFoundError, HFValidationError)) and not writing:
        return ConfigurationError(not_found(repo_id or "?") + tail, **context)
    if isinstance(error, EntryNotFoundError):
        return HubError(f"Cannot {what}: the Hub has no such file there.{tail}", status=404, **context)
    if isinstance(error, HfHubHTTPError):
        status = error.response.status_code if error.response is not None else None
        detail = scrub_secrets(error.server_message or first_line(error), hidden)
        return HubError(_advice(status, what, repo_id, detail) + tail, status=status, **context)
    return HubError(f"Cannot {what}: {scrub_secrets(first_line(error), hidden)}.{tail}", **context)


def _advice(status: int | None, what: str, repo_id: str | None, detail: str) -> str:
    repo = repo_id or "the repo"
    if status == 401:
        return (f"The Hub did not accept the token (401: {detail}) when trying to {what}. Log in with "
                "`hf auth login`, set HF_TOKEN, or pass token=... (a write token to push).")  # fmt: skip
    if status == 403:
        return (f"The token may not {what} (403: {detail}). Use a write token of '{repo.split('/')[0]}' "
                "or of a member of that organisation (a read token is enough to read).")  # fmt: skip
    if status == 404:
        return (f"The Hub found no dataset repo {repo} that this token can see (404: {detail}). Check the "
                "repo id and that it is a dataset repo, not a model or a Space.")  # fmt: skip
    if status in (409, 412):
        return f"{repo} changed while trying to {what} ({status}: {detail}); do it again to work on the new head."
    if status is not None and status >= 500:
        return f"The Hub at {huggingface_hub.constants.ENDPOINT} failed ({status}: {detail}). Try again later."
    return f"The Hub refused to {what} ({status}: {detail})."


def not_found(repo_id: str) -> str:
    """What to say when ``repo_id`` is neither a local path nor a dataset the Hub shows us."""
    return (
        f"Dataset {repo_id!r} is neither a local file or folder nor a dataset on the Hub "
        "(check the spelling, the HF_ENDPOINT and that HF_TOKEN can read it)."
    )


def first_line(error: BaseException) -> str:
    """The first line of ``error``'s text, or its type's name when it has none."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
