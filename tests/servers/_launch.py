"""Starting a loopback test server in its own process (:func:`spawn_server`: the protocol server,
the Batch-API emulator), and talking to its control routes."""

from __future__ import annotations

import json
import queue
import ssl
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from typing import Any

from tests.servers._knobs import REPO_ROOT, Knobs


class TGIServerHandle:
    """A running server process: ``url``, knobs, statistics; a context manager that stops it."""

    def __init__(self, process: subprocess.Popen[str], url: str, stderr: Any, cafile: str | None = None) -> None:
        self.process, self.url, self._stderr = process, url, stderr
        handlers: list[Any] = [urllib.request.ProxyHandler({})]  # never via a proxy
        if cafile is not None:
            handlers.append(urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=cafile)))
        self._opener = urllib.request.build_opener(*handlers)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with self._opener.open(request, timeout=30) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise ValueError(f"{method} {path} failed with {exc.code}: {exc.read().decode()}") from None

    def set_knobs(self, **knobs: Any) -> dict[str, Any]:
        """Change some knobs (the others keep their values); returns all knobs."""
        return self._call("POST", "/_control/knobs", knobs)

    def knobs(self) -> dict[str, Any]:
        return self._call("GET", "/_control/knobs")

    def stats(self) -> dict[str, Any]:
        """requests, routes, statuses, faults, in_flight, max_in_flight, queries, log."""
        return self._call("GET", "/_control/stats")

    def reset(self, knobs: bool = False) -> None:
        """Zero the statistics; with ``knobs=True`` also restore the knobs the server started with."""
        self._call("POST", "/_control/reset?knobs=1" if knobs else "/_control/reset")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe:
                pipe.close()
        self._stderr.close()

    def __enter__(self) -> TGIServerHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def start_tgi_server(
    *, host: str = "127.0.0.1", port: int = 0, timeout: float = 30.0, tls: tuple[str, str] | None = None, **knobs: Any
) -> TGIServerHandle:
    """Start the server in its own process (its CPU never counts against the client).

    Args:
        host, port: where to listen; port 0 picks a free one.
        timeout: seconds to wait for the READY line.
        tls: ``(certfile, keyfile)`` to serve https (the certificate must name 127.0.0.1).
        **knobs: initial ``Knobs`` values (``personality="openai"`` for the vLLM/OpenAI API).

    Returns:
        A handle; use it as a context manager or call ``close()``.

    Raises:
        ValueError: a knob is unknown or invalid.
        RuntimeError: the server did not start; the message carries its stderr.
    """
    Knobs(**knobs)  # fail here, in the caller, on a bad knob
    args = ["--host", host, "--port", str(port), "--knobs", json.dumps(knobs)]
    if tls is not None:
        args += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
    cafile = str(tls[0]) if tls else None
    return spawn_server("tests.servers.tgi_server", args, timeout=timeout, name="TGI test server", cafile=cafile)


def spawn_server(
    module: str, args: list[str], *, timeout: float = 30.0, name: str = "test server", cafile: str | None = None
) -> TGIServerHandle:
    """Run ``python -m module ARGS --exit-with-stdin`` and wait for its ``READY <url>`` line.

    The server must print that line once listening, stop on SIGTERM, and stop when its stdin
    closes (our end closes when this process dies, however it dies: no orphan servers).

    Raises:
        RuntimeError: It did not start within ``timeout``; the message carries its stderr.
    """
    stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 -- lives as long as the server
    command = [sys.executable, "-m", module, *args, "--exit-with-stdin"]
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True
    )
    lines: queue.Queue[str] = queue.Queue()

    def read_ready_line() -> None:
        lines.put(process.stdout.readline())  # type: ignore[union-attr]

    threading.Thread(target=read_ready_line, daemon=True).start()
    try:
        line = lines.get(timeout=timeout)
    except queue.Empty:
        line = ""
    if not line.startswith("READY "):
        process.kill()
        process.wait()
        stderr.seek(0)
        message = f"{name} did not start within {timeout}s (stdout {line!r}); its stderr:\n{stderr.read()}"
        stderr.close()
        raise RuntimeError(message)
    return TGIServerHandle(process, line.split(" ", 1)[1].strip(), stderr, cafile)


async def serve_until_stopped(
    app: Any, host: str, port: int, exit_with_stdin: bool, tls: tuple[str, str] | None = None
) -> None:
    """Serve an aiohttp ``app`` on ``host:port`` until SIGTERM/SIGINT (or EOF on stdin), printing
    the ``READY <url>`` line :func:`spawn_server` waits for. One loop for every loopback server."""
    import asyncio
    import signal

    from aiohttp import web

    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    context = None
    if tls is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*tls)
    # A deep backlog: benchmarks open 128+ connections at once and must not wait on SYN retries.
    await web.TCPSite(runner, host, port, backlog=4096, ssl_context=context).start()
    print(f"READY {'https' if tls else 'http'}://{host}:{runner.addresses[0][1]}", flush=True)
    loop, stop = asyncio.get_running_loop(), asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if exit_with_stdin:  # the parent holds our stdin: EOF means it died without stopping us

        def wait_for_eof() -> None:
            sys.stdin.read()
            loop.call_soon_threadsafe(stop.set)

        threading.Thread(target=wait_for_eof, daemon=True).start()
    await stop.wait()
    await runner.cleanup()
