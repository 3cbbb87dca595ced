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
import contextlib
import logging
import os
import secrets
import threading
import warnings
import weakref
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from instag_hf import env
from instag_hf.errors import ConfigurationError, InstagError, NoEndpointError
from instag_hf.tagging.auth import EndpointAuth, base_url
from instag_hf.tagging.batch import assemble, columns_of, fit_query, query_columns, with_columns
from instag_hf.tagging.cache import RequestCache
from instag_hf.tagging.client import Answer, TaggingClient
from instag_hf.tagging.progress import TaggingProgress, TaggingStats
from instag_hf.tagging.rows import (
    RowFormat,
    RowQueries,
    detect_format,
    extract_queries,
)
from instag_hf.tagging.runtime import Runtime
from instag_hf.tagging.servers import ServerInfo, detect_servers, usable_servers
from instag_hf.tagging.settings import SETTINGS, TaggerSettings, parse_endpoints, settings_doc, settings_from

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

    Every keyword but ``api_key`` and ``headers`` is a setting of
    :class:`~instag_hf.tagging.settings.TaggerSettings`, read from its fields (so this list,
    ``instag tag --help`` and the refresh config's keys cannot drift apart), and readable back
    as an attribute (``tagger.model``).

    Args:
        api_key: Key sent as ``Authorization: Bearer`` to every endpoint. It stays in this
            process: ``num_proc`` workers need ``api_key_env`` or ``INSTAG_API_KEY``.
        headers: Extra HTTP headers for every request. They may be secrets: never hashed,
            pickled or logged, so ``num_proc`` workers do not get them either.
        {settings}

    Raises:
        TypeError: A keyword is not a setting.
        ConfigurationError: A value is invalid, or contradicts another.

    Example:
        >>> tagger = Tagger("http://127.0.0.1:8080")  # doctest: +SKIP
        >>> ds = ds.map(tagger.atag, batched=True)     # doctest: +SKIP
    """

    def __init__(
        self,
        endpoint: str | Sequence[str] | None = None,
        *,
        api_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        **settings: Any,
    ) -> None:
        # Nothing here reads the environment: the ready-made ``tag`` is built at import.
        self._configure(settings_from({"endpoint": endpoint, **settings}), api_key=api_key, headers=headers)

    def _configure(self, settings: TaggerSettings, *, api_key: str | None, headers: Mapping[str, str] | None) -> None:
        if api_key is not None and (not isinstance(api_key, str) or not api_key.strip()):
            raise ConfigurationError("api_key must be a non-empty string (or None to read it from the environment)")
        if api_key is not None and settings.api_key_env is not None:
            raise ConfigurationError("Give the key once: api_key=... or api_key_env=NAME, not both")
        #: The validated settings, frozen: ``dataclasses.replace`` and :meth:`from_settings`
        #: make a Tagger with other ones.
        self.settings = settings
        self._api_key = api_key.strip() if api_key else None  # secrets: never in the settings
        self._headers = dict(headers) if headers else None
        # What answers at each endpoint list, for the fingerprint: asked once, kept across forks.
        self._served: dict[tuple[str, ...], dict[str, Any]] = {}
        self._reset_runtime()

    @classmethod
    def from_settings(
        cls, settings: TaggerSettings, *, api_key: str | None = None, headers: Mapping[str, str] | None = None
    ) -> Tagger:
        """A Tagger with these settings, e.g. ``Tagger.from_settings(replace(t.settings, model=...))``.

        Raises:
            ConfigurationError: ``api_key`` is blank, or given with ``settings.api_key_env``.
        """
        tagger = cls.__new__(cls)
        tagger._configure(settings, api_key=api_key, headers=headers)
        return tagger

    def __getattr__(self, name: str) -> Any:
        # Read-only views of the settings, under the names Tagger takes them by (tagger.model).
        setting = SETTINGS.get(name) if not name.startswith("_") and name != "settings" else None
        if setting is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(self.settings, setting.name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in SETTINGS:
            raise AttributeError(
                f"Tagger.{name} is read-only: Tagger.from_settings(dataclasses.replace(tagger.settings, ...))"
            )
        super().__setattr__(name, value)

    # -- configuration -----------------------------------------------------------------

    @property
    def endpoints(self) -> tuple[str, ...]:
        """The endpoints in use: the router for a provider, the configured ones, else those in
        ``INSTAG_ENDPOINT``.

        Raises:
            ConfigurationError: ``INSTAG_ENDPOINT`` holds something that is not an http(s) URL.
        """
        if self.settings.provider is not None:
            return (base_url(env.router_url()),)
        return self.settings.endpoints or parse_endpoints(env.endpoints_variable(), env.ENV_ENDPOINT)

    @property
    def request_model(self) -> str | None:
        """The model id sent to the server: ``model``, with ``:provider`` for a named provider."""
        return self.settings.request_model

    @property
    def timeout(self) -> float:
        """Seconds per request: the configured ones, else ``INSTAG_REQUEST_TIMEOUT`` (or 120).

        Raises:
            ConfigurationError: ``INSTAG_REQUEST_TIMEOUT`` is not a number of seconds > 0.
        """
        return self.settings.timeout if self.settings.timeout is not None else env.request_timeout()

    @property
    def stats(self) -> TaggingStats:
        """Counters of this process: requests, retries, cache hits, answers, failures."""
        return self._stats

    def provenance(self) -> dict[str, Any]:
        """What writes this Tagger's tags: server kind, model, model revision, prompt template.

        The server is the one this process last tagged with (or hashed the Tagger against);
        it is asked when it never was.

        Returns:
            ``{"kind", "model", "model_sha", "template", "template_sha256", "answer"}``, the mapping
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
                "template": self.template.name, "template_sha256": self.template.sha256,
                "answer": self.answer}  # fmt: skip

    def _config(self) -> dict[str, Any]:
        # Everything that decides the output, and nothing secret: this is what datasets
        # hashes into the map's fingerprint and what num_proc workers receive.
        return {**self._served_by(), **self.settings.output_fields()}

    def _served_by(self) -> dict[str, Any]:
        """The endpoints and what answers there: server kind, model and model revision.

        Part of the fingerprint, so a map is never reused once another model answers at the
        same URL (the request cache already keys on the model). Asked once per Tagger and
        endpoint list (or taken from what tagging already asked), then reused: pickling it
        again, for a later hash or a ``num_proc`` worker, sends nothing, nor does pickling
        a copy. A new Tagger asks afresh, so it sees a model swapped behind the URL.
        """
        try:
            endpoints = self.endpoints
        except InstagError as error:  # INSTAG_ENDPOINT is not a URL: the map raises it too
            return self._unresolved(self.settings.endpoints, error)
        if not endpoints:
            return {"endpoints": []}
        with self._lock:
            known = self._served.get(endpoints)
        if known is None:
            known = self._ask_identity(endpoints)
            with self._lock:
                known = self._served.setdefault(endpoints, known)
        return known

    def _ask_identity(self, endpoints: tuple[str, ...]) -> dict[str, Any]:
        with self._lock:
            infos = self._infos.get(endpoints)
        if infos is None:
            try:
                infos = self._detect(endpoints, warn=False)
            except InstagError as error:
                return self._unresolved(endpoints, error)
            with self._lock:
                infos = self._infos.setdefault(endpoints, infos)  # tagging reuses what hashing asked
            missing = sorted(set(endpoints) - {info.url for info in infos})
            if missing:
                logger.warning("Tagging endpoint(s) %s do not answer; left out of this run.", ", ".join(missing))
        named = list(endpoints) if self.settings.provider is None else []  # the router: named by provider
        return {"endpoints": named, "servers": sorted({info.identity for info in infos})}

    def _unresolved(self, endpoints: Sequence[str], error: InstagError) -> dict[str, Any]:
        # A fingerprint no map has had, so nothing is reused; the map's first batch raises
        # the error itself. Said out loud: datasets' own warning would only say "random hash".
        where = ", ".join(endpoints) or f"the endpoint in {env.ENV_ENDPOINT}"
        warnings.warn(
            f"Could not ask {where} which model it serves ({error}): this Tagger's map fingerprint is "
            "random, so datasets will not reuse a cached result of the map",
            UserWarning,
            stacklevel=3,
        )
        return {"endpoints": list(self.settings.endpoints), "unresolved": secrets.token_hex(8)}

    def __getstate__(self) -> dict[str, Any]:
        # The endpoints as resolved now (INSTAG_ENDPOINT included), so workers tag where the
        # fingerprint says; a key given in Python and the headers never leave this process.
        return {**self._config(), **self.settings.state()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        settings = TaggerSettings.from_state(state, state["endpoints"])
        self._configure(settings, api_key=None, headers=None)
        # A copy hashes as its original did, without asking the server again.
        served: dict[str, Any] = {key: state[key] for key in ("endpoints", "servers", "unresolved") if key in state}
        with contextlib.suppress(InstagError):
            if "servers" in served or "unresolved" in served:
                self._served[self.endpoints] = served

    def __repr__(self) -> str:
        # Never the key: a repr ends up in logs, tracebacks and datasets' fingerprint warnings.
        settings = self.settings
        if settings.provider is not None:
            where = f"provider={settings.provider!r}"
        else:
            where = f"endpoint={','.join(settings.endpoints) if settings.endpoints else '$INSTAG_ENDPOINT'!r}"
        extra = "".join(
            f", {name}={value!r}"
            for name, value in (
                ("model", settings.model),
                ("server", settings.server),
                ("answer", None if settings.answer == "paper" else settings.answer),
            )
            if value is not None
        )
        return f"Tagger({where}{extra}, template={settings.template.name!r})"

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
                    api_key_env=self.settings.api_key_env,
                    headers=self._headers,
                )
            return self._auths[endpoints]

    def _server_infos(self, endpoints: tuple[str, ...]) -> list[ServerInfo]:
        # Detected once per process (or taken from what hashing asked, _served_by);
        # keyed by endpoints since INSTAG_ENDPOINT may change.
        auth = self._auth(endpoints)  # outside the lock: _auth takes it
        with self._lock:
            if endpoints not in self._infos:
                self._infos[endpoints] = self._detect(endpoints, auth)
            return self._infos[endpoints]

    def _detect(
        self, endpoints: tuple[str, ...], auth: EndpointAuth | None = None, *, warn: bool = True
    ) -> list[ServerInfo]:
        # The one place that asks the endpoints what they serve, with the Tagger's key and headers.
        settings = self.settings
        found = detect_servers(
            endpoints,
            auth or self._auth(endpoints),
            timeout=min(self.timeout, 30.0),
            server=settings.server,
            model=settings.request_model,
            router=settings.provider is not None,
            connector=settings.connector,
        )
        return usable_servers(found, warn=warn)

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
        infos = self._server_infos(endpoints)
        return self._runtime.client(
            endpoints,
            infos,
            lambda: TaggingClient(
                infos,
                self.settings,
                timeout=self.timeout,
                cache=self._request_cache(),
                auth=self._auth(endpoints),
                stats=self._stats,
                progress=self._progress_bar(),
                forms=self._forms,
            ),
        )

    def _request_cache(self) -> RequestCache | None:
        setting = self.settings.cache
        if setting is False or not env.cache_enabled():
            return None
        return RequestCache(None if setting is True else setting)

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
            fmt = self._formats[key] = detect_format(columns, format=self.settings.format, column=self.settings.column)
        return fmt

    # -- tagging -----------------------------------------------------------------------

    def __call__(self, batch: Any) -> Any:
        """Tag one batch synchronously (see the module docstring for ``atag``)."""
        self._check_process()
        loop = self._runtime.background_loop()
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
        raw_tags, errors = assemble(rows, answers, client.max_query_chars, self.settings.long_queries)
        return with_columns(batch, table, raw_tags, errors)

    async def _answers(self, client: TaggingClient, rows: list[RowQueries]) -> dict[str, Answer]:
        limit = client.max_query_chars
        sent = (fit_query(query, limit, self.settings.long_queries)[0] for row in rows for _, query in row.queries)
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
            self._runtime.progress = TaggingProgress.create(self.settings.progress, self._stats)
        return self._runtime.progress


if Tagger.__doc__:  # None under python -OO
    Tagger.__doc__ = Tagger.__doc__.replace("        {settings}", settings_doc())

#: The ready-made map function: ``ds.map(instag_hf.tag, batched=True)``, endpoint from
#: ``INSTAG_ENDPOINT``. A coroutine function, so batches overlap (see the module docstring).
tag = Tagger().atag
