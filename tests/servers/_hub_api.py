"""JSON routes of the Hub emulator under `/api/`: repos, info, tree, refs, commits, preupload, commit.

Response shapes follow what `huggingface_hub` 2.x parses (`hf_api.py`, `_commit_api.py`).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tests.servers._hub_store import Commit, Entry, HubError, Repo, card_data

if TYPE_CHECKING:
    from tests.servers._hub_app import Hub, Route

DEFAULT_PAGE = 1000  # the Hub's tree page size; 50 when `expand=True`
EXPAND_PAGE = 50
COMMITS_PAGE = 50


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "false").lower() in ("1", "true")


def repo_url(request: web.Request, repo: Repo) -> str:
    prefix = "" if repo.type == "model" else f"{repo.type}s/"
    return f"{request.scheme}://{request.host}/{prefix}{repo.id}"


def _tree_oid(children: list[tuple[str, Entry]]) -> str:
    return hashlib.sha1("".join(f"{p}:{e.oid}" for p, e in sorted(children)).encode()).hexdigest()


def file_json(repo: Repo, revision: str, path: str, entry: Entry, expand: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "file", "oid": entry.oid, "size": entry.size, "path": path}
    if entry.lfs:
        out["lfs"] = entry.lfs_info
    if expand:
        out["lastCommit"] = _last_commit_json(repo.last_commit_touching(revision, path))
        out["securityFileStatus"] = {
            "status": "safe",
            "avScan": {"virusFound": False, "virusNames": None},
            "pickleImportScan": None,
        }
    return out


def folder_json(repo: Repo, revision: str, commit: Commit, path: str, expand: bool) -> dict[str, Any]:
    children = [(p, e) for p, e in commit.tree.items() if p.startswith(path + "/")]
    out: dict[str, Any] = {"type": "directory", "oid": _tree_oid(children), "size": 0, "path": path}
    if expand:
        out["lastCommit"] = _last_commit_json(repo.last_commit_touching(revision, path))
    return out


def _last_commit_json(commit: Commit) -> dict[str, str]:
    return {"id": commit.id, "title": commit.title, "date": commit.date}


def _folders(commit: Commit) -> set[str]:
    out = set()
    for path in commit.tree:
        parts = path.split("/")[:-1]
        out.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    return out


def paginated(
    request: web.Request, items: list[Any], page_size: int, render: Callable[[Any], Any] = lambda item: item
) -> web.Response:
    """One page of `items` with a GitHub-style `Link: <...>; rel="next"` header, as `paginate()` follows.

    Only the page's items go through `render`, so an expanded listing costs one page of work.
    """
    start = int(request.query.get("cursor", "0"))
    page = [render(item) for item in items[start : start + page_size]]
    headers = {}
    if start + page_size < len(items):
        next_url = request.url.update_query({"cursor": str(start + page_size)})
        headers["Link"] = f'<{next_url}>; rel="next"'
    return web.json_response(page, headers=headers)


async def whoami(hub: Hub, request: web.Request, route: Route) -> web.Response:
    user = hub.caller(request)
    if user is None:
        raise HubError(401, "Invalid credentials in Authorization header")
    token = request.headers["Authorization"].partition(" ")[2].strip()
    role = hub.tokens[token][1]
    orgs = [{"type": "org", "name": org, "roleInOrg": "write"} for org, m in sorted(hub.orgs.items()) if user in m]
    return web.json_response(
        {
            "type": "user",
            "id": hashlib.md5(user.encode()).hexdigest()[:24],
            "name": user,
            "fullname": user,
            "email": f"{user}@example.invalid",
            "emailVerified": True,
            "isPro": False,
            "canPay": False,
            "orgs": orgs,
            "auth": {"type": "access_token", "accessToken": {"displayName": "emulator", "role": role}},
        }
    )


async def agent_harnesses(hub: Hub, request: web.Request, route: Route) -> web.Response:
    """The (empty) registry `huggingface_hub` fetches to label requests made from AI agents."""
    return web.json_response({"standardEnvVars": [], "harnesses": {}})


async def validate_yaml(hub: Hub, request: web.Request, route: Route) -> web.Response:
    body = await request.json()
    content = str(body.get("content", ""))
    if content.startswith("---") and card_data(content.encode()) is None and content.count("---") >= 2:
        message = "Invalid YAML metadata in README.md"
        return web.json_response({"errors": [{"message": message}]}, status=400, headers={"X-Error-Message": message})
    return web.json_response({"errors": [], "warnings": []})


async def create_repo(hub: Hub, request: web.Request, route: Route) -> web.Response:
    body = await request.json()
    user = hub.caller(request)
    namespace = body.get("organization") or user
    if namespace is None:
        raise HubError(401, "You must be authenticated to create a repo")
    hub.require_writer(request, namespace)
    repo_type = body.get("type") or "model"
    if repo_type not in ("model", "dataset", "space"):
        raise HubError(400, f"Invalid repo type: {repo_type}")
    private = body.get("visibility", "private" if body.get("private") else "public") != "public"
    repo_id = f"{namespace}/{body['name']}"
    if (repo_type, repo_id) in hub.store.repos:
        repo = hub.store.repos[(repo_type, repo_id)]
        message = f"You already created this {repo_type} repo"
        return web.json_response(
            {"error": message, "url": repo_url(request, repo)}, status=409, headers={"X-Error-Message": message}
        )
    repo = hub.store.create_repo(repo_type, repo_id, private)
    return web.json_response({"url": repo_url(request, repo), "name": repo_id, "id": repo_id})


async def delete_repo(hub: Hub, request: web.Request, route: Route) -> web.Response:
    body = await request.json()
    namespace = body.get("organization") or hub.caller(request)
    repo_type = body.get("type") or "model"
    hub.writable(request, repo_type, f"{namespace}/{body['name']}")
    hub.store.delete_repo(repo_type, f"{namespace}/{body['name']}")
    return web.json_response({})


async def settings(hub: Hub, request: web.Request, route: Route) -> web.Response:
    repo, _ = hub.writable(request, route.repo_type, route.repo_id)
    body = await request.json()
    if "private" in body:
        repo.private = bool(body["private"])
    if "visibility" in body:
        repo.private = body["visibility"] != "public"
    return web.json_response({})


async def repo_info(hub: Hub, request: web.Request, route: Route) -> web.Response:
    repo = hub.readable(request, route.repo_type, route.repo_id)
    commit = repo.resolve(route.revision or "main")
    blobs = _flag(request, "blobs")
    siblings = []
    for path, entry in sorted(commit.tree.items()):
        sibling: dict[str, Any] = {"rfilename": path}
        if blobs:
            sibling.update(size=entry.size, blobId=entry.oid)
            if entry.lfs:
                info = entry.lfs_info
                sibling["lfs"] = {"size": info["size"], "sha256": info["oid"], "pointerSize": info["pointerSize"]}
        siblings.append(sibling)
    data: dict[str, Any] = {
        "_id": hashlib.md5(f"{repo.type}/{repo.id}".encode()).hexdigest()[:24],
        "id": repo.id,
        "author": repo.namespace,
        "sha": commit.id,
        "lastModified": commit.date,
        "createdAt": repo.created_at,
        "private": repo.private,
        "gated": False,
        "disabled": False,
        "downloads": 0,
        "likes": 0,
        "tags": [],
        "siblings": siblings,
        "usedStorage": sum(e.size for e in commit.tree.values()),
    }
    if repo.type == "model":
        data["modelId"] = repo.id
    cd = hub.store.card_data(commit)
    if cd is not None:
        data["cardData"] = cd
    return web.json_response(data)


async def tree(hub: Hub, request: web.Request, route: Route) -> web.Response:
    repo = hub.readable(request, route.repo_type, route.repo_id)
    commit = repo.resolve(route.revision)
    expand, recursive, base = _flag(request, "expand"), _flag(request, "recursive"), route.path
    folders = _folders(commit)
    if base and base not in folders:
        raise HubError(404, f"{base} does not exist on {route.revision}", "EntryNotFound")

    def wanted(path: str) -> bool:
        if base and not path.startswith(base + "/"):
            return False
        return recursive or "/" not in path[len(base) + 1 if base else 0 :]

    items: list[tuple[str, Entry | None]] = [(p, None) for p in sorted(folders) if wanted(p)]
    items += [(p, e) for p, e in sorted(commit.tree.items()) if wanted(p)]
    page_size = hub.page_size or (EXPAND_PAGE if expand else DEFAULT_PAGE)

    def render(item: tuple[str, Entry | None]) -> dict[str, Any]:
        path, entry = item
        if entry is None:
            return folder_json(repo, commit.id, commit, path, expand)
        return file_json(repo, commit.id, path, entry, expand)

    return paginated(request, items, page_size, render)


async def paths_info(hub: Hub, request: web.Request, route: Route) -> web.Response:
    repo = hub.readable(request, route.repo_type, route.repo_id)
    commit = repo.resolve(route.revision)
    if request.content_type == "application/json":
        body = await request.json()
        paths, expand = body.get("paths", []), bool(body.get("expand"))
    else:
        form = await request.post()
        paths = form.getall("paths", [])
        expand = str(form.get("expand", "false")).lower() in ("1", "true")
    folders, out = _folders(commit), []
    for path in (str(p).strip("/") for p in paths):
        if path in commit.tree:
            out.append(file_json(repo, commit.id, path, commit.tree[path], expand))
        elif path in folders:
            out.append(folder_json(repo, commit.id, commit, path, expand))
    return web.json_response(out)


async def refs(hub: Hub, request: web.Request, route: Route) -> web.Response:
    repo = hub.readable(request, route.repo_type, route.repo_id)
    groups: dict[str, list[dict[str, str]]] = {"branches": [], "converts": [], "tags": [], "pullRequests": []}
    kinds = {"heads": "branches", "convert": "converts", "tags": "tags", "pr": "pullRequests"}
    for ref, target in sorted(repo.refs.items()):
        kind, name = ref.split("/", 2)[1:]
        groups[kinds[kind]].append({"name": name, "ref": ref, "targetCommit": target})
    if not _flag(request, "include_prs"):
        del groups["pullRequests"]
    return web.json_response(groups)


async def list_commits(hub: Hub, request: web.Request, route: Route) -> web.Response:
    repo = hub.readable(request, route.repo_type, route.repo_id)
    formatted = request.query.get("expand[]") == "formatted"
    items = []
    for c in repo.history(route.revision):
        item: dict[str, Any] = {
            "id": c.id,
            "title": c.title,
            "message": c.message,
            "authors": [{"user": c.author, "avatar": ""}],
            "date": c.date,
        }
        if formatted:
            item["formatted"] = {"title": c.title, "message": c.message}
        items.append(item)
    return paginated(request, items, hub.page_size or COMMITS_PAGE)


async def branch(hub: Hub, request: web.Request, route: Route) -> web.Response:
    repo, _ = hub.writable(request, route.repo_type, route.repo_id)
    if request.method == "DELETE":
        hub.store.delete_branch(repo, route.revision)
    else:
        body = await request.json() if request.can_read_body else {}
        hub.store.create_branch(repo, route.revision, body.get("startingPoint"))
    return web.json_response({})


async def preupload(hub: Hub, request: web.Request, route: Route) -> web.Response:
    repo, _ = hub.writable(request, route.repo_type, route.repo_id)
    commit = repo.resolve(route.revision)
    body = await request.json()
    files = []
    for item in body["files"]:
        path = item["path"]
        sample = base64.b64decode(item.get("sample", ""))
        mode = hub.store.upload_mode(commit, path, int(item.get("size", 0)), sample)
        answer: dict[str, Any] = {
            "path": path,
            "uploadMode": mode,
            "shouldIgnore": hub.store.should_ignore(commit, path, body.get("gitIgnore")),
        }
        existing = commit.tree.get(path)
        if existing is not None:  # lets the client drop unchanged files from the commit
            answer["oid"] = existing.sha256 if existing.lfs else existing.oid
        files.append(answer)
    return web.json_response({"files": files, "commitOid": commit.id})


async def commit(hub: Hub, request: web.Request, route: Route) -> web.Response:
    repo, user = hub.writable(request, route.repo_type, route.repo_id)
    text = (await request.read()).decode()
    operations = [json.loads(line) for line in text.splitlines() if line.strip()]
    create_pr = request.query.get("create_pr") in ("1", "true", "True")
    if hub.faults.reject_commits > 0:
        hub.faults.reject_commits -= 1
        raise HubError(hub.faults.status, hub.faults.message)
    new, pr_num = hub.store.commit(repo, route.revision, operations, author=user, create_pr=create_pr)
    url = repo_url(request, repo)
    return web.json_response(
        {
            "success": True,
            "commitOid": new.id,
            "commitUrl": f"{url}/commit/{new.id}",
            "commitMessage": new.title,
            "hookOutput": "",
            "pullRequestUrl": f"{url}/discussions/{pr_num}" if pr_num is not None else None,
        }
    )
