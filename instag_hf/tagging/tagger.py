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
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from instag_hf import env
from instag_hf.errors import AuthenticationError, ConfigurationError, EndpointError, InstagError, NoEndpointError
from instag_hf.tagging.auth import EndpointAuth, base_url, check_env_name
from instag_hf.tagging.batch import assemble, columns_of, fit_query, query_columns, with_columns
from instag_hf.tagging.cache import RequestCache
from instag_hf.tagging.client import Answer, TaggingClient, TaggingStats
from instag_hf.tagging.dialects import SERVER_KINDS
from instag_hf.tagging.progress import TaggingProgress
from instag_hf.tagging.prompts import MAX_NEW_TOKENS, PromptTemplate, get_template
from instag_hf.tagging.retry import RetryPolicy
from instag_hf.tagging.rows import (
    FORMAT_NAMES,
    RowFormat,
    RowQueries,
    detect_format,
    extract_queries,
)
from instag_hf.tagging.runtime import Runtime, close_client
from instag_hf.tagging.servers import ConnectorFactory, ServerInfo, detect_servers

if TYPE_CHECKING:
    from datasets import Dataset

    from instag_hf.tagging.dry_run import TaggingPlan

logger = logging.getLogger(__name__)

_NO_ENDPOINT = (
    "No tagging endpoint: set INSTAG_ENDPOINT=http://host:port (comma-separate several) or pass Tagger(endpoint=...)"
)


class Tagger:
    """A batched map function that tags user queries through TGI, vLLM, SGLang, llama.cpp,
    an OpenAI-compatible API or Hugging Face Inference Providers.

    Args:
        endpoint: Base URL of the server (a trailing ``/v1`` is fine), or several (a list or
            a comma-separated string) to spread the load over. None reads
            ``INSTAG_ENDPOINT`` when tagging starts.
        model: The model to ask, for a server that lists several (``GET /v1/models``); a
            server with one model needs none. Part of the cache identity.
        server: Force the server kind (``"tgi"``, ``"vllm"``, ``"sglang"``, ``"openai"``,
            ``"llamacpp"``) and so its structured-output form; detected by default.
        provider: Tag through Hugging Face Inference Providers: ``"auto"`` lets the router
            choose, or a provider name (``"together"``, ...). Needs ``model``; the endpoint
            is the router (``INSTAG_ROUTER_URL`` overrides its URL) and the key your Hub token.
        api_key: Key sent as ``Authorization: Bearer`` to every endpoint. It stays in this
            process: ``num_proc`` workers need ``api_key_env`` or ``INSTAG_API_KEY``.
        api_key_env: Name of the environment variable holding the key (read when tagging
            starts, in every worker). Default: ``INSTAG_API_KEY`` if set. Without any key,
            your Hugging Face token goes to Hugging Face's inference hosts only.
        template: ``"paper"`` (default, the paper's prompt byte-exact), ``"instagger"``
            (InsTagger's Vicuna prompt), a custom text with ``{query}``, or a
            :class:`~instag_hf.tagging.prompts.PromptTemplate`.
        format: Force the row format (``"sharegpt"``, ``"messages"``, ``"alpaca"``,
            ``"prompt"``); detected from the columns by default.
        column: Force the column that holds the queries.
        max_new_tokens: Generation budget per answer.
        concurrency: Cap on requests in flight per endpoint (the server's own
            ``max_concurrent_requests`` is never exceeded either way).
        timeout: Seconds before one request is abandoned and retried, > 0 (default
            ``INSTAG_REQUEST_TIMEOUT``, read when tagging starts, or 120).
        retry: The :class:`~instag_hf.tagging.retry.RetryPolicy` for failed requests.
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
        headers: Extra HTTP headers for every request. They may be secrets: never hashed,
            pickled or logged, so ``num_proc`` workers do not get them either.
        connector: A zero-argument callable returning the ``aiohttp`` connector of each
            session (one per event loop, detection included): a custom DNS resolver
            (``aiohttp.TCPConnector(resolver=...)``), a private CA (``ssl=...``), a proxy.
            Default ``aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)``; keep ``limit=0``,
            the endpoint pool bounds concurrency. Must pickle for ``num_proc``
            (a module-level function or a ``functools.partial`` of one).

    Example:
        >>> tagger = Tagger("http://127.0.0.1:8080")  # doctest: +SKIP
        >>> ds = ds.map(tagger.atag, batched=True)     # doctest: +SKIP
    """

    def __init__(
        self,
        endpoint: str | Sequence[str] | None = None,
        *,
        model: str | None = None,
        server: str | None = None,
        provider: str | None = None,
        api_key: str | None = None,
        api_key_env: str | None = None,
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
        connector: ConnectorFactory | None = None,
    ) -> None:
        # Nothing here reads the environment: the ready-made ``tag`` is built at import.
        self._endpoints = _parse_endpoints(endpoint)
        _check_model_choice(self._endpoints, model, server, provider)
        check_env_name(api_key_env)
        if api_key is not None and (not isinstance(api_key, str) or not api_key.strip()):
            raise ConfigurationError("api_key must be a non-empty string (or None to read it from the environment)")
        if api_key is not None and api_key_env is not None:
            raise ConfigurationError("Give the key once: api_key=... or api_key_env=NAME, not both")
        if connector is not None and not callable(connector):
            raise ConfigurationError("connector must be a callable that returns an aiohttp connector")
        self.model, self.server, self.provider = model, server, provider
        self._api_key = api_key.strip() if api_key else None
        self.api_key_env = api_key_env
        self.connector = connector
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
        self._timeout = env.check_timeout(timeout) if timeout is not None else None
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
        """The endpoints in use: the router for a provider, the configured ones, else those in
        ``INSTAG_ENDPOINT``.

        Raises:
            ConfigurationError: ``INSTAG_ENDPOINT`` holds something that is not an http(s) URL.
        """
        if self.provider is not None:
            return (base_url(env.router_url()),)
        return self._endpoints or _parse_endpoints(env.endpoints_from_env() or None)

    @property
    def request_model(self) -> str | None:
        """The model id sent to the server: ``model``, with ``:provider`` for a named provider."""
        if self.model is None or self.provider in (None, "auto"):
            return self.model
        return f"{self.model}:{self.provider}"

    @property
    def timeout(self) -> float:
        """Seconds per request: the configured ones, else ``INSTAG_REQUEST_TIMEOUT`` (or 120).

        Raises:
            ConfigurationError: ``INSTAG_REQUEST_TIMEOUT`` is not a number of seconds > 0.
        """
        return self._timeout if self._timeout is not None else env.request_timeout()

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
        return {"kind": info.kind, "model": info.model_name, "model_sha": info.model_sha,
                "template": self.template.name, "template_sha256": self.template.sha256}  # fmt: skip

    def _config(self) -> dict[str, Any]:
        # Everything that decides the output, and nothing secret: this is what datasets
        # hashes into the map's fingerprint and what num_proc workers receive.
        return {
            **self._served_by(),
            "model": self.model,
            "server": self.server,
            "provider": self.provider,
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
            found = detect_servers(
                endpoints,
                self._auth(endpoints),
                timeout=min(self.timeout, 30.0),
                server=self.server,
                model=self.request_model,
                router=self.provider is not None,
                connector=self.connector,
            )
            infos = _usable(found, warn=False)
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
        named = list(endpoints) if self.provider is None else []  # the router: named by provider
        return {"endpoints": named, "servers": sorted({info.identity for info in infos})}

    def __getstate__(self) -> dict[str, Any]:
        return {
            **self._config(),
            "concurrency": self.concurrency,
            "timeout": self._timeout,
            "retry": self.retry,
            "fail_fast_seconds": self.fail_fast_seconds,
            "cache": self.cache_setting,
            "progress": self.progress,
            # A variable's name, never a key: a key given in Python never leaves this process.
            "api_key_env": self.api_key_env,
            "connector": self.connector,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        template = PromptTemplate(**state["template"])
        self.__init__(  # type: ignore[misc]
            state["endpoints"] or None,
            model=state["model"],
            server=state["server"],
            provider=state["provider"],
            api_key_env=state["api_key_env"],
            connector=state["connector"],
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
        # Never the key: a repr ends up in logs, tracebacks and datasets' fingerprint warnings.
        if self.provider is not None:
            where = f"provider={self.provider!r}"
        else:
            where = f"endpoint={','.join(self._endpoints) if self._endpoints else '$INSTAG_ENDPOINT'!r}"
        extra = "".join(
            f", {name}={value!r}"
            for name, value in (("model", self.model), ("server", self.server))
            if value is not None
        )
        return f"Tagger({where}{extra}, template={self.template.name!r})"

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
        self._auths: dict[tuple[str, ...], EndpointAuth] = {}
        self._forms: dict[str, str] = {}  # structured-output form per endpoint URL
        self._formats: dict[tuple[str, ...], RowFormat] = {}
        self._stats = TaggingStats()
        self._lock = threading.Lock()

    def _check_process(self) -> None:
        if self._pid != os.getpid():  # forked: sockets, threads and loops stay behind
            self._reset_runtime()

    def _auth(self, endpoints: tuple[str, ...]) -> EndpointAuth:
        # Keys are read when first needed, once per process, and live only in the runtime.
        with self._lock:
            if endpoints not in self._auths:
                self._auths[endpoints] = EndpointAuth(
                    endpoints,
                    api_key=self._api_key,
                    api_key_env=self.api_key_env,
                    headers=self._headers,
                )
            return self._auths[endpoints]

    def _server_infos(self, endpoints: tuple[str, ...]) -> list[ServerInfo]:
        # Detected once per process, and again whenever the Tagger is hashed (_served_by);
        # keyed by endpoints since INSTAG_ENDPOINT may change.
        auth = self._auth(endpoints)
        with self._lock:
            if endpoints not in self._infos:
                found = detect_servers(
                    endpoints,
                    auth,
                    timeout=min(self.timeout, 30.0),
                    server=self.server,
                    model=self.request_model,
                    router=self.provider is not None,
                    connector=self.connector,
                )
                self._infos[endpoints] = _usable(found)
            return self._infos[endpoints]

    def servers(self) -> list[ServerInfo]:
        """What the endpoints said about themselves: kind, model, limits (asked once per process).

        Raises:
            NoEndpointError: No endpoint is configured.
            EndpointError: No endpoint answers (``AuthenticationError`` when one refuses the key).
            ConfigurationError: The model cannot be chosen, or the endpoints serve different models.
        """
        endpoints = self.endpoints
        if not endpoints:
            raise NoEndpointError(_NO_ENDPOINT)
        return self._server_infos(endpoints)

    def plan(self, ds: Dataset, *, batch_size: int = 1000) -> TaggingPlan:
        """What tagging ``ds`` would send, without sending it (``instag tag --dry-run``).

        Reads the queries, asks the endpoints what they serve (``GET /info`` or
        ``/v1/models``, no generation) and looks every query up in the request cache.

        Raises:
            FormatError: No column to read queries from.
            EndpointError, ConfigurationError: As :meth:`servers`.
        """
        from instag_hf.tagging.dry_run import plan

        return plan(self, ds, batch_size=batch_size)

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
        cache = self._request_cache()
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
            auth=self._auth(endpoints),
            stats=self._stats,
            progress=self._progress_bar(),
            connector=self.connector,
            forms=self._forms,
        )
        self._runtime.clients[(id(loop), endpoints)] = (loop, client)
        return client

    def _request_cache(self) -> RequestCache | None:
        if self.cache_setting is False or not env.cache_enabled():
            return None
        return RequestCache(None if self.cache_setting is True else self.cache_setting)

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
    urls = tuple(
        base_url(url)
        for url in env.parse_endpoints(endpoint if isinstance(endpoint, str) else [str(e) for e in endpoint])
    )
    for url in urls:
        if "@" in urlsplit(url).netloc:  # the URL would be hashed, pickled and logged
            raise ConfigurationError(
                "An endpoint URL must not carry credentials (user:key@host): "
                "pass the key with api_key_env=NAME or INSTAG_API_KEY"
            )
    return urls


def _identities(infos: Sequence[ServerInfo]) -> set[str]:
    # One model behind every answering endpoint (_usable checks): an endpoint that is
    # down when asked leaves the set as it was.
    return {info.identity for info in infos}


def _check_model_choice(
    endpoints: tuple[str, ...], model: str | None, server: str | None, provider: str | None
) -> None:
    for name, value in (("model", model), ("provider", provider)):
        if value is not None and (not isinstance(value, str) or not value.strip() or value != value.strip()):
            raise ConfigurationError(f"{name} must be a non-empty string without surrounding spaces, got {value!r}")
    if server is not None and server not in SERVER_KINDS:
        raise ConfigurationError(f"Unknown server kind {server!r}: use one of {', '.join(SERVER_KINDS)}")
    if provider is None:
        return
    if model is None:
        raise ConfigurationError(
            "provider needs a model: Tagger(model='meta-llama/Llama-3.1-8B-Instruct', "
            "provider='auto') / --model ... --provider auto"
        )
    if endpoints:
        raise ConfigurationError(
            "provider sends every request through the Inference Providers router: "
            "drop the endpoint (INSTAG_ROUTER_URL moves the router)"
        )
    if provider != "auto" and ":" in model:
        raise ConfigurationError(
            f"model {model!r} already names a provider or policy after ':'; drop it or use provider='auto'"
        )


def _usable(found: list[ServerInfo | EndpointError], *, warn: bool = True) -> list[ServerInfo]:
    infos, failures = [], []
    for outcome in found:
        if isinstance(outcome, AuthenticationError):
            raise outcome  # a refused key is no outage: leaving the endpoint out would hide it
        if isinstance(outcome, EndpointError):
            failures.append(str(outcome))
        else:
            infos.append(outcome)
    if not infos:
        raise EndpointError(" ".join(failures))
    for failure in failures:
        logger.log(logging.WARNING if warn else logging.DEBUG, "%s It is left out of this run.", failure)
    models = {info.model_name for info in infos}
    if len(models) > 1:
        raise ConfigurationError(
            f"The endpoints serve different models ({sorted(models)}): tags from different models "
            "do not mix; give one Tagger the replicas of one model"
        )
    return infos


#: The ready-made map function: ``ds.map(instag_hf.tag, batched=True)``, endpoint from
#: ``INSTAG_ENDPOINT``. A coroutine function, so batches overlap (see the module docstring).
tag = Tagger().atag
