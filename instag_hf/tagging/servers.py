"""Tagging endpoints: what server answers, which model it serves, and the HTTP calls.

Detection asks the server about itself, once per process:

- ``GET /info`` answering TGI's ``Info`` (``model_id``, ``max_concurrent_requests``) is TGI.
- Otherwise ``GET /v1/models`` lists the models of an OpenAI-compatible server; the
  ``owned_by`` of its entries names the server: ``vllm``, ``sglang``, ``llamacpp``
  (llama.cpp's ``llama-server``) or ``me`` (llama-cpp-python); anything else is spoken to
  as OpenAI's own API is (the dialects are in :mod:`instag_hf.tagging.dialects`).
- ``Tagger(server=...)`` forces the kind; the model list is still read to choose the model.

Everything goes through ``aiohttp`` with one connector factory (``Tagger(connector=...)``),
detection included, so a custom resolver or CA reaches every request. Not
``AsyncInferenceClient``: its ``httpx`` client is capped at 100 pooled connections (below
TGI's default ``max_concurrent_requests`` of 128, so a fleet could never be saturated), it
spends more client CPU per request than the 2 ms budget allows at that rate, and it does not
retry — see ``benchmarks/bench_tagging.py`` for the figures.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp

from instag_hf.errors import AuthenticationError, ConfigurationError, EndpointError
from instag_hf.tagging.dialects import LLAMACPP, OPENAI, SGLANG, TGI, VLLM
from instag_hf.tagging.parsing import valid_text
from instag_hf.tagging.retry import parse_retry_after

if TYPE_CHECKING:
    from instag_hf.tagging.auth import EndpointAuth

logger = logging.getLogger(__name__)

#: Builds the aiohttp connector of one session (one per event loop).
ConnectorFactory = Callable[[], aiohttp.BaseConnector]
_OWNED_BY = {"vllm": VLLM, "sglang": SGLANG, "llamacpp": LLAMACPP, "me": LLAMACPP}
#: In-flight bound of servers that do not state one. vLLM and SGLang queue what they cannot
#: run yet (vLLM's default ``max_num_seqs`` is 256), so a deep bound keeps their batches full;
#: hosted APIs answer 429 past their rate and the pool halves from there; llama.cpp runs a
#: few slots at a time and gets the pool's modest default.
_IN_FLIGHT = {VLLM: 256, SGLANG: 256, OPENAI: 64}
_NAMED = 5  # model ids named in an error about several models


@dataclass(frozen=True)
class ServerInfo:
    """What an endpoint told us about itself.

    ``identity`` names the server kind and the model, not the address: two replicas of one
    model share cached answers, and moving a server to another port keeps its cache.
    ``model_id`` is what chat requests send as ``model``. ``max_concurrent_requests`` is TGI's
    own limit, or the default bound of the kind for servers that state none.
    """

    url: str
    kind: str
    model_id: str
    model_sha: str | None = None
    max_concurrent_requests: int | None = None
    max_input_tokens: int | None = None
    max_total_tokens: int | None = None

    @property
    def model_name(self) -> str:
        # llama.cpp lists the GGUF path; the file name is the part that is stable across machines.
        return self.model_id.rsplit("/", 1)[-1] if self.model_id.endswith(".gguf") else self.model_id

    @property
    def identity(self) -> str:
        return f"{self.kind}:{self.model_name}@{self.model_sha or ''}"


def new_session(connector: ConnectorFactory | None = None) -> aiohttp.ClientSession:
    """One session for one event loop; the connector from ``connector()`` when given.

    The default connector has no connection limit: the endpoint pool, not the connector,
    bounds what is in flight.
    """
    made = connector() if connector is not None else aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
    return aiohttp.ClientSession(connector=made)


def detect_servers(
    urls: Sequence[str],
    auth: EndpointAuth,
    *,
    timeout: float,
    server: str | None = None,
    model: str | None = None,
    router: bool = False,
    connector: ConnectorFactory | None = None,
) -> list[ServerInfo | EndpointError]:
    """:func:`detect` for each URL, from synchronous code, in a loop and thread of its own.

    Returns:
        One entry per URL: its :class:`ServerInfo`, or the :class:`EndpointError` that says
        why it cannot be used (an :class:`~instag_hf.errors.AuthenticationError` for 401/403).

    Raises:
        ConfigurationError: The model cannot be chosen (several listed and none given, or
            the one given is not served).
    """

    async def detect_all() -> list[ServerInfo | EndpointError]:
        async with new_session(connector) as session:
            found = await asyncio.gather(
                *(
                    detect(session, url, auth, timeout=timeout, server=server, model=model, router=router)
                    for url in urls
                ),
                return_exceptions=True,
            )
        for outcome in found:
            if isinstance(outcome, BaseException) and not isinstance(outcome, EndpointError):
                raise outcome
        return list(found)  # type: ignore[arg-type]

    # A thread of its own: the caller may be inside a running event loop (datasets' async map).
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="instag-detect") as pool:
        return pool.submit(asyncio.run, detect_all()).result()


async def detect(
    session: aiohttp.ClientSession,
    url: str,
    auth: EndpointAuth,
    *,
    timeout: float,
    server: str | None = None,
    model: str | None = None,
    router: bool = False,
) -> ServerInfo:
    """Ask ``url`` what it is and which model to use.

    Args:
        session: The session to ask through.
        url: The endpoint's base URL.
        auth: The keys to send.
        timeout: Seconds per question.
        server: A forced server kind, or None to detect it.
        model: The model to use, or None when the server serves one.
        router: ``url`` is the Inference Providers router: the model need not be listed
            (provider suffixes never are).

    Raises:
        EndpointError: Nothing answers, or it is no server this library speaks to.
        AuthenticationError: The server answered 401/403.
        ConfigurationError: The model cannot be chosen.
    """
    if server in (None, TGI) and not router:
        status, info, error = await _get(session, url, "/info", auth, timeout)
        if status in (401, 403):
            raise auth.refused(url, "/info", status, error)
        if status == 200 and isinstance(info, dict) and "model_id" in info and "max_concurrent_requests" in info:
            return _tgi_info(url, info, model)
        if status is None:
            raise EndpointError(
                f"Tagging endpoint {url} does not answer ({error}). "
                "Check that the server is up and INSTAG_ENDPOINT / Tagger(endpoint=...) points at it.",
                url=url,
            )
        if server == TGI:
            raise EndpointError(
                f"Tagging endpoint {url} was given as TGI but GET /info answered {status}: {error}", url=url
            )
    status, listing, error = await _get(session, url, "/v1/models", auth, timeout)
    if status in (401, 403):
        raise auth.refused(url, "/v1/models", status, error)
    entries = listing.get("data") if isinstance(listing, dict) else None
    if status != 200 or not isinstance(entries, list):
        what = f"answered {status}: {error}" if status is not None else f"does not answer ({error})"
        raise EndpointError(
            f"Tagging endpoint {url} is neither TGI (no /info) nor OpenAI-compatible (GET /v1/models {what}). "
            "Check the URL (the server's base URL, with or without /v1).",
            url=url,
        )
    models = [e for e in entries if isinstance(e, dict) and isinstance(e.get("id"), str)]
    chosen = _choose_model(url, models, model, router)
    kind = server or (OPENAI if router else _kind_of(chosen, models))
    max_len = chosen.get("max_model_len") if chosen else None  # vLLM says its context length
    return ServerInfo(
        url=url,
        kind=kind,
        model_id=chosen["id"] if chosen else str(model),
        max_concurrent_requests=_IN_FLIGHT.get(kind),
        max_total_tokens=max_len if isinstance(max_len, int) else None,
    )


def _tgi_info(url: str, info: dict[str, Any], model: str | None) -> ServerInfo:
    served = str(info["model_id"])
    if model is not None and model != served:
        raise ConfigurationError(
            f"Tagging endpoint {url} is TGI serving {served!r}, not {model!r}: "
            "TGI serves one model; point the Tagger at a server of the model you want"
        )
    return ServerInfo(
        url=url,
        kind=TGI,
        model_id=served,
        model_sha=info.get("model_sha"),
        max_concurrent_requests=int(info["max_concurrent_requests"]),
        max_input_tokens=info.get("max_input_tokens"),
        max_total_tokens=info.get("max_total_tokens"),
    )


def _choose_model(url: str, models: list[dict[str, Any]], model: str | None, router: bool) -> dict[str, Any] | None:
    ids = [m["id"] for m in models]
    few = ", ".join(ids[:_NAMED]) + (f" and {len(ids) - _NAMED} more" if len(ids) > _NAMED else "")
    if model is None:
        if len(models) == 1:
            return models[0]
        if not models:
            raise ConfigurationError(
                f"Tagging endpoint {url} lists no model: name one with Tagger(model=...) / --model"
            )
        raise ConfigurationError(
            f"Tagging endpoint {url} serves {len(ids)} models ({few}): choose one with Tagger(model=...), "
            "--model or model: in the refresh config"
        )
    for entry in models:
        if entry["id"] == model:
            return entry
    if router:
        listed = model.split(":", 1)[0] in ids  # the router lists org/model; requests may add :provider
        if not listed:
            logger.warning("The router at %s does not list %r; asking for it anyway", url, model)
        return None
    raise ConfigurationError(f"Tagging endpoint {url} does not serve {model!r}; it serves {few}")


def _kind_of(chosen: dict[str, Any] | None, models: list[dict[str, Any]]) -> str:
    owner = str((chosen or (models[0] if models else {})).get("owned_by", "")).lower()
    return _OWNED_BY.get(owner, OPENAI)


async def _get(
    session: aiohttp.ClientSession, url: str, path: str, auth: EndpointAuth, timeout: float
) -> tuple[int | None, Any, str | None]:
    """(status, decoded JSON or None, error text) of ``GET url+path``; status None: no answer."""
    try:
        async with session.get(
            url + path, headers=auth.headers_for(url), timeout=aiohttp.ClientTimeout(total=timeout)
        ) as resp:
            raw = await resp.read()
            try:
                payload = json.loads(raw) if raw else None
            except ValueError:
                payload = None
            return resp.status, payload, None if resp.status < 400 else auth.scrub(_error_text(payload, raw))
    except asyncio.TimeoutError:
        return None, None, f"timed out after {timeout:g}s"
    except (aiohttp.ClientError, OSError) as error:
        return None, None, f"{type(error).__name__}: {error}".rstrip(": ")


def _error_text(payload: Any, raw: bytes) -> str:
    """The message of an error body: TGI ``{"error": str}``, OpenAI ``{"error": {"message"}}``,
    vLLM ``{"message"}``, else the start of the body."""
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str) and error:
            return error
        if isinstance(payload.get("message"), str):
            return payload["message"]
        if isinstance(payload.get("detail"), str):
            return payload["detail"]
    return raw[:200].decode("utf-8", "replace")


@dataclass(frozen=True)
class Reply:
    """What one POST came back with.

    Args:
        status: The HTTP status; None when no answer came (refused, dropped, timed out).
        payload: The decoded JSON body, None when there was none or it was not JSON.
        retry_after: Seconds the server asked to wait (``Retry-After``), if it did.
        error: What went wrong (the server's error text, or the connection's), None on success.
        token_headers: TGI's ``x-prompt-tokens`` / ``x-generated-tokens`` headers, when sent.
    """

    status: int | None
    payload: Any = None
    retry_after: float | None = None
    error: str | None = None
    token_headers: Mapping[str, str] = field(default_factory=dict)


async def post(
    session: aiohttp.ClientSession, url: str, body: dict, timeout: float, headers: dict[str, str] | None = None
) -> Reply:
    """POST ``body`` and read the answer; a failed connection is a :class:`Reply` too, never raised."""
    try:
        async with session.post(url, json=body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            raw = await resp.read()
            retry_after = parse_retry_after(resp.headers.get("Retry-After"))
            try:
                payload = json.loads(raw) if raw else None
            except ValueError:
                payload = None
            if resp.status >= 400:
                # The error text may become a row's instag_error: valid UTF-8 only.
                return Reply(resp.status, payload, retry_after, valid_text(_error_text(payload, raw)))
            tokens = {k: resp.headers[k] for k in ("x-prompt-tokens", "x-generated-tokens") if k in resp.headers}
            return Reply(resp.status, payload, retry_after, None, tokens)
    except asyncio.TimeoutError:
        return Reply(None, error=f"timed out after {timeout:g}s")
    except (aiohttp.ClientError, OSError) as error:
        return Reply(None, error=f"{type(error).__name__}: {error}".rstrip(": "))


# Servers this process started and watches (``instag_hf.local_llm``) report here when their
# process exits, so a map against them stops at once with the real cause (exit status, log
# tail) instead of "connection refused" until the fail-fast time runs out. Per process: a
# ``num_proc`` worker forked before the death falls back to the fail-fast time.
_DEAD_SERVERS: dict[str, str] = {}


def report_dead_server(url: str, reason: str) -> None:
    """Record that the server at ``url`` has exited, and why (a sentence or two)."""
    _DEAD_SERVERS[url.rstrip("/")] = reason


def dead_server_reason(url: str) -> str | None:
    """Why the server at ``url`` is known to be dead, or None when nothing is known."""
    return _DEAD_SERVERS.get(url.rstrip("/"))


def forget_dead_server(url: str) -> None:
    """A new server now listens at ``url`` (a port can be reused)."""
    _DEAD_SERVERS.pop(url.rstrip("/"), None)


def identities(infos: Sequence[ServerInfo]) -> set[str]:
    """What answers, as a set: one model behind every endpoint (:func:`usable_servers` checks),
    so an endpoint that is down when asked leaves the set as it was."""
    return {info.identity for info in infos}


def usable_servers(found: list[ServerInfo | EndpointError], *, warn: bool = True) -> list[ServerInfo]:
    """The endpoints :func:`detect_servers` found usable; the others are logged and left out.

    Raises:
        AuthenticationError: An endpoint refused the key (no outage: leaving it out would hide it).
        EndpointError: None answers.
        ConfigurationError: They serve different models.
    """
    infos, failures = [], []
    for outcome in found:
        if isinstance(outcome, AuthenticationError):
            raise outcome
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
