"""``ds.map(instag_hf.tag, batched=True)``: tag every user query with intention tags.

:class:`Tagger` is the configurable callable; :data:`tag` is a ready-made one whose
endpoint comes from ``INSTAG_ENDPOINT``. Two ways to call a Tagger:

- ``ds.map(tagger, batched=True)``: synchronous, works everywhere (``num_proc``, Ray Data's
  ``map_batches``, a plain call on a dict of lists). Requests of a batch run concurrently.
- ``ds.map(tagger.atag, batched=True)`` (what :data:`tag` is): a coroutine function, so
  ``datasets`` runs many batches at once in one event loop and the endpoints' slots stay
  busy across batch boundaries instead of idling while a batch's slowest request finishes.

Both return the batch with ``instag_raw_tags`` and ``instag_error`` added, as a pyarrow
Table whose column types are fixed, so a batch where every row failed still has the
schema (``datasets`` would otherwise infer ``null`` from it). Because the whole batch is
returned, ``map(remove_columns=...)`` has no effect here: call ``.remove_columns()`` on the
result instead.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import threading
import warnings
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from instag_hf import constants
from instag_hf._batch import (  # noqa: F401  (the column contract)
    ERROR_COLUMN,
    RAW_TAGS_COLUMN,
    RAW_TAGS_TYPE,
    assemble,
    columns_of,
    fit_query,
    query_columns,
    with_columns,
)
from instag_hf._runtime import Runtime, close_client
from instag_hf.cache import RequestCache
from instag_hf.client import Answer, TaggingClient, TaggingStats
from instag_hf.endpoint import ServerInfo, detect_server
from instag_hf.errors import ConfigurationError, EndpointError, InstagError, NoEndpointError
from instag_hf.formats import (
    FORMAT_NAMES,
    RowFormat,
    RowQueries,
    detect_format,
    extract_queries,
)
from instag_hf.progress import TaggingProgress
from instag_hf.prompts import MAX_NEW_TOKENS, PromptTemplate, get_template
from instag_hf.retry import RetryPolicy

logger = logging.getLogger(__name__)

_NO_ENDPOINT = (
    "No tagging endpoint: set INSTAG_ENDPOINT=http://host:port (comma-separate several) "
    "or pass Tagger(endpoint=...)"
)


class Tagger:
    """A batched map function that tags user queries through TGI or an OpenAI-compatible server.

    Args:
        endpoint: URL of the server, or several (a list or a comma-separated string) to
            spread the load over. None reads ``INSTAG_ENDPOINT`` when tagging starts.
        template: ``"paper"`` (default, the paper's prompt byte-exact), ``"instagger"``
            (InsTagger's Vicuna prompt), a custom text with ``{query}``, or a
            :class:`~instag_hf.prompts.PromptTemplate`.
        format: Force the row format (``"sharegpt"``, ``"messages"``, ``"alpaca"``,
            ``"prompt"``); detected from the columns by default.
        column: Force the column that holds the queries.
        max_new_tokens: Generation budget per answer.
        concurrency: Cap on requests in flight per endpoint (the server's own
            ``max_concurrent_requests`` is never exceeded either way).
        timeout: Seconds before one request is abandoned and retried, > 0 (default
            ``INSTAG_REQUEST_TIMEOUT``, read when tagging starts, or 120).
        retry: The :class:`~instag_hf.retry.RetryPolicy` for failed requests.
        parse_retries: How many times an answer with no recoverable tag is asked again
            (sampling, seeded) before it becomes the row's ``instag_error``.
        long_queries: ``"truncate"`` (default) cuts a query that cannot fit the server's
            input limit (TGI's ``/info``) and says so in ``instag_error``; ``"error"`` sends
            nothing for it and sets ``instag_error``.
        fail_fast_seconds: Stop the whole map with :class:`~instag_hf.errors.EndpointError`
            once no endpoint has answered for this many seconds while requests fail
            (refused, dropped or timed-out connections, 429 and 5xx), however few attempts
            that was, instead of marking every remaining row failed. A server restart
            shorter than this is ridden out by retries. A hung server (connections accepted,
            no answer) is noticed when its requests time out: the map stops after at most
            ``timeout`` + ``fail_fast_seconds`` (150 s with the defaults). A server started
            by :mod:`instag_hf.local_llm` that exits stops the map at once.
        fail_fast_after: Deprecated, no effect: attempts are no longer counted (an endpoint
            with few slots, or set aside, makes too few of them to decide anything).
        cache: True (default, unless ``INSTAG_CACHE=0``) keeps every answer in the on-disk
            request cache, a folder path puts the cache there, False turns it off.
        progress: Show a progress bar; None follows ``datasets``' progress-bar switch.
        headers: Extra HTTP headers for every request (say, ``Authorization`` for a
            protected endpoint). They are secrets: never hashed, pickled or logged, so
            ``num_proc`` workers do not get them either.

    Example:
        >>> tagger = Tagger("http://127.0.0.1:8080")  # doctest: +SKIP
        >>> ds = ds.map(tagger.atag, batched=True)     # doctest: +SKIP
    """

    def __init__(
        self,
        endpoint: str | Sequence[str] | None = None,
        *,
        template: str | PromptTemplate = "paper",
        format: str | None = None,
        column: str | None = None,
        max_new_tokens: int = MAX_NEW_TOKENS,
        concurrency: int | None = None,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
        parse_retries: int = 1,
        long_queries: str = "truncate",
        fail_fast_after: int | None = None,
        fail_fast_seconds: float = 30.0,
        cache: bool | str | os.PathLike[str] = True,
        progress: bool | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        # Nothing here reads the environment: the ready-made ``tag`` is built at import.
        self._endpoints = _parse_endpoints(endpoint)
        self.template = get_template(template)
        self.format, self.column = format, column
        if format is not None and format not in FORMAT_NAMES:
            raise ConfigurationError(f"Unknown format {format!r}: use one of {', '.join(FORMAT_NAMES)}")
        if max_new_tokens < 1:
            raise ConfigurationError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if concurrency is not None and concurrency < 1:
            raise ConfigurationError(f"concurrency must be >= 1 or None, got {concurrency}")
        if parse_retries < 0:
            raise ConfigurationError(f"parse_retries must be >= 0, got {parse_retries}")
        if long_queries not in ("truncate", "error"):
            raise ConfigurationError(f"long_queries must be 'truncate' or 'error', got {long_queries!r}")
        if fail_fast_seconds < 0:
            raise ConfigurationError(f"fail_fast_seconds must be >= 0, got {fail_fast_seconds}")
        if fail_fast_after is not None:
            warnings.warn(
                "Tagger(fail_fast_after=...) has no effect any more: the map stops once no endpoint has "
                "answered for fail_fast_seconds, however many attempts that was",
                FutureWarning,
                stacklevel=2,
            )
        self.max_new_tokens = max_new_tokens
        self.concurrency = concurrency
        self._timeout = constants.check_timeout(timeout) if timeout is not None else None
        self.retry = retry or RetryPolicy()
        self.parse_retries = parse_retries
        self.long_queries = long_queries
        self.fail_fast_seconds = float(fail_fast_seconds)
        self.cache_setting = cache if isinstance(cache, bool) else os.fspath(cache)
        self.progress = progress
        self._headers = dict(headers) if headers else None
        self._reset_runtime()

    # -- configuration -----------------------------------------------------------------

    @property
    def endpoints(self) -> tuple[str, ...]:
        """The endpoints in use: the configured ones, else those in ``INSTAG_ENDPOINT``.

        Raises:
            ConfigurationError: ``INSTAG_ENDPOINT`` holds something that is not an http(s) URL.
        """
        return self._endpoints or constants.endpoints_from_env()

    @property
    def timeout(self) -> float:
        """Seconds per request: the configured ones, else ``INSTAG_REQUEST_TIMEOUT`` (or 120).

        Raises:
            ConfigurationError: ``INSTAG_REQUEST_TIMEOUT`` is not a number of seconds > 0.
        """
        return self._timeout if self._timeout is not None else constants.request_timeout()

    @property
    def stats(self) -> TaggingStats:
        """Counters of this process: requests, retries, cache hits, answers, failures."""
        return self._stats

    def provenance(self) -> dict[str, Any]:
        """What writes this Tagger's tags: server kind, model, model revision, prompt template.

        The server is the one this process last tagged with (or hashed the Tagger against);
        it is asked when it never was.

        Returns:
            ``{"kind", "model", "model_sha", "template", "template_sha256"}``, the mapping
            :func:`instag_hf.build_card` takes as ``tagger``.

        Raises:
            NoEndpointError, EndpointError, ConfigurationError: No endpoint, none answers,
                or a setting is invalid.
        """
        endpoints = self.endpoints
        if not endpoints:
            raise NoEndpointError(_NO_ENDPOINT)
        info = self._server_infos(endpoints)[0]
        return {"kind": info.kind, "model": info.model_id, "model_sha": info.model_sha,
                "template": self.template.name, "template_sha256": self.template.sha256}  # fmt: skip

    def _config(self) -> dict[str, Any]:
        # Everything that decides the output, and nothing secret: this is what datasets
        # hashes into the map's fingerprint and what num_proc workers receive.
        return {
            **self._served_by(),
            "template": {"name": self.template.name, "text": self.template.text, "kind": self.template.kind},
            "format": self.format,
            "column": self.column,
            "max_new_tokens": self.max_new_tokens,
            "parse_retries": self.parse_retries,
            "long_queries": self.long_queries,
        }

    def _served_by(self) -> dict[str, Any]:
        """The endpoints and what answers there now: server kind, model and model revision.

        Part of the fingerprint, so a map is never reused once another model answers at the
        same URL (the request cache already keys on the model). Asked afresh each time the
        Tagger is hashed, with the Tagger's headers, which never enter the result.
        """
        try:
            endpoints = self.endpoints
            if not endpoints:
                return {"endpoints": []}
            infos = _detect_all(endpoints, self.timeout, self._headers, warn=False)
        except InstagError as error:
            # Nothing to name: a fingerprint no map has had, so nothing is reused; the map's
            # first batch raises the error itself, with the same message.
            logger.debug("Could not tell what answers at the endpoints (%s): the map will not reuse a result", error)
            return {"endpoints": list(self._endpoints), "unresolved": secrets.token_hex(8)}
        with self._lock:
            known = self._infos.get(endpoints)
            if known is None or _identities(known) != _identities(infos):  # a model, not an endpoint count
                # Another model now: tagging must use it. The same model keeps the limits
                # first detected; the pool adapts to the live ones.
                self._infos[endpoints] = infos
                missing = sorted(set(endpoints) - {info.url for info in infos})
                if missing:
                    logger.warning("Tagging endpoint(s) %s do not answer; left out of this run.", ", ".join(missing))
        return {"endpoints": list(endpoints), "servers": sorted({info.identity for info in infos})}

    def __getstate__(self) -> dict[str, Any]:
        return {
            **self._config(),
            "concurrency": self.concurrency,
            "timeout": self._timeout,
            "retry": self.retry,
            "fail_fast_seconds": self.fail_fast_seconds,
            "cache": self.cache_setting,
            "progress": self.progress,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        template = PromptTemplate(**state["template"])
        self.__init__(  # type: ignore[misc]
            state["endpoints"] or None,
            template=template,
            format=state["format"],
            column=state["column"],
            max_new_tokens=state["max_new_tokens"],
            concurrency=state["concurrency"],
            timeout=state["timeout"],
            retry=state["retry"],
            parse_retries=state["parse_retries"],
            long_queries=state["long_queries"],
            fail_fast_seconds=state["fail_fast_seconds"],
            cache=state["cache"],
            progress=state["progress"],
        )

    def __repr__(self) -> str:
        where = ",".join(self._endpoints) if self._endpoints else "$INSTAG_ENDPOINT"
        return f"Tagger(endpoint={where!r}, template={self.template.name!r})"

    # -- runtime (per process, never pickled) ------------------------------------------

    _finalizer: weakref.finalize

    def _reset_runtime(self) -> None:
        if hasattr(self, "_finalizer"):
            self._finalizer.detach()  # after fork: the parent's sockets and threads are not ours
        self._pid = os.getpid()
        self._runtime = Runtime()
        # Closes sessions and the progress bar when the Tagger is collected, or at exit:
        # the finalizer holds the runtime, not the Tagger, so a dropped Tagger can go.
        self._finalizer = weakref.finalize(self, self._runtime.close)
        self._infos: dict[tuple[str, ...], list[ServerInfo]] = {}
        self._formats: dict[tuple[str, ...], RowFormat] = {}
        self._stats = TaggingStats()
        self._lock = threading.Lock()

    def _check_process(self) -> None:
        if self._pid != os.getpid():  # forked: sockets, threads and loops stay behind
            self._reset_runtime()

    def _server_infos(self, endpoints: tuple[str, ...]) -> list[ServerInfo]:
        # Detected once per process, and again whenever the Tagger is hashed (_served_by);
        # keyed by endpoints since INSTAG_ENDPOINT may change.
        with self._lock:
            if endpoints not in self._infos:
                self._infos[endpoints] = _detect_all(endpoints, self.timeout, self._headers)
            return self._infos[endpoints]

    def _client(self, endpoints: tuple[str, ...]) -> TaggingClient:
        loop = asyncio.get_running_loop()
        infos = self._server_infos(endpoints)
        entry = self._runtime.clients.get((id(loop), endpoints))
        if entry is not None and entry[0] is loop:
            if _identities(entry[1].infos) == _identities(infos) and not entry[1].stopped:
                return entry[1]
            # Another model answers there now (the synchronous path keeps its loop): a client
            # keyed on the old identity would file the new model's answers under the old one.
            # Or the client declared its endpoints dead: its map has ended, a new one starts afresh.
            close_client(loop, entry[1])
            del self._runtime.clients[(id(loop), endpoints)]
        self._close_idle_clients()
        cache = None
        if self.cache_setting is not False and constants.cache_enabled():
            cache = RequestCache(None if self.cache_setting is True else self.cache_setting)
        client = TaggingClient(
            infos,
            self.template,
            max_new_tokens=self.max_new_tokens,
            concurrency=self.concurrency,
            timeout=self.timeout,
            retry=self.retry,
            parse_retries=self.parse_retries,
            fail_fast_seconds=self.fail_fast_seconds,
            cache=cache,
            headers=self._headers,
            stats=self._stats,
            progress=self._progress_bar(),
        )
        self._runtime.clients[(id(loop), endpoints)] = (loop, client)
        return client

    def _close_idle_clients(self) -> None:
        # datasets makes a new event loop per map call and leaves the old one idle.
        for key, (loop, client) in list(self._runtime.clients.items()):
            if loop.is_closed() or not loop.is_running():
                close_client(loop, client)
                del self._runtime.clients[key]

    def close(self) -> None:
        """Close every connection and the progress bar of this Tagger in this process.

        :func:`instag_hf.pipeline.tag_dataset` does it when its map ends, so the bar's last
        line is the tagging rate. The Tagger stays usable: tagging again opens new ones.
        Done anyway when the Tagger is garbage-collected or the interpreter exits.
        """
        self._runtime.close()

    def _row_format(self, columns: Sequence[str]) -> RowFormat:
        key = tuple(columns)
        fmt = self._formats.get(key)
        if fmt is None:
            fmt = self._formats[key] = detect_format(columns, format=self.format, column=self.column)
        return fmt

    # -- tagging -----------------------------------------------------------------------

    def __call__(self, batch: Any) -> Any:
        """Tag one batch synchronously (see the module docstring for ``atag``)."""
        self._check_process()
        loop = self._background_loop()
        return asyncio.run_coroutine_threadsafe(self.atag(batch), loop).result()

    async def atag(self, batch: Any) -> Any:
        """Tag one batch; a coroutine function, so ``Dataset.map`` overlaps batches."""
        self._check_process()
        columns, table = columns_of(batch)
        fmt = self._row_format(columns)  # a FormatError comes before any request
        endpoints = self.endpoints
        if not endpoints:
            raise NoEndpointError(_NO_ENDPOINT)
        client = self._client(endpoints)
        rows = extract_queries(query_columns(batch, table, fmt), fmt)
        answers = await self._answers(client, rows)
        raw_tags, errors = assemble(rows, answers, client.max_query_chars, self.long_queries)
        return with_columns(batch, table, raw_tags, errors)

    async def _answers(self, client: TaggingClient, rows: list[RowQueries]) -> dict[str, Answer]:
        limit = client.max_query_chars
        sent = (fit_query(query, limit, self.long_queries)[0] for row in rows for _, query in row.queries)
        unique = list(dict.fromkeys(q for q in sent if q is not None))
        answers = client.cached(unique)
        missing = [q for q in unique if q not in answers]
        if missing:
            # Every answer, or the EndpointError that stops the whole map (and the requests
            # of every other batch) as soon as the endpoints are declared dead.
            results = await client.gather([client.spawn(q) for q in missing])
            answers.update(zip(missing, results))
        return answers

    def _progress_bar(self) -> TaggingProgress | None:
        if self._runtime.progress is None:
            self._runtime.progress = TaggingProgress.create(self.progress, self._stats)
        return self._runtime.progress

    def _background_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._runtime.thread_loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="instag-tagger", daemon=True).start()
                self._runtime.thread_loop = loop
            return self._runtime.thread_loop


def _parse_endpoints(endpoint: str | Sequence[str] | None) -> tuple[str, ...]:
    if endpoint is None:
        return ()
    return constants.parse_endpoints(endpoint if isinstance(endpoint, str) else [str(e) for e in endpoint])


def _identities(infos: Sequence[ServerInfo]) -> set[str]:
    # One model behind every answering endpoint (_detect_all checks): an endpoint that is
    # down when asked leaves the set as it was.
    return {info.identity for info in infos}


def _detect_all(
    urls: Sequence[str], timeout: float, headers: dict[str, str] | None, *, warn: bool = True
) -> list[ServerInfo]:
    infos, failures = [], []
    for url in urls:
        try:
            infos.append(detect_server(url, timeout=min(timeout, 30.0), headers=headers))
        except EndpointError as error:
            failures.append(str(error))
    if not infos:
        raise EndpointError(" ".join(failures))
    for failure in failures:
        logger.log(logging.WARNING if warn else logging.DEBUG, "%s It is left out of this run.", failure)
    models = {info.model_id for info in infos}
    if len(models) > 1:
        raise ConfigurationError(
            f"The endpoints serve different models ({sorted(models)}): tags from different models "
            "do not mix; give one Tagger the replicas of one model"
        )
    return infos


#: The ready-made map function: ``ds.map(instag_hf.tag, batched=True)``, endpoint from
#: ``INSTAG_ENDPOINT``. A coroutine function, so batches overlap (see the module docstring).
tag = Tagger().atag
