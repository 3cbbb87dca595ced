"""``instag batch submit / status / download``: the requests files at an OpenAI-compatible Batch API.

The calls are OpenAI's (Files and Batch API): ``POST /v1/files`` (multipart, purpose
``batch``), ``POST /v1/batches`` (``endpoint`` ``/v1/chat/completions``, ``completion_window``
``24h``), ``GET /v1/batches/{id}``, ``GET /v1/files/{id}/content``. Groq and Cerebras
answer the same calls. The key comes from the environment as for tagging
(``INSTAG_API_KEY``, or the variable ``--api-key-env`` names) and is never written down.

Every call that learns an id writes it into the state file (:mod:`~instag_hf.batching.state`)
at once, so ``submit`` run again submits only what was not yet, ``status`` is a read that
may be repeated at any time, and a new session finds every batch from the file alone.
GETs are retried by the one :class:`~instag_hf.tagging.retry.RetryPolicy`; POSTs are not (a
retried create could run a batch twice): run the command again instead.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import aiohttp

from instag_hf import env
from instag_hf.batching.requests import part_paths
from instag_hf.batching.state import BatchState
from instag_hf.batching.target import CHAT_URL
from instag_hf.errors import BatchError, ConfigurationError, EndpointError, OutputError
from instag_hf.tagging.auth import EndpointAuth, base_url, check_env_name
from instag_hf.tagging.retry import RetryPolicy, parse_retry_after
from instag_hf.tagging.servers import _error_text
from instag_hf.tagging.settings import parse_endpoints

#: OpenAI's only completion window.
COMPLETION_WINDOW = "24h"
_TIMEOUT = aiohttp.ClientTimeout(total=300)


class BatchAPI:
    """An OpenAI-compatible Files + Batch API, for one event loop.

    Args:
        endpoint: Base URL (``https://api.openai.com``; a trailing ``/v1`` is fine).
        api_key_env: Name of the variable holding the key (default ``INSTAG_API_KEY``).
        retry: Policy for GETs.

    Raises:
        ConfigurationError: ``api_key_env`` is not a name, or names an unset variable.
    """

    def __init__(self, endpoint: str, *, api_key_env: str | None = None, retry: RetryPolicy | None = None) -> None:
        check_env_name(api_key_env)
        self.url = base_url(endpoint)
        self.auth = EndpointAuth([self.url], api_key_env=api_key_env)
        self.retry = retry or RetryPolicy()
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> BatchAPI:
        self._session = aiohttp.ClientSession(timeout=_TIMEOUT)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def _call(self, method: str, path: str, **kwargs: Any) -> bytes:
        assert self._session is not None, "use BatchAPI in `async with`"
        attempt = 0
        while True:
            attempt += 1
            status: int | None
            try:
                async with self._session.request(
                    method, self.url + path, headers=self.auth.headers_for(self.url), **kwargs
                ) as resp:
                    raw, status, retry_after = (
                        await resp.read(),
                        resp.status,
                        parse_retry_after(resp.headers.get("Retry-After")),
                    )
                    if status < 400:
                        return raw
                    try:
                        payload = json.loads(raw)
                    except ValueError:
                        payload = None
                    error = self.auth.scrub(_error_text(payload, raw)) or ""
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as failure:
                status, retry_after, error = None, None, f"{type(failure).__name__}: {failure}".rstrip(": ")
            if status in (401, 403):
                raise self.auth.refused(self.url, path, status, error)
            wait = self.retry.decide(attempt, status, retry_after) if method == "GET" else None
            if wait is None:
                what = f"HTTP {status}: {error}" if status is not None else error
                raise EndpointError(
                    f"The Batch API at {self.url} failed {method} {path} ({what[:300]}). Check the endpoint "
                    "(--endpoint, its base URL) and run the same command again: the state file keeps every id "
                    "learnt so far.",
                    url=self.url,
                    status=status,
                )
            await asyncio.sleep(wait)

    async def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        raw = await self._call(method, path, **kwargs)
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = None
        if not isinstance(payload, dict) or not isinstance(payload.get("id"), str):
            raise EndpointError(
                f"The Batch API at {self.url} answered {method} {path} with no object id: {raw[:200]!r}"
            )
        return payload

    async def upload(self, path: Path) -> str:
        """Upload a requests file (purpose ``batch``); its file id."""
        form = aiohttp.FormData()
        form.add_field("purpose", "batch")
        form.add_field("file", path.read_bytes(), filename=path.name, content_type="application/jsonl")
        return str((await self._json("POST", "/v1/files", data=form))["id"])

    async def create(self, input_file_id: str, name: str) -> dict[str, Any]:
        """Start a batch of the uploaded file; the Batch object."""
        body = {"input_file_id": input_file_id, "endpoint": CHAT_URL, "completion_window": COMPLETION_WINDOW,
                "metadata": {"instag_requests": name}}  # fmt: skip
        return await self._json("POST", "/v1/batches", json=body)

    async def retrieve(self, batch_id: str) -> dict[str, Any]:
        """The Batch object as it is now."""
        return await self._json("GET", f"/v1/batches/{batch_id}")

    async def content(self, file_id: str) -> bytes:
        """A file's bytes (a batch's output or error file)."""
        return await self._call("GET", f"/v1/files/{file_id}/content")


def _endpoint(state: BatchState, endpoint: str | None) -> str:
    chosen = endpoint or state.endpoint or next(iter(parse_endpoints(env.endpoints_variable(), env.ENV_ENDPOINT)), None)
    if chosen is None:
        raise ConfigurationError(
            "No Batch API endpoint: pass --endpoint https://api.openai.com (or another OpenAI-compatible "
            "Batch API, such as https://api.groq.com/openai), or set INSTAG_ENDPOINT"
        )
    return base_url(chosen)


def _update(job: Any, batch: dict[str, Any]) -> None:
    job.batch_id = batch["id"]
    job.status = batch.get("status")
    counts = batch.get("request_counts")
    job.request_counts = (
        {k: int(v) for k, v in counts.items() if isinstance(v, int)} if isinstance(counts, dict) else {}
    )
    job.output_file_id = batch.get("output_file_id") or None
    job.error_file_id = batch.get("error_file_id") or None


def submit_batches(
    requests: str | os.PathLike[str], *, endpoint: str | None = None, api_key_env: str | None = None
) -> BatchState:
    """Upload every requests file ``prepare`` wrote under ``requests`` and start a batch of each.

    A file already submitted (same name and content) is skipped: running it again after an
    interruption submits only the rest, reusing an upload whose batch was not created.

    Args:
        requests: The name given to prepare (``requests.jsonl``).
        endpoint: The Batch API's base URL (default: the state file's, else ``INSTAG_ENDPOINT``).
        api_key_env: Name of the variable holding the key (default ``INSTAG_API_KEY``).

    Returns:
        The :class:`~instag_hf.batching.state.BatchState`, saved next to the requests.

    Raises:
        ConfigurationError: No endpoint, or no requests file.
        BatchError: The state file names another endpoint.
        EndpointError, AuthenticationError: The API fails or refuses the key.
    """
    state = BatchState.load(requests)
    url = _endpoint(state, endpoint)
    if state.endpoint not in (None, url) and any(job.batch_id for job in state.jobs):
        raise BatchError(
            f"{state.path} records batches at {state.endpoint}, not {url}: submit there, or prepare into another "
            "file name for another API"
        )
    files = part_paths(requests)
    if not files:
        raise ConfigurationError(f"No requests file for {os.fspath(requests)!r}: run `instag batch prepare` first")
    state.endpoint = url

    async def run() -> None:
        async with BatchAPI(url, api_key_env=api_key_env) as api:
            for path in files:
                job = state.job_for(path)
                if job.batch_id is not None:
                    continue
                if job.input_file_id is None:
                    job.input_file_id = await api.upload(path)
                    state.save()
                _update(job, await api.create(job.input_file_id, path.name))
                state.save()

    asyncio.run(run())
    return state


def batch_status(
    requests: str | os.PathLike[str], *, endpoint: str | None = None, api_key_env: str | None = None
) -> BatchState:
    """Ask the API how every unfinished batch of ``requests`` is doing; safe to call again.

    Raises:
        ConfigurationError: No endpoint to ask.
        EndpointError, AuthenticationError: The API fails or refuses the key.
    """
    state = BatchState.load(requests)
    pending = [job for job in state.jobs if job.batch_id and not job.final]
    if pending:
        url = _endpoint(state, endpoint)

        async def run() -> None:
            async with BatchAPI(url, api_key_env=api_key_env) as api:
                for job in pending:
                    _update(job, await api.retrieve(str(job.batch_id)))
                    state.save()

        asyncio.run(run())
    return state


def download_results(
    requests: str | os.PathLike[str], *, endpoint: str | None = None, api_key_env: str | None = None
) -> tuple[BatchState, list[Path]]:
    """Download the output and error files of every finished batch of ``requests``.

    The results of batch ``B`` of ``requests-00000.jsonl`` become
    ``requests-00000.B.output.jsonl`` and ``requests-00000.B.errors.jsonl`` (a file prepared
    and submitted again is another batch, whose results never overwrite the first's);
    files already downloaded are not fetched again.

    Returns:
        The state (refreshed as :func:`batch_status` does) and every result file so far,
        the ones to pass to ``instag batch collect``.

    Raises:
        ConfigurationError, EndpointError, AuthenticationError: As :func:`batch_status`.
        OutputError: A file cannot be written.
    """
    state = batch_status(requests, endpoint=endpoint, api_key_env=api_key_env)
    folder = state.path.parent
    wanted = [
        (job, file_id, f"{Path(job.file).stem}.{job.batch_id}.{kind}.jsonl")
        for job in state.jobs
        if job.final
        for kind, file_id in (("output", job.output_file_id), ("errors", job.error_file_id))
        if file_id and f"{Path(job.file).stem}.{job.batch_id}.{kind}.jsonl" not in job.results
    ]
    if wanted:
        url = _endpoint(state, endpoint)

        async def run() -> None:
            async with BatchAPI(url, api_key_env=api_key_env) as api:
                for job, file_id, name in wanted:
                    data = await api.content(file_id)
                    try:
                        (folder / name).write_bytes(data)
                    except OSError as error:
                        raise OutputError(f"Cannot write the batch results {str(folder / name)!r}: {error}") from error
                    job.results.append(name)
                    state.save()

        asyncio.run(run())
    return state, [folder / name for job in state.jobs for name in job.results]
