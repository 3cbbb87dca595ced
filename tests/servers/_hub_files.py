"""File routes of the Hub emulator: the LFS batch API with its upload/verify actions, `/resolve/`, and a "CDN".

As on the Hub, `/resolve/` answers a regular file itself (ETag = git blob id) and redirects an
LFS file (302, `X-Linked-Etag` = sha256, `X-Linked-Size`) to a signed URL on another origin:
the same server reached as `localhost` instead of `127.0.0.1`, so `huggingface_hub` treats it
as a CDN (stops its HEAD there, drops the token) exactly as it does in production.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tests.servers._hub_store import Entry, HubError

if TYPE_CHECKING:
    from tests.servers._hub_app import Hub, Route

LFS_CONTENT_TYPE = "application/vnd.git-lfs+json"
CHUNK = 1 << 20


def _base(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def _cdn_base(request: web.Request) -> str:
    host = request.url.host or "127.0.0.1"
    other = "localhost" if host != "localhost" else "127.0.0.1"
    port = f":{request.url.port}" if request.url.port else ""
    return f"{request.scheme}://{other}{port}"


def cdn_url(hub: Hub, request: web.Request, sha256: str) -> str:
    return f"{_cdn_base(request)}/_cdn/{sha256}?sig={hub.sign('cdn', sha256)}"


async def lfs_batch(hub: Hub, request: web.Request, route: Route) -> web.Response:
    body = await request.json()
    operation = body.get("operation", "upload")
    if operation == "upload":
        repo, _ = hub.writable(request, route.repo_type, route.repo_id)
    else:
        repo = hub.readable(request, route.repo_type, route.repo_id)
    plural = f"{repo.type}s"
    objects = []
    for obj in body.get("objects", []):
        oid, size = str(obj.get("oid", "")), obj.get("size")
        out: dict[str, Any] = {"oid": oid, "size": size if isinstance(size, int) else -1}
        if not re.fullmatch(r"[0-9a-f]{64}", oid) or not isinstance(size, int) or size < 0:
            out["error"] = {"code": 422, "message": "Invalid object: oid must be a sha256, size a positive integer"}
        elif operation == "download":
            if hub.store.has_blob(oid):
                out["actions"] = {"download": {"href": cdn_url(hub, request, oid), "header": {}}}
            else:
                out["error"] = {"code": 404, "message": "Object does not exist"}
        elif not hub.store.has_blob(oid):  # already stored => no actions => the client skips the upload
            sig = hub.sign("lfs", oid)
            out["authenticated"] = True
            out["actions"] = {
                "upload": {"href": f"{_base(request)}/_lfs/{plural}/{repo.id}/{oid}?sig={sig}", "header": {}},
                "verify": {"href": f"{_base(request)}/_lfs_verify/{plural}/{repo.id}/{oid}?sig={sig}", "header": {}},
            }
        objects.append(out)
    return web.json_response(
        {"transfer": "basic", "objects": objects, "hash_algo": "sha256"}, content_type=LFS_CONTENT_TYPE
    )


async def lfs_upload(hub: Hub, request: web.Request, route: Route) -> web.Response:
    """PUT of one LFS object (basic transfer); streamed to disk and checked against its oid."""
    oid = route.path
    hub.check_signature(request, "lfs", oid)
    digest = hashlib.sha256()
    tmp = hub.store.new_blob_tempfile()
    try:
        with tmp:
            async for chunk in request.content.iter_chunked(CHUNK):
                digest.update(chunk)
                tmp.write(chunk)
        if digest.hexdigest() != oid:
            raise HubError(400, f"Uploaded content does not match its oid {oid} (got {digest.hexdigest()})")
        hub.store.adopt_blob(Path(tmp.name), oid)
    finally:
        if os.path.exists(tmp.name):
            os.unlink(tmp.name)
    return web.Response(status=200, headers={"ETag": f'"{oid}"'})


async def lfs_verify(hub: Hub, request: web.Request, route: Route) -> web.Response:
    oid = route.path
    hub.check_signature(request, "lfs", oid)
    body = await request.json()
    if not hub.store.has_blob(oid):
        raise HubError(404, f"LFS object {oid} was not uploaded")
    size = hub.store.blob_path(oid).stat().st_size
    if body.get("size") not in (None, size):
        raise HubError(422, f"LFS object {oid} has size {size}, not {body.get('size')}")
    return web.json_response({"oid": oid, "size": size}, content_type=LFS_CONTENT_TYPE)


def _byte_range(request: web.Request, size: int) -> tuple[int, int] | None:
    """(start, end exclusive) for a single `Range: bytes=...` header; None without one."""
    header = request.headers.get("Range")
    if not header:
        return None
    match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header)
    if not match or match.groups() == ("", ""):
        raise HubError(416, f"Unsupported range {header}")
    first, last = match.groups()
    if first == "":
        start, end = max(0, size - int(last)), size
    else:
        start, end = int(first), min(size, int(last) + 1) if last else size
    if start >= size or start >= end:
        raise HubError(416, f"Range {header} not satisfiable for {size} bytes")
    return start, end


def _content(hub: Hub, request: web.Request, sha256: str, size: int, headers: dict[str, str]) -> web.Response:
    headers = {**headers, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
    try:
        span = _byte_range(request, size)
    except HubError as error:
        error_headers = {"Content-Range": f"bytes */{size}", "X-Error-Message": error.message}
        return web.json_response({"error": error.message}, status=416, headers=error_headers)
    start, end = span or (0, size)
    with open(hub.store.blob_path(sha256), "rb") as f:
        f.seek(start)
        body = f.read(end - start)
    if span is None:
        return web.Response(body=body, headers=headers)
    headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    return web.Response(status=206, body=body, headers=headers)


async def resolve(hub: Hub, request: web.Request, route: Route) -> web.Response:
    if request.method not in ("GET", "HEAD"):
        raise HubError(405, "Method not allowed")
    repo = hub.readable(request, route.repo_type, route.repo_id)
    commit = repo.resolve(route.revision)
    entry: Entry | None = commit.tree.get(route.path)
    headers = {"X-Repo-Commit": commit.id}
    if entry is None:
        error = HubError(404, f"Entry not found: {route.path}", "EntryNotFound")
        return web.json_response(
            {"error": error.message},
            status=404,
            headers={**headers, "X-Error-Code": "EntryNotFound", "X-Error-Message": error.message},
        )
    if entry.lfs:
        headers.update(
            {
                "ETag": f'"{entry.oid}"',
                "X-Linked-Etag": f'"{entry.sha256}"',
                "X-Linked-Size": str(entry.size),
                "Location": cdn_url(hub, request, entry.sha256),
            }
        )
        return web.Response(status=302, headers=headers)
    return _content(hub, request, entry.sha256, entry.size, {**headers, "ETag": f'"{entry.oid}"'})


async def cdn(hub: Hub, request: web.Request, route: Route) -> web.Response:
    sha256 = route.path
    hub.check_signature(request, "cdn", sha256)
    if not hub.store.has_blob(sha256):
        raise HubError(404, "Object not found")
    size = hub.store.blob_path(sha256).stat().st_size
    return _content(hub, request, sha256, size, {"ETag": f'"{sha256}"'})
