"""A loopback Hugging Face Hub API emulator that the real, unmodified clients talk to.

`huggingface_hub` (HfApi, hf_hub_download, snapshot_download, HfFileSystem, DatasetCard)
and `datasets` (`Dataset.push_to_hub`, `load_dataset`) run against it through
`HF_ENDPOINT=http://127.0.0.1:<port>` and `HF_HUB_DISABLE_XET=1` (there is no Xet server;
uploads use the LFS batch API with basic transfer instead).

The emulator runs as its own process, so a CLI started in another subprocess shares it:

    python -m tests.servers.hub_emulator --port 0 --storage DIR --token hf_test_writer=alice
    READY http://127.0.0.1:41234

From tests, use the handle (it starts that process and stops it on exit):

    with start_hub_emulator(tmp_path / "hub", tokens={"hf_test_writer": "alice"}) as hub:
        hub.url                                    # "http://127.0.0.1:<port>"
        hub.set_faults(down=True)                  # every Hub route answers 503
        hub.set_faults(reject_commits=1, status=500, message="boom")  # the next commit POST fails
        hub.set_faults(drop="alice/ds")            # connections of requests about alice/ds are dropped
        hub.set_faults()                           # back to normal
        hub.commits("alice/ds", repo_type="dataset")  # [{"id", "title", "parents", "files", ...}], newest first
        hub.files("alice/ds", revision="main")     # {"README.md": b"...", ...}
        hub.refs("alice/ds")                       # {"refs/heads/main": "<sha>", "refs/pr/1": ...}
        hub.requests()                             # [{"method", "path", "status"}, ...] seen so far

Pointing the clients at it. `huggingface_hub` and `datasets` copy `HF_ENDPOINT`, `HF_HOME`
and `HF_HUB_DISABLE_XET` into module constants when they are first imported, so setting the
environment afterwards does nothing. Two patterns work with huggingface_hub 2.4 / datasets 5.2:

- A client in a subprocess: pass `env={**os.environ, **hub.env(hf_home, token=...)}`.
- Clients in the test process: `with client_environment(hub.url, hf_home, token=...):` sets
  the variables (HF_TOKEN too when given) *and* rewrites the constants of whichever of those
  modules are already imported (endpoint, URL templates, the module-level `HfApi`, Hub
  origins, Xet switch, cache and token paths), restoring all of it on exit. Modules imported
  later read the variables. This works whatever was imported first; a fixture:

      @pytest.fixture
      def hub(tmp_path):
          with start_hub_emulator(tmp_path / "hub", tokens=TOKENS) as hub:
              with client_environment(hub.url, tmp_path / "hf_home", token="hf_test_writer"):
                  yield hub

  A conftest may instead start one session-wide emulator before anything imports the clients:

      def pytest_configure(config):
          stack = contextlib.ExitStack()
          hub = stack.enter_context(start_hub_emulator(tempfile.mkdtemp(), tokens=TOKENS))
          os.environ.update(hub.env(tempfile.mkdtemp()))
          config.add_cleanup(stack.close)

Behaviour worth knowing:
- New repos get an "initial commit" holding `.gitattributes`, as on the Hub; its LFS patterns
  (`*.parquet`, `*.bin`, ...), a size of 10 MB or a NUL byte make preupload answer "lfs".
- Preupload returns the `oid` of a file already at that path, so `huggingface_hub` drops
  unchanged files and, when nothing changed, makes no commit at all (it logs "No files have
  been modified since last commit" and returns the current head). A commit whose operations
  leave the tree unchanged still creates a new commit, as git would.
- Writes need a token with write role on the namespace (its user or an org in `orgs`); an
  unknown token is 401 "Invalid credentials in Authorization header" on any route; private
  repos are 404 RepoNotFound to everyone else; a dataset asked for as a model is 404 too.
- `create_pr=1` creates `refs/pr/N` (N from 1) and leaves the branch alone; a stale
  `parentCommit` is 412; a rejected or invalid commit changes no ref.
- While "down", `huggingface_hub` retries the routes it calls through `http_backoff`
  (preupload, LFS batch, tree/commit listing) 5 times over ~23 s before raising; repo
  info, create_repo and commit fail at once; `hf_hub_download` falls back to its cache.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO_ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT = 60.0


class HubEmulator:
    """Handle on a running emulator process; all inspection goes through its `/_emulator/` routes."""

    def __init__(self, url: str, storage_dir: Path, process: subprocess.Popen[str]) -> None:
        self.url = url
        self.storage_dir = storage_dir
        self.process = process

    def env(self, hf_home: str | os.PathLike[str], token: str | None = None) -> dict[str, str]:
        """Environment variables that point a client process at this emulator."""
        env = {
            "HF_ENDPOINT": self.url,
            "HF_HUB_DISABLE_XET": "1",
            "HF_HOME": str(hf_home),
            "HF_HUB_DISABLE_TELEMETRY": "1",
        }
        if token is not None:
            env["HF_TOKEN"] = token
        return env

    def _admin(self, action: str, payload: dict[str, Any] | None = None, **query: str) -> Any:
        url = f"{self.url}/_emulator/{action}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def set_faults(
        self,
        *,
        down: bool = False,
        reject_commits: int = 0,
        status: int = 500,
        message: str | None = None,
        drop: str | None = None,
    ) -> None:
        """Replace the fault set: `down` answers 503 everywhere; `reject_commits` fails the next N commits;
        `drop` closes the connection of every request whose path contains that text, answering nothing."""
        faults: dict[str, Any] = {"down": down, "reject_commits": reject_commits, "status": status, "drop": drop}
        if message is not None:
            faults["message"] = message
        self._admin("faults", faults)

    def faults(self) -> dict[str, Any]:
        return self._admin("faults")

    def repos(self) -> list[dict[str, Any]]:
        return self._admin("repos")

    def commits(self, repo_id: str, repo_type: str = "dataset", revision: str | None = None) -> list[dict[str, Any]]:
        """Every commit of the repo (or the history of `revision`), newest first."""
        query = {"repo_id": repo_id, "repo_type": repo_type}
        if revision is not None:
            query["revision"] = revision
        return self._admin("commits", **query)

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "dataset") -> dict[str, bytes]:
        files = self._admin("files", repo_id=repo_id, repo_type=repo_type, revision=revision)
        return {path: base64.b64decode(content) for path, content in files.items()}

    def refs(self, repo_id: str, repo_type: str = "dataset") -> dict[str, str]:
        return self._admin("refs", repo_id=repo_id, repo_type=repo_type)

    def requests(self) -> list[dict[str, Any]]:
        return self._admin("requests")


@contextlib.contextmanager
def start_hub_emulator(
    storage_dir: str | os.PathLike[str],
    tokens: Mapping[str, str | Mapping[str, str]] | None = None,
    *,
    orgs: Mapping[str, list[str]] | None = None,
    page_size: int | None = None,
) -> Iterator[HubEmulator]:
    """Start an emulator process on a free loopback port; stop it on exit.

    Args:
        storage_dir: Folder for blobs and the server log (`emulator.log`); created if missing.
        tokens: token -> user name (a write token), or -> {"user": name, "role": "read" | "write"}.
        orgs: org name -> member user names (members may write to the org's repos).
        page_size: Force a page size for tree and commit listings (to exercise pagination).
    """
    storage = Path(storage_dir)
    storage.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "tests.servers.hub_emulator", "--port", "0", "--storage", str(storage)]
    command += ["--exit-with-stdin"]  # the emulator dies with the test process, even on SIGKILL
    command += ["--config", json.dumps({"tokens": dict(tokens or {}), "orgs": dict(orgs or {})})]
    if page_size is not None:
        command += ["--page-size", str(page_size)]
    with open(storage / "emulator.log", "ab") as log:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True
        )
    try:
        yield HubEmulator(_wait_ready(process, storage), storage, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdin.close()
        process.stdout.close()


def _wait_ready(process: subprocess.Popen[str], storage: Path) -> str:
    found: list[str] = []
    reader = threading.Thread(target=lambda: found.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(STARTUP_TIMEOUT)
    line = found[0] if found else ""
    if not line.startswith("READY "):
        process.kill()
        log = (storage / "emulator.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"Hub emulator did not start (got {line!r}); log:\n{log}")
    return line.split()[1]


# Module -> (constant holding its cache root, constants derived from the endpoint).
_IMPORT_TIME_CONSTANTS = {
    "huggingface_hub.constants": (
        "HF_HOME",
        {
            "ENDPOINT": "{url}",
            "HUGGINGFACE_CO_URL_TEMPLATE": "{url}/{{repo_id}}/resolve/{{revision}}/{{filename}}",
        },
    ),
    "datasets.config": (
        "HF_CACHE_HOME",
        {"HF_ENDPOINT": "{url}", "HUB_DATASETS_URL": "{url}/datasets/{{repo_id}}/resolve/{{revision}}/{{path}}"},
    ),
}


def _rehomed(value: Any, old_home: str, new_home: Path) -> Any:
    """`value` moved under `new_home` if it is a path under `old_home` (str or Path), else None."""
    text = os.fspath(value) if isinstance(value, (str, Path)) else None
    if text is None or not (text == old_home or text.startswith(old_home.rstrip(os.sep) + os.sep)):
        return None
    moved = str(new_home) + text[len(old_home.rstrip(os.sep)) :]
    return Path(moved) if isinstance(value, Path) else moved


@contextlib.contextmanager
def client_environment(url: str, hf_home: str | os.PathLike[str], token: str | None = None) -> Iterator[None]:
    """Point in-process `huggingface_hub`/`datasets` at `url`, caching under `hf_home`; undo on exit.

    Sets the environment variables of `HubEmulator.env`, then, in whichever of those modules
    are already imported, rewrites the endpoint constants (and `hf_api.api.endpoint`), the
    Xet switch, the Hub hosts and origins, and every path constant under the old cache root.
    """
    home = Path(hf_home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    env = HubEmulator(url, home, None).env(home, token)  # type: ignore[arg-type]
    saved_env = {key: os.environ.get(key) for key in [*env, "HF_TOKEN"]}
    saved: list[tuple[Any, str, Any]] = []

    def patch(module: Any, name: str, value: Any) -> None:
        saved.append((module, name, getattr(module, name)))
        setattr(module, name, value)

    os.environ.pop("HF_TOKEN", None)
    os.environ.update(env)
    for module_name, (home_name, templates) in _IMPORT_TIME_CONSTANTS.items():
        module = sys.modules.get(module_name)
        if module is None:
            continue
        old_home = os.fspath(getattr(module, home_name))
        for name, value in list(vars(module).items()):
            if name.isupper() and (moved := _rehomed(value, old_home, home)) is not None:
                patch(module, name, moved)
        for name, template in templates.items():
            patch(module, name, template.format(url=url))
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        patch(constants, "HF_HUB_DISABLE_XET", True)
        patch(constants, "HF_URL_HOSTS", frozenset(constants.HF_URL_HOSTS | {urlsplit(url).hostname}))
    hf_api = sys.modules.get("huggingface_hub.hf_api")
    if hf_api is not None:  # the module-level HfApi behind `upload_file`, `DatasetCard.push_to_hub`, ...
        patch(hf_api.api, "endpoint", url)
    http = sys.modules.get("huggingface_hub.utils._http")
    if http is not None and hasattr(http, "_HUB_ORIGINS"):
        patch(http, "_HUB_ORIGINS", frozenset(http._HUB_ORIGINS | {http._url_origin(url)}))
    try:
        yield
    finally:
        for module, name, value in reversed(saved):
            setattr(module, name, value)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--storage", required=True, help="folder for blobs")
    parser.add_argument("--token", action="append", default=[], help="TOKEN=USER[:read], repeatable")
    parser.add_argument("--config", default="{}", help='JSON: {"tokens": {...}, "orgs": {"org": ["user"]}}')
    parser.add_argument("--page-size", type=int, default=None)
    parser.add_argument("--exit-with-stdin", action="store_true", help="exit when stdin reaches EOF (parent gone)")
    args = parser.parse_args(argv)
    if args.exit_with_stdin:
        threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
    config = json.loads(args.config)
    tokens: dict[str, Any] = dict(config.get("tokens", {}))
    for item in args.token:
        token, _, who = item.partition("=")
        user, _, role = who.partition(":")
        tokens[token] = {"user": user, "role": role or "write"}
    asyncio.run(_serve(args.host, args.port, args.storage, tokens, config.get("orgs", {}), args.page_size))


async def _serve(host: str, port: int, storage: str, tokens: dict, orgs: dict, page_size: int | None) -> None:
    from aiohttp import web

    from tests.servers._hub_app import make_app

    runner = web.AppRunner(make_app(storage, tokens, orgs, page_size), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"READY http://{host}:{bound}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    main()
