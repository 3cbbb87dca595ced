"""Which key goes to which endpoint, and how a refusal is explained.

One key at most per endpoint, chosen in this order:

1. ``Tagger(headers={"Authorization": ...})``: sent as given, to every endpoint.
2. An API key: ``Tagger(api_key=...)``, else the variable named by ``api_key_env``
   (``--api-key-env NAME``, ``api_key_env:`` in a refresh config), else ``INSTAG_API_KEY``.
   Sent as ``Authorization: Bearer <key>`` to every endpoint of the Tagger: the user chose
   those endpoints for that key.
3. The user's Hugging Face token (``huggingface_hub.get_token()``), only to Hugging Face's
   own inference hosts: Inference Endpoints (``https://*.endpoints.huggingface.cloud``) and
   the Inference Providers router (``https://router.huggingface.co``, or the URL in
   ``INSTAG_ROUTER_URL``). Never to any other URL, and never over plain http to the
   built-in hosts.

Keys live in an :class:`EndpointAuth`, which exists per process and event loop and is never
pickled, hashed or shown: its ``repr`` names sources, not values, and :meth:`scrub` takes
the keys out of any text a server sends back before that text reaches an error, a log or
an ``instag_error`` cell.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

from instag_hf import env
from instag_hf.errors import AuthenticationError, ConfigurationError, scrub_secrets

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HF_ENDPOINTS_SUFFIX = ".endpoints.huggingface.cloud"
_HF_ROUTER_HOST = "router.huggingface.co"
_HOW_TO_SET = (
    "set INSTAG_API_KEY, or name the variable that holds it with --api-key-env NAME (CLI) / "
    "api_key_env: NAME (refresh config) / Tagger(api_key_env=NAME), or pass Tagger(api_key=...)"
)
_HF_TOKEN_SOURCE = "your Hugging Face token (huggingface_hub.get_token(): HF_TOKEN or `hf auth login`)"


def check_env_name(name: str | None, what: str = "api_key_env") -> None:
    """Reject anything that is not a variable name, without echoing it (it may be the key itself).

    Raises:
        ConfigurationError: ``name`` is not a valid environment variable name.
    """
    if name is not None and (not isinstance(name, str) or not _ENV_NAME.fullmatch(name)):
        raise ConfigurationError(
            f"{what} takes the NAME of an environment variable (letters, digits, underscores), "
            "not the key itself: export the key as, say, MY_KEY and pass MY_KEY"
        )


def base_url(url: str) -> str:
    """``url`` without a trailing ``/`` or ``/v1`` (OpenAI clients' base URLs end in ``/v1``)."""
    url = url.strip().rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def is_hf_inference_url(url: str, router_url: str | None = None) -> bool:
    """Whether ``url`` is one of Hugging Face's inference hosts, the only ones that get the Hub token.

    Args:
        url: An endpoint's base URL.
        router_url: The router's base URL (default: ``INSTAG_ROUTER_URL`` or the public router).
    """
    router = urlsplit(base_url(router_url or env.router_url()))
    parts = urlsplit(base_url(url))
    if (parts.scheme, parts.netloc.lower()) == (router.scheme, router.netloc.lower()) and (
        parts.path == router.path or parts.path.startswith(router.path.rstrip("/") + "/")
    ):
        return True  # the router the user (or the default) named
    host = (parts.hostname or "").lower()
    if parts.scheme != "https":
        return False  # a token in clear text is a token given away
    return host == _HF_ROUTER_HOST or host.endswith(_HF_ENDPOINTS_SUFFIX)


class EndpointAuth:
    """The ``Authorization`` header of each endpoint, and where its key came from.

    Args:
        urls: The endpoints' base URLs.
        api_key: A key given in Python (``Tagger(api_key=...)``).
        api_key_env: Name of the variable holding the key.
        headers: Extra headers given by the user (an ``Authorization`` among them wins).

    Raises:
        ConfigurationError: ``api_key_env`` names an unset variable.
    """

    def __init__(
        self,
        urls: Iterable[str],
        *,
        api_key: str | None = None,
        api_key_env: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._base = dict(headers or {})
        given = next((v for k, v in self._base.items() if k.lower() == "authorization"), None)
        self._by_url: dict[str, tuple[str | None, str]] = {}
        self._secrets: set[str] = set()
        if given is not None:
            self._add_secret(given)
            key: str | None = None
            source = "the Authorization header given in Tagger(headers=...)"
        elif api_key:
            key, source = api_key, "Tagger(api_key=...)"
        elif api_key_env:
            key = env.api_key(api_key_env)
            if key is None:
                raise ConfigurationError(
                    f"The API key variable ${api_key_env} (named by --api-key-env / api_key_env) is not set "
                    "or is empty: export it before running"
                )
            source = f"${api_key_env} (named by api_key_env)"
        else:
            key = env.api_key()
            source = f"${env.ENV_API_KEY}"
        if key is not None:
            self._add_secret(key)
        router = env.router_url()
        hf_token: str | None = None
        for url in urls:
            if given is not None or key is not None:
                self._by_url[url] = (key, source)
            elif is_hf_inference_url(url, router):
                if hf_token is None:
                    hf_token = _hf_token()
                    if hf_token:
                        self._add_secret(hf_token)
                self._by_url[url] = (hf_token or None, _HF_TOKEN_SOURCE if hf_token else "")
            else:
                self._by_url[url] = (None, "")

    def _add_secret(self, value: str) -> None:
        value = value.strip()
        self._secrets.add(value)
        if value.lower().startswith("bearer "):
            self._secrets.add(value[len("bearer ") :].strip())

    def headers_for(self, url: str) -> dict[str, str] | None:
        """The headers of every request to ``url``."""
        key, _ = self._by_url.get(url, (None, ""))
        if key is None:
            return self._base or None
        return {**self._base, "Authorization": f"Bearer {key}"}

    def source_for(self, url: str) -> str:
        """Where the key sent to ``url`` was read from ('' when none is sent)."""
        return self._by_url.get(url, (None, ""))[1]

    def scrub(self, text: str | None) -> str | None:
        """``text`` with every key replaced by ``***`` (servers may echo what they were sent)."""
        return scrub_secrets(text, self._secrets) if text else text

    def refused(self, url: str, path: str, status: int | None, error: str | None) -> AuthenticationError:
        """The one-line error for an endpoint that answered 401/403."""
        what = self.scrub(error) or "no message"
        head = f"Tagging endpoint {url} refused {path} with HTTP {status} ({what[:200]})."
        source = self.source_for(url)
        if source:
            advice = (
                f"The key sent was read from {source}: check that it is valid for this endpoint "
                f"and may call it; to send another, {_HOW_TO_SET}."
            )
            if source == _HF_TOKEN_SOURCE:
                advice = (
                    f"The key sent was {source}: check that it may call this endpoint (Inference "
                    "Providers need a token allowed to make calls to them), or send another key: "
                    f"{_HOW_TO_SET}."
                )
        elif is_hf_inference_url(url):
            advice = (
                "No key was sent: no Hugging Face token was found; run `hf auth login` or set HF_TOKEN, "
                f"or {_HOW_TO_SET}."
            )
        else:
            advice = (
                f"No key was sent: {_HOW_TO_SET}. (A key given in Python, Tagger(api_key=...) or headers=, "
                "is never pickled, so num_proc workers do not have it: use the environment there.)"
            )
        return AuthenticationError(f"{head} {advice} Nothing was retried.", url=url, status=status)

    def __repr__(self) -> str:
        sources = sorted({source or "no key" for _, source in self._by_url.values()})
        return f"EndpointAuth({', '.join(sources)})"

    def __reduce__(self) -> tuple:
        raise TypeError("EndpointAuth holds keys and is never pickled")


def _hf_token() -> str | None:
    from huggingface_hub import get_token

    return get_token()
