"""What a :class:`~instag_hf.tagging.tagger.Tagger` is configured with: one frozen object.

``Tagger.__init__`` builds it (every bad value is rejected here, before anything is sent),
pickling sends it to ``num_proc`` workers, the map fingerprint hashes the part of it that
decides the output, and each :class:`~instag_hf.tagging.client.TaggingClient` reads it.
Secrets (a key given in Python, extra headers) are not settings: they never leave the
process and never enter a hash.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
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

#: Marks a setting that decides what the tags are, so it is part of the map's fingerprint.
_OUTPUT = {"decides_output": True}
#: Such a setting added later: left out of the fingerprint and the pickled state while it has
#: its default, so the fingerprints and cache keys made before it existed stay the same.
_NEW_OUTPUT = {"decides_output": True, "omitted_at_default": True}


@dataclass(frozen=True)
class TaggerSettings:
    """A Tagger's settings, validated when built; see :class:`~instag_hf.tagging.tagger.Tagger`
    for what each one means.

    ``endpoint`` and ``template`` take what ``Tagger`` takes (a comma-separated string or a
    list; a template name, text or object) and are kept as a tuple of base URLs and a
    :class:`~instag_hf.tagging.prompts.PromptTemplate`.

    Raises:
        ConfigurationError: A value is out of range, unknown, or contradicts another.

    Example:
        >>> TaggerSettings(endpoints="http://127.0.0.1:8080/v1/", max_new_tokens=64).endpoints
        ('http://127.0.0.1:8080',)
    """

    # The order of the fields is the order of the pickled state, hence of the fingerprint.
    endpoints: tuple[str, ...] = ()
    model: str | None = field(default=None, metadata=_OUTPUT)
    server: str | None = field(default=None, metadata=_OUTPUT)
    provider: str | None = field(default=None, metadata=_OUTPUT)
    template: PromptTemplate = field(default_factory=lambda: get_template("paper"), metadata=_OUTPUT)
    format: str | None = field(default=None, metadata=_OUTPUT)
    column: str | None = field(default=None, metadata=_OUTPUT)
    max_new_tokens: int = field(default=MAX_NEW_TOKENS, metadata=_OUTPUT)
    answer: str = field(default="paper", metadata=_NEW_OUTPUT)
    parse_retries: int = field(default=1, metadata=_OUTPUT)
    long_queries: str = field(default="truncate", metadata=_OUTPUT)
    concurrency: int | None = None
    timeout: float | None = None  # None: INSTAG_REQUEST_TIMEOUT, read when tagging starts
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    fail_fast_seconds: float = 30.0
    cache: bool | str = True
    progress: bool | None = None
    api_key_env: str | None = None  # a variable's name, never a key
    connector: ConnectorFactory | None = None

    def __post_init__(self) -> None:
        self._set("endpoints", parse_endpoints(self.endpoints or None))
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


def _plain(value: Any) -> Any:
    if isinstance(value, PromptTemplate):
        return {"name": value.name, "text": value.text, "kind": value.kind}
    return value


def parse_endpoints(endpoint: str | Sequence[str] | None) -> tuple[str, ...]:
    """Base URLs from a comma-separated string or a list; ``()`` for None.

    Raises:
        ConfigurationError: One is not an http(s) URL, or carries credentials.
    """
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
