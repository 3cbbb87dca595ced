"""What a :class:`~instag_hf.tagging.tagger.Tagger` is configured with: one frozen object.

``Tagger.__init__`` builds it (every bad value is rejected here, before anything is sent),
pickling sends it to ``num_proc`` workers, the map fingerprint hashes the part of it that
decides the output, and each :class:`~instag_hf.tagging.client.TaggingClient` reads it.
Secrets (a key given in Python, extra headers) are not settings: they never leave the
process and never enter a hash.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit

from instag_hf import env
from instag_hf.errors import ConfigurationError
from instag_hf.tagging.auth import base_url, check_env_name
from instag_hf.tagging.dialects import SERVER_KINDS
from instag_hf.tagging.prompts import ANSWER_FORMS, MAX_NEW_TOKENS, PromptTemplate, for_answer, get_template
from instag_hf.tagging.retry import RetryPolicy
from instag_hf.tagging.rows import FORMAT_NAMES
from instag_hf.tagging.servers import ConnectorFactory

_NO_DEFAULT: Any = MISSING


def setting(
    default: Any = _NO_DEFAULT,
    *,
    help: str,
    default_factory: Any = _NO_DEFAULT,
    output: bool = False,
    name: str | None = None,
    option: Mapping[str, Any] | None = None,
    config: bool = False,
    omitted_at_default: bool = False,
) -> Any:
    """A field of :class:`TaggerSettings`, with everything said about it in one place.

    Args:
        default, default_factory: As :func:`dataclasses.field`.
        help: What the setting does, one sentence: the ``Tagger`` docstring, ``--help`` and
            the refresh config's documentation are written from it.
        output: It decides what the tags are, so it is part of the map's fingerprint and
            (when not at its default) of a refresh target's settings hash.
        name: The name users write (``Tagger(...)`` keyword, ``--name`` option, YAML key),
            when it is not the field's (``endpoint`` for ``endpoints``).
        option: Put it on the command line (``instag tag``/``run``): ``{}`` derives the
            option from the field, or give ``choices``, ``minimum``, ``metavar``, ``help``
            (``--help``'s text when it differs) and ``show_default``.
        config: Accept it as a key of a refresh config's target.
        omitted_at_default: For an ``output`` setting added after fingerprints were made:
            left out of the fingerprint and the pickled state while it has its default, so
            the fingerprints and cache keys made before it existed stay the same.

    Returns:
        A :func:`dataclasses.field`.
    """
    metadata = {
        "help": help,
        "decides_output": output,
        "name": name,
        "option": option,
        "config": config,
        "omitted_at_default": omitted_at_default,
    }
    return field(default=default, default_factory=default_factory, metadata=metadata)


@dataclass(frozen=True)
class TaggerSettings:
    """A Tagger's settings, validated when built; ``Tagger(...)``'s keywords, the ``instag
    tag``/``run`` options and a refresh target's tagging keys are all read from these fields.

    ``endpoint`` and ``template`` take what ``Tagger`` takes (a comma-separated string or a
    list; a template name, text or object) and are kept as a tuple of base URLs and a
    :class:`~instag_hf.tagging.prompts.PromptTemplate`.

    Raises:
        ConfigurationError: A value is out of range, unknown, or contradicts another.

    Example:
        >>> TaggerSettings(endpoints="http://127.0.0.1:8080/v1/", max_new_tokens=64).endpoints
        ('http://127.0.0.1:8080',)
    """

    # The order of the fields is the order of the pickled state, hence of the fingerprint:
    # a new setting goes at the end. To add one: a field here (with ``output=True`` if it
    # changes the tags, ``option={}`` for the CLI, ``config=True`` for refresh configs), and
    # its use; Tagger(...), --help, the docs and the config keys follow from the field.
    endpoints: tuple[str, ...] = setting((), name="endpoint", config=True, option={"help": "Tagging server URL(s), comma-separated (default: $INSTAG_ENDPOINT)."},
        help="Base URL of the server (a trailing ``/v1`` is fine), or several (a list or a comma-separated string) to spread the load over. None reads ``INSTAG_ENDPOINT`` when tagging starts.")  # fmt: skip
    model: str | None = setting(None, output=True, config=True, option={"help": "Model to ask, for a server that lists several (or with --provider)."},
        help="The model to ask, for a server that lists several (``GET /v1/models``); a server with one model needs none. Part of the cache identity.")  # fmt: skip
    server: str | None = setting(None, output=True, config=True, option={"choices": SERVER_KINDS, "help": "Server kind, which decides the structured-output form (detected by default)."},
        help="Force the server kind (``tgi``, ``vllm``, ``sglang``, ``openai``, ``llamacpp``) and so its structured-output form; detected by default.")  # fmt: skip
    provider: str | None = setting(None, output=True, config=True, option={"help": "Tag through Hugging Face Inference Providers: 'auto' or a provider name (needs --model)."},
        help="Tag through Hugging Face Inference Providers: ``auto`` lets the router choose, or a provider name (``together``, ...). Needs ``model``; the endpoint is the router (``INSTAG_ROUTER_URL`` overrides its URL) and the key your Hub token.")  # fmt: skip
    template: PromptTemplate = setting(default_factory=lambda: get_template("paper"), output=True, config=True, option={"default": "paper", "show_default": True, "help": "Prompt: 'paper', 'instagger', or a template text containing {query}."},
        help="``paper`` (default, the paper's prompt byte-exact), ``instagger`` (InsTagger's Vicuna prompt), a custom text with ``{query}``, or a :class:`~instag_hf.tagging.prompts.PromptTemplate`.")  # fmt: skip
    format: str | None = setting(None, output=True, option={"choices": FORMAT_NAMES, "help": "Row format (detected from the columns by default)."},
        help="Force the row format (``sharegpt``, ``messages``, ``alpaca``, ``prompt``); detected from the columns by default.")  # fmt: skip
    column: str | None = setting(None, output=True, option={"help": "Column holding the queries (detected by default)."},
        help="Force the column that holds the queries.")  # fmt: skip
    max_new_tokens: int = setting(MAX_NEW_TOKENS, output=True, config=True, option={"minimum": 1},
        help="Generation budget per answer.")  # fmt: skip
    parse_retries: int = setting(1, output=True,
        help="How many times an answer with no recoverable tag is asked again (sampling, seeded) before it becomes the row's ``instag_error``.")  # fmt: skip
    long_queries: str = setting('truncate', output=True,
        help="``truncate`` (default) cuts a query that cannot fit the server's input limit (TGI's ``/info``) and says so in ``instag_error``; ``error`` sends nothing for it and sets ``instag_error``.")  # fmt: skip
    concurrency: int | None = setting(None, option={"minimum": 1, "help": "Requests in flight per endpoint (default: adaptive, within the server's limit)."},
        help="Cap on requests in flight per endpoint (the server's own ``max_concurrent_requests`` is never exceeded either way).")  # fmt: skip
    timeout: float | None = setting(None,
        help="Seconds before one request is abandoned and retried, > 0 (default ``INSTAG_REQUEST_TIMEOUT``, read when tagging starts, or 120).")  # fmt: skip
    retry: RetryPolicy = setting(default_factory=RetryPolicy,
        help="The :class:`~instag_hf.tagging.retry.RetryPolicy` for failed requests.")  # fmt: skip
    fail_fast_seconds: float = setting(30.0,
        help="Stop the whole map with :class:`~instag_hf.errors.EndpointError` once no endpoint has answered for this many seconds while requests fail (refused, dropped or timed-out connections, 429 and 5xx), however few attempts that was, instead of marking every remaining row failed. A server restart shorter than this is ridden out by retries. A hung server (connections accepted, no answer) is noticed when its requests time out: the map stops after at most ``timeout`` + ``fail_fast_seconds`` (150 s with the defaults). A server started by :mod:`instag_hf.local_llm` that exits stops the map at once.")  # fmt: skip
    cache: bool | str = setting(True,
        help="True (default, unless ``INSTAG_CACHE=0``) keeps every answer in the on-disk request cache, a folder path puts the cache there, False turns it off.")  # fmt: skip
    progress: bool | None = setting(None,
        help="Show a progress bar; None follows ``datasets``' progress-bar switch.")  # fmt: skip
    api_key_env: str | None = setting(None, config=True, option={"metavar": "NAME", "help": "Name of the environment variable that holds the endpoint's API key (default: INSTAG_API_KEY; the key itself never goes on the command line)."},
        help="Name of the environment variable holding the key (read when tagging starts, in every worker). Default: ``INSTAG_API_KEY`` if set. Without any key, your Hugging Face token goes to Hugging Face's inference hosts only. Never the key itself.")  # fmt: skip
    connector: ConnectorFactory | None = setting(None,
        help="A zero-argument callable returning the ``aiohttp`` connector of each session (one per event loop, detection included): a custom DNS resolver (``aiohttp.TCPConnector(resolver=...)``), a private CA (``ssl=...``), a proxy. Default ``aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)``; keep ``limit=0``, the endpoint pool bounds concurrency. Must pickle for ``num_proc`` (a module-level function or a ``functools.partial`` of one).")  # fmt: skip
    answer: str = setting("paper", output=True, omitted_at_default=True, config=True, option={"choices": ANSWER_FORMS, "show_default": True, "help": "Answer form: 'paper' (tags with explanations) or 'tags' (titles only, about half the generated tokens)."},
        help="``paper`` (default): the paper's answer form, a list of ``{\"tag\", \"explanation\"}``. ``tags``: a list of tag titles only (the built-in prompt's answer format reworded, the JSON schema a list of strings), about half the generated tokens; ``explanation`` is then ``\"\"`` in ``instag_raw_tags``. Part of the fingerprint and the cache key when not the default.")  # fmt: skip

    def __post_init__(self) -> None:
        self._set("endpoints", parse_endpoints(self.endpoints or None))
        if self.retry is None:  # Tagger(retry=None): the default policy
            self._set("retry", RetryPolicy())
        self._set("template", get_template(self.template))
        self._set("fail_fast_seconds", float(self.fail_fast_seconds))
        if not isinstance(self.cache, bool):
            self._set("cache", os.fspath(self.cache))
        if self.timeout is not None:
            self._set("timeout", env.check_timeout(self.timeout))
        _check_model_choice(self.endpoints, self.model, self.server, self.provider)
        check_env_name(self.api_key_env)
        if self.connector is not None and not callable(self.connector):
            raise ConfigurationError("connector must be a callable that returns an aiohttp connector")
        if self.format is not None and self.format not in FORMAT_NAMES:
            raise ConfigurationError(f"Unknown format {self.format!r}: use one of {', '.join(FORMAT_NAMES)}")
        if self.answer not in ANSWER_FORMS:
            raise ConfigurationError(
                f"Unknown answer form {self.answer!r}: use 'paper' (tags with explanations, the paper's) "
                "or 'tags' (tag titles only, about half the generated tokens)"
            )
        for name in ("max_new_tokens", "parse_retries", "concurrency"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) and (value is not None or name != "concurrency"):
                raise ConfigurationError(f"{name} must be a whole number, got {value!r}")
        if self.max_new_tokens < 1:
            raise ConfigurationError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.concurrency is not None and self.concurrency < 1:
            raise ConfigurationError(f"concurrency must be >= 1 or None, got {self.concurrency}")
        if self.parse_retries < 0:
            raise ConfigurationError(f"parse_retries must be >= 0, got {self.parse_retries}")
        if self.long_queries not in ("truncate", "error"):
            raise ConfigurationError(f"long_queries must be 'truncate' or 'error', got {self.long_queries!r}")
        if self.fail_fast_seconds < 0:
            raise ConfigurationError(f"fail_fast_seconds must be >= 0, got {self.fail_fast_seconds}")

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)  # normalising a frozen dataclass's own input

    @property
    def request_model(self) -> str | None:
        """The model id sent to the server: ``model``, with ``:provider`` for a named provider."""
        if self.model is None or self.provider in (None, "auto"):
            return self.model
        return f"{self.model}:{self.provider}"

    @property
    def prompt(self) -> PromptTemplate:
        """The template as sent: ``template`` with its answer format worded for ``answer``."""
        return for_answer(self.template, self.answer)

    def output_fields(self) -> dict[str, Any]:
        """The settings that decide the tags, as plain values: hashed into the fingerprint."""
        return {f.name: _plain(getattr(self, f.name)) for f in self._kept() if f.metadata.get("decides_output")}

    def state(self) -> dict[str, Any]:
        """Every setting but the endpoints, as plain values (what pickling sends)."""
        return {f.name: _plain(getattr(self, f.name)) for f in self._kept() if f.name != "endpoints"}

    def _kept(self) -> list[Any]:
        return [
            f for f in fields(self) if not (f.metadata.get("omitted_at_default") and getattr(self, f.name) == f.default)
        ]

    @classmethod
    def from_state(cls, state: dict[str, Any], endpoints: Sequence[str]) -> TaggerSettings:
        """The settings :meth:`state` described, at ``endpoints`` (a setting left out has its default)."""
        names = {f.name for f in fields(cls)} - {"endpoints", "template"}
        return cls(
            endpoints=tuple(endpoints),
            template=PromptTemplate(**state["template"]),
            **{name: state[name] for name in names if name in state},
        )


def public_name(setting: Field[Any]) -> str:
    """The name users write for a setting: ``Tagger(...)`` keyword, ``--option``, YAML key."""
    return setting.metadata.get("name") or setting.name


#: Every setting by the name users write (``endpoint``, ``model``, ...).
SETTINGS: dict[str, Field[Any]] = {public_name(f): f for f in fields(TaggerSettings)}


def settings_from(values: Mapping[str, Any], *, defaults: Mapping[str, Any] | None = None) -> TaggerSettings:
    """:class:`TaggerSettings` from the names users write (``endpoint=``, not ``endpoints=``).

    Args:
        values: Settings by :func:`public_name`.
        defaults: Field values used for the names ``values`` leaves out.

    Raises:
        TypeError: A name is not a setting (as a Python call with a wrong keyword would).
        ConfigurationError: A value is invalid.
    """
    unknown = sorted(set(values) - set(SETTINGS))
    if unknown:
        raise TypeError(f"Unknown tagger setting(s) {unknown}; the settings are {sorted(SETTINGS)}")
    return TaggerSettings(**{**(defaults or {}), **{SETTINGS[name].name: value for name, value in values.items()}})


def settings_doc(indent: str = "        ") -> str:
    """Every setting as a docstring ``Args`` entry, in field order (the ``Tagger`` docstring's)."""
    return "\n".join(
        textwrap.fill(
            f"{public_name(f)}: {f.metadata['help']}",
            width=100,
            initial_indent=indent,
            subsequent_indent=indent + "    ",
        )  # fmt: skip
        for f in fields(TaggerSettings)
    )


def _plain(value: Any) -> Any:
    if isinstance(value, PromptTemplate):
        return {"name": value.name, "text": value.text, "kind": value.kind}
    return value


def parse_endpoints(endpoint: str | Sequence[str] | None, where: str = "Endpoint") -> tuple[str, ...]:
    """Base URLs from a comma-separated string or a list, in order, without blanks; ``()`` for None.

    The one endpoint parser: ``Tagger(endpoint=...)``, ``--endpoint``, a refresh target's
    ``endpoint`` and ``INSTAG_ENDPOINT`` all go through it.

    Args:
        endpoint: ``"http://a:8080,http://b:8080/v1"`` or a list of URLs.
        where: What the value came from, for the error (``"INSTAG_ENDPOINT"``, a config key).

    Raises:
        ConfigurationError: One is not ``http://`` or ``https://`` (``127.0.0.1:8080``,
            ``ftp://...``: it would only fail later as "does not answer"), or carries credentials.
    """
    if endpoint is None:
        return ()
    parts = endpoint.split(",") if isinstance(endpoint, str) else [str(e) for e in endpoint]
    urls = []
    for url in (part.strip().rstrip("/") for part in parts):
        if not url:
            continue
        if not url.lower().startswith(("http://", "https://")) or not url.split("://", 1)[1]:
            raise ConfigurationError(f"{where} {url!r} is not an http(s) URL: write it as http://host:port")
        if "@" in urlsplit(url).netloc:  # the URL would be hashed, pickled and logged
            raise ConfigurationError(
                "An endpoint URL must not carry credentials (user:key@host): "
                "pass the key with api_key_env=NAME or INSTAG_API_KEY"
            )
        urls.append(base_url(url))
    return tuple(urls)


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
