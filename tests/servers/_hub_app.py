"""The Hub emulator's aiohttp application: routing, auth, faults, errors and the admin routes.

Routing is done by hand on the raw (still percent-encoded) path because revisions such as
`refs%2Fpr%2F1` and tree paths such as `data%2Ftrain` must stay one segment; aiohttp's
router would decode them first.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from tests.servers import _hub_api, _hub_files
from tests.servers._hub_store import HubError, Repo, Store, repo_not_found

TYPE_PLURALS = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIXES = {"datasets": "dataset", "spaces": "space"}  # models have no prefix in file URLs
REF_KINDS = ("pr", "convert", "heads", "tags")


@dataclass
class Faults:
    """Runtime failure knobs: `down` answers 503 to every Hub route; `reject_commits` fails the next N commits;
    `drop` closes the connection, with no response, of every request whose raw path contains it."""

    down: bool = False
    drop: str | None = None
    reject_commits: int = 0
    status: int = 500
    message: str = "Internal Error - emulator fault"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Faults:
        faults = cls(**data)
        if not 400 <= int(faults.status) <= 599:
            raise ValueError("fault status must be a 4xx or 5xx code")
        return faults


@dataclass
class Route:
    """A parsed request path: what is asked for, about which repo, at which revision."""

    kind: str
    repo_type: str | None = None
    repo_id: str | None = None
    revision: str | None = None
    path: str = ""


@dataclass
class Hub:
    store: Store
    tokens: dict[str, tuple[str, str]]  # token -> (user, "read" | "write")
    orgs: dict[str, set[str]]  # org -> members
    page_size: int | None = None
    faults: Faults = field(default_factory=Faults)
    log: deque = field(default_factory=lambda: deque(maxlen=2000))
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(16))

    # -- auth ----------------------------------------------------------------------------
    def caller(self, request: web.Request) -> str | None:
        """The user behind the request's token; None when anonymous. 401 on an unknown token."""
        header = request.headers.get("Authorization")
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or token.strip() not in self.tokens:
            raise HubError(401, "Invalid credentials in Authorization header")
        return self.tokens[token.strip()][0]

    def is_member(self, user: str | None, namespace: str) -> bool:
        return user is not None and (user == namespace or user in self.orgs.get(namespace, ()))

    def readable(self, request: web.Request, repo_type: str, repo_id: str) -> Repo:
        """The repo if the caller may see it; private repos are 404 to everyone but their namespace."""
        repo = self.store.get(repo_type, repo_id)
        if repo.private and not self.is_member(self.caller(request), repo.namespace):
            raise repo_not_found(repo_type, repo_id)
        return repo

    def require_writer(self, request: web.Request, namespace: str) -> str:
        user = self.caller(request)
        if user is None:
            raise HubError(401, "You must be authenticated with a write token to do this", "RepoNotFound")
        if not self.is_member(user, namespace):
            raise HubError(403, f"You don't have the rights to write to the namespace '{namespace}'")
        token = request.headers["Authorization"].partition(" ")[2].strip()
        if self.tokens[token][1] != "write":
            raise HubError(403, "This token is read-only: a write token is needed to push to the Hub")
        return user

    def writable(self, request: web.Request, repo_type: str, repo_id: str) -> tuple[Repo, str]:
        repo = self.readable(request, repo_type, repo_id)
        return repo, self.require_writer(request, repo.namespace)

    # -- signed URLs for the LFS and "CDN" routes, which the client calls without a token --
    def sign(self, purpose: str, oid: str) -> str:
        return hmac.new(self.secret, f"{purpose}:{oid}".encode(), hashlib.sha256).hexdigest()

    def check_signature(self, request: web.Request, purpose: str, oid: str) -> None:
        if not hmac.compare_digest(request.query.get("sig", ""), self.sign(purpose, oid)):
            raise HubError(403, "Signature mismatch or missing")


def error_response(error: HubError) -> web.Response:
    header = " ".join(error.message.split()).encode("ascii", "replace").decode()
    headers = {"X-Error-Message": header}
    if error.code:
        headers["X-Error-Code"] = error.code
    return web.json_response({"error": error.message}, status=error.status, headers=headers)


def _split_revision(segments: list[str]) -> tuple[str, list[str]]:
    """Revision then remaining raw segments; accepts `refs%2Fpr%2F1` and unencoded `refs/pr/1`."""
    if not segments:
        raise HubError(400, "Missing revision")
    if len(segments) >= 3 and segments[0] == "refs" and segments[1] in REF_KINDS:
        return "/".join(unquote(s) for s in segments[:3]), segments[3:]
    return unquote(segments[0]), segments[1:]


def _join(segments: list[str]) -> str:
    return "/".join(unquote(s) for s in segments).strip("/")


def parse_route(raw_path: str) -> Route:
    segs = raw_path.split("?", 1)[0].strip("/").split("/")
    if segs[0] in ("_emulator", "_cdn") and len(segs) == 2:
        return Route(segs[0], path=segs[1])
    if segs[0] in ("_lfs", "_lfs_verify") and len(segs) == 5 and segs[1] in TYPE_PLURALS:
        return Route(segs[0], TYPE_PLURALS[segs[1]], f"{unquote(segs[2])}/{unquote(segs[3])}", path=segs[4])
    if segs[0] == "api":
        if segs[1:] in (
            ["whoami-v2"],
            ["validate-yaml"],
            ["repos", "create"],
            ["repos", "delete"],
            ["agent-harnesses"],
        ):
            return Route("/".join(segs[1:]))
        if len(segs) >= 4 and segs[1] in TYPE_PLURALS:
            route = Route("info", TYPE_PLURALS[segs[1]], f"{unquote(segs[2])}/{unquote(segs[3])}")
            rest = segs[4:]
            if not rest:
                return route
            route.kind = rest[0]
            if rest[0] in ("revision", "tree", "paths-info", "preupload", "commit", "commits"):
                route.revision, tail = _split_revision(rest[1:])
                route.path = _join(tail)
                route.kind = "info" if rest[0] == "revision" else rest[0]
                return route
            if rest[0] == "branch":
                route.revision = _join(rest[1:])
                return route
            if rest in (["refs"], ["settings"]):
                return route
        raise HubError(404, f"Route not found: {raw_path}")
    repo_type, repo_segs = "model", segs
    if segs[0] in URL_PREFIXES:
        repo_type, repo_segs = URL_PREFIXES[segs[0]], segs[1:]
    if len(repo_segs) == 6 and repo_segs[1].endswith(".git") and repo_segs[2:] == ["info", "lfs", "objects", "batch"]:
        return Route("lfs_batch", repo_type, f"{unquote(repo_segs[0])}/{unquote(repo_segs[1][:-4])}")
    if len(repo_segs) >= 5 and repo_segs[2] == "resolve":
        revision, tail = _split_revision(repo_segs[3:])
        return Route("resolve", repo_type, f"{unquote(repo_segs[0])}/{unquote(repo_segs[1])}", revision, _join(tail))
    raise HubError(404, f"Route not found: {raw_path}")


HANDLERS = {
    "whoami-v2": _hub_api.whoami,
    "agent-harnesses": _hub_api.agent_harnesses,
    "validate-yaml": _hub_api.validate_yaml,
    "repos/create": _hub_api.create_repo,
    "repos/delete": _hub_api.delete_repo,
    "info": _hub_api.repo_info,
    "tree": _hub_api.tree,
    "paths-info": _hub_api.paths_info,
    "refs": _hub_api.refs,
    "commits": _hub_api.list_commits,
    "branch": _hub_api.branch,
    "settings": _hub_api.settings,
    "preupload": _hub_api.preupload,
    "commit": _hub_api.commit,
    "lfs_batch": _hub_files.lfs_batch,
    "_lfs": _hub_files.lfs_upload,
    "_lfs_verify": _hub_files.lfs_verify,
    "resolve": _hub_files.resolve,
    "_cdn": _hub_files.cdn,
}


async def dispatch(request: web.Request) -> web.StreamResponse:
    hub: Hub = request.app["hub"]
    try:
        route = parse_route(request.raw_path)
        if route.kind == "_emulator":
            return await admin(hub, request, route.path)
        if hub.faults.down:
            raise HubError(503, "Service Unavailable (emulator fault: down)")
        if hub.faults.drop and hub.faults.drop in request.raw_path:
            hub.log.append({"method": request.method, "path": request.raw_path, "status": "drop"})
            if request.transport is not None:
                request.transport.close()
            return web.Response()  # never sent: the transport is closed
        response = await HANDLERS[route.kind](hub, request, route)
    except HubError as error:
        response = error_response(error)
    except (ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
        response = error_response(HubError(400, f"Bad request: {exc!r}"))
    hub.log.append({"method": request.method, "path": request.raw_path, "status": response.status})
    return response


async def admin(hub: Hub, request: web.Request, action: str) -> web.Response:
    """Test-side control and inspection; never affected by faults, never needs a token."""
    query = request.query
    if action == "faults":
        if request.method == "POST":
            hub.faults = Faults.from_json(await request.json())
        return web.json_response(hub.faults.__dict__)
    if action == "requests":
        return web.json_response(list(hub.log))
    if action == "repos":
        return web.json_response([{"type": r.type, "id": r.id, "private": r.private} for r in hub.store.repos.values()])
    repo = hub.store.get(query.get("repo_type", "dataset"), query["repo_id"])
    if action == "refs":
        return web.json_response(repo.refs)
    if action == "commits":
        if "revision" in query:
            commits = repo.history(query["revision"])
        else:
            commits = list(reversed(repo.commits.values()))
        return web.json_response([c.as_dict() for c in commits])
    if action == "files":
        commit = repo.resolve(query.get("revision", "main"))
        files = {p: base64.b64encode(hub.store.read(e)).decode() for p, e in commit.tree.items()}
        return web.json_response(files)
    raise HubError(404, f"Unknown admin action {action}")


def make_app(
    storage_dir: str,
    tokens: dict[str, Any] | None = None,
    orgs: dict[str, list[str]] | None = None,
    page_size: int | None = None,
) -> web.Application:
    """Build the emulator app. `tokens` maps a token to a user name or to {"user": ..., "role": "read"|"write"}."""
    normalized = {}
    for token, who in (tokens or {}).items():
        normalized[token] = (who, "write") if isinstance(who, str) else (who["user"], who.get("role", "write"))
    hub = Hub(Store(storage_dir), normalized, {k: set(v) for k, v in (orgs or {}).items()}, page_size)
    app = web.Application(client_max_size=1 << 40)  # LFS uploads are streamed to disk, not held in memory
    app["hub"] = hub
    app.router.add_route("*", "/{tail:.*}", dispatch)
    return app
