"""The one place that reads ``INSTAG_*`` environment variables.

Values are read when asked for (not at import), so a process that sets a variable before
its first tagging call is honoured. The Hugging Face token is never read here:
``huggingface_hub`` resolves it itself. An endpoint's API key is read here, only when a
request is about to need it, and never kept by this module.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Comma-separated tagging endpoints, e.g. ``http://tgi-0:8080,http://tgi-1:8080``.
ENV_ENDPOINT = "INSTAG_ENDPOINT"
#: Folder of the on-disk request cache (default: ``<datasets cache>/instag_requests``).
ENV_CACHE_DIR = "INSTAG_CACHE_DIR"
#: ``0``/``false``/``off`` turns the request cache off.
ENV_CACHE = "INSTAG_CACHE"
#: Hub model id or local path of the embedding model for semantic aggregation.
ENV_EMBEDDING_MODEL = "INSTAG_EMBEDDING_MODEL"
#: Seconds before one request to an endpoint is abandoned (and retried).
ENV_REQUEST_TIMEOUT = "INSTAG_REQUEST_TIMEOUT"

#: API key sent as ``Authorization: Bearer <key>`` to the tagging endpoints (vLLM
#: ``--api-key``, a hosted OpenAI-compatible API, an Inference Endpoint).
ENV_API_KEY = "INSTAG_API_KEY"
#: Base URL of Hugging Face's Inference Providers router (``Tagger(provider=...)``).
ENV_ROUTER_URL = "INSTAG_ROUTER_URL"

DEFAULT_REQUEST_TIMEOUT = 120.0
DEFAULT_ROUTER_URL = "https://router.huggingface.co/v1"
_FALSE = {"0", "false", "no", "off"}


def endpoints_from_env() -> tuple[str, ...]:
    """Endpoints listed in ``INSTAG_ENDPOINT``, in order, without blanks."""
    raw = os.environ.get(ENV_ENDPOINT, "")
    return tuple(part.strip().rstrip("/") for part in raw.split(",") if part.strip())


def cache_enabled() -> bool:
    return os.environ.get(ENV_CACHE, "1").strip().lower() not in _FALSE


def cache_dir() -> Path:
    explicit = os.environ.get(ENV_CACHE_DIR)
    if explicit:
        return Path(explicit).expanduser()
    from datasets import config  # imported late: reading HF_DATASETS_CACHE is its job

    return Path(config.HF_DATASETS_CACHE) / "instag_requests"


def embedding_model() -> str | None:
    return os.environ.get(ENV_EMBEDDING_MODEL) or None


def request_timeout() -> float:
    raw = os.environ.get(ENV_REQUEST_TIMEOUT)
    return float(raw) if raw else DEFAULT_REQUEST_TIMEOUT


def api_key(variable: str | None = None) -> str | None:
    """The API key in ``variable`` (default ``INSTAG_API_KEY``), None when unset or blank."""
    value = os.environ.get(variable or ENV_API_KEY, "").strip()
    return value or None


def router_url() -> str:
    """Base URL of the Inference Providers router (``INSTAG_ROUTER_URL`` overrides it, for tests)."""
    return (os.environ.get(ENV_ROUTER_URL) or DEFAULT_ROUTER_URL).strip().rstrip("/")
