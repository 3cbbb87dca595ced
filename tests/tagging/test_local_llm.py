"""The local llama.cpp server: built to run on this CPU, watched, and explained when it dies.

The session fixture sends one constrained chat completion before any llama.cpp test runs
(``tests/conftest.py``), so a server that cannot answer it fails them all with the
launcher's message; the smoke test below checks that answer's shape too.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import datasets
import jsonschema
import pytest

from instag_hf import Tagger
from instag_hf.errors import EndpointError
from instag_hf.local_llm import exit_status, start_llama_cpp
from instag_hf.tagging.dialects import answer_schema
from instag_hf.tagging.prompts import TAGS_JSON_SCHEMA
from tests.conftest import constrained_completion


def test_one_constrained_chat_completion_answers_schema_valid_json(llama_cpp):
    payload = constrained_completion(llama_cpp)
    text = payload["choices"][0]["message"]["content"]
    if payload["choices"][0].get("finish_reason") != "length":  # cut off at 64 tokens is not the server's fault
        jsonschema.validate(json.loads(text), answer_schema(TAGS_JSON_SCHEMA))
    llama_cpp.check()


def _shared_libraries() -> list[Path]:
    import importlib.util

    spec = importlib.util.find_spec("llama_cpp")
    assert spec is not None and spec.origin is not None
    libs = sorted(Path(spec.origin).parent.rglob("*.so*"))
    assert any("ggml" in lib.name for lib in libs), libs
    return libs


def test_the_llama_cpp_build_uses_no_avx512_or_amx_instruction():
    # A build for the build machine's every extension died with SIGILL on CPUs listing
    # AVX-512/AMX (issue 10): the Makefile builds for the AVX2 baseline. objdump (binutils,
    # there wherever gcc is) shows what the binary would execute.
    offending = re.compile(r"%zmm\d|%k[1-7]\b|\btile(loadd|stored|zero|release|cfg)|\btdpb")
    for lib in _shared_libraries():
        listing = subprocess.run(
            ["objdump", "-d", "--no-show-raw-insn", str(lib)], capture_output=True, text=True, check=True
        ).stdout
        hits = [line for line in listing.splitlines() if offending.search(line)]
        assert not hits, f"{lib.name} holds AVX-512/AMX instructions, e.g. {hits[:3]}"


def test_a_server_that_exits_at_start_names_its_exit_status_and_shows_its_log(tmp_path):
    bad = tmp_path / "not-a-model.gguf"
    bad.write_bytes(b"this is not a GGUF file")
    with pytest.raises(EndpointError) as caught, start_llama_cpp(bad, log_path=tmp_path / "server.log", timeout=120):
        pass
    message = str(caught.value)
    assert re.search(r"died \((exit code [1-9]\d*|killed by signal SIG\w+)", message), message
    assert "server.log" in message
    log_lines = (tmp_path / "server.log").read_text(errors="replace").strip().splitlines()
    assert log_lines and log_lines[-1].strip() in message  # the log's tail is in the message


def test_a_server_that_dies_under_load_stops_the_map_at_once_with_its_signal(tmp_path):
    ds = datasets.Dataset.from_dict({"prompt": [f"Explain sorting algorithm number {i}." for i in range(60)]})
    # fail_fast_seconds so long that only the launcher's report can stop the map in time.
    with start_llama_cpp(log_path=tmp_path / "server.log") as server:
        tagger = Tagger(server.url, cache=False, max_new_tokens=32, progress=False, fail_fast_seconds=3600)

        def kill_after_first_answer() -> None:
            while tagger.stats.answered < 1 and server.process.poll() is None:
                time.sleep(0.05)
            os.kill(server.process.pid, signal.SIGKILL)

        killer = threading.Thread(target=kill_after_first_answer, daemon=True)
        killer.start()
        with pytest.raises(EndpointError) as caught:
            ds.map(tagger.atag, batched=True, batch_size=8)
        killer.join()
    message = str(caught.value)
    assert "killed by signal SIGKILL" in message and "server.log" in message, message
    assert tagger.stats.answered < 60


def test_exit_status_reads_codes_and_signals():
    assert exit_status(1) == "exit code 1"
    assert exit_status(-signal.SIGILL) == "killed by signal SIGILL (illegal instruction)"
    assert exit_status(-signal.SIGKILL).startswith("killed by signal SIGKILL")
