"""Repositories, commits and blobs behind the Hub emulator; no HTTP in here.

Commits are immutable snapshots (path -> `Entry`) kept in memory; file contents live on
disk under `<storage>/blobs/`, addressed by their sha256 whether the Hub would store them
in git or in LFS. A commit is built on a copy of its parent's tree and only becomes
visible when its ref moves, so a failed commit leaves nothing behind but orphan blobs.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import itertools
import os
import re
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

# The first lines of the `.gitattributes` the Hub writes into every new repo: the patterns
# decide which files preupload answers with "lfs" (parquet shards among them).
_LFS_PATTERNS = """
    *.7z *.arrow *.bin *.bz2 *.ckpt *.ftz *.gz *.h5 *.joblib *.lz4 *.mds *.mlmodel *.model
    *.msgpack *.npy *.npz *.onnx *.ot *.parquet *.pb *.pickle *.pkl *.pt *.pth *.rar
    *.safetensors *.tar *.tflite *.tgz *.wasm *.xz *.zip *.zst *tfevents* *.jpg *.jpeg *.png
    *.webp *.gif *.mp3 *.wav
"""
DEFAULT_GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in _LFS_PATTERNS.split())
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024  # the Hub refuses plain git blobs above 10 MB
REPO_TYPES = ("model", "dataset", "space")


class HubError(Exception):
    """An answer the Hub would give as an HTTP error, with its `X-Error-Code` if it has one."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(status, message, code)
        self.status, self.message, self.code = status, message, code


def repo_not_found(repo_type: str, repo_id: str) -> HubError:
    return HubError(404, f"Repository not found: {repo_type}s/{repo_id}", "RepoNotFound")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def utcnow() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


@dataclass(frozen=True)
class Entry:
    """One file of a commit. `oid` is its git blob id (of the pointer file when in LFS)."""

    sha256: str
    size: int
    lfs: bool

    @property
    def oid(self) -> str:
        if self.lfs:
            return git_blob_sha1(lfs_pointer(self.sha256, self.size))
        return self._regular_oid

    @property
    def lfs_info(self) -> dict[str, Any] | None:
        if not self.lfs:
            return None
        return {"oid": self.sha256, "size": self.size, "pointerSize": len(lfs_pointer(self.sha256, self.size))}

    # Regular blobs need their bytes for the git oid: computed once at creation.
    _regular_oid: str = field(default="", compare=False, repr=False)


@dataclass(frozen=True)
class Commit:
    id: str
    title: str
    message: str
    parents: tuple[str, ...]
    tree: Mapping[str, Entry]
    date: str
    author: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "message": self.message,
            "parents": list(self.parents),
            "date": self.date,
            "author": self.author,
            "files": sorted(self.tree),
        }


@dataclass
class Repo:
    type: str
    id: str
    private: bool
    created_at: str
    refs: dict[str, str] = field(default_factory=dict)  # "refs/heads/main" -> commit id
    commits: dict[str, Commit] = field(default_factory=dict)
    last_pr: int = 0

    @property
    def namespace(self) -> str:
        return self.id.split("/")[0]

    def resolve(self, revision: str) -> Commit:
        """Commit for a branch, tag, `refs/...` name or full commit id; RevisionNotFound otherwise."""
        for ref in (revision, f"refs/heads/{revision}", f"refs/tags/{revision}"):
            if ref.startswith("refs/") and ref in self.refs:
                return self.commits[self.refs[ref]]
        if re.fullmatch(r"[0-9a-f]{40}", revision) and revision in self.commits:
            return self.commits[revision]
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def history(self, revision: str) -> list[Commit]:
        """First-parent history, newest first."""
        out, commit = [], self.resolve(revision)
        while True:
            out.append(commit)
            if not commit.parents:
                return out
            commit = self.commits[commit.parents[0]]

    def last_commit_touching(self, revision: str, path: str) -> Commit:
        """Newest commit on `revision` whose change includes `path` (a file or a folder prefix)."""
        history = self.history(revision)

        def view(commit: Commit) -> dict[str, Entry]:
            return {p: e for p, e in commit.tree.items() if p == path or p.startswith(path + "/")}

        for commit, parent in itertools.zip_longest(history, history[1:]):
            if parent is None or view(commit) != view(parent):
                return commit
        return history[-1]


def _patterns(text: str, wanted: str | None) -> list[str]:
    """Patterns of a `.gitattributes` (those carrying `wanted`) or of a `.gitignore`."""
    out = []
    for line in text.splitlines():
        parts = line.strip().split()
        if not parts or parts[0].startswith("#"):
            continue
        if wanted is None or wanted in parts[1:]:
            out.append(parts[0])
    return out


def matches(path: str, patterns: list[str]) -> bool:
    name = path.rsplit("/", 1)[-1]
    for pattern in patterns:
        pattern = pattern.rstrip("/")
        target = path if "/" in pattern.lstrip("/") else name
        if fnmatch.fnmatchcase(target, pattern.lstrip("/")) or path.startswith(pattern.lstrip("/") + "/"):
            return True
    return False


def card_data(readme: bytes | None) -> dict[str, Any] | None:
    """The YAML block at the top of a README, as the Hub's `cardData`."""
    if readme is None:
        return None
    match = re.match(r"^---\s*\n(.*?\n)?---\s*(\n|$)", readme.decode("utf-8", "replace"), re.DOTALL)
    if not match:
        return None
    try:
        data = yaml.safe_load(match.group(1) or "")
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


class Store:
    """Every repository of one emulator, keyed by (repo type, repo id)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.blob_dir = Path(root) / "blobs"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.repos: dict[tuple[str, str], Repo] = {}
        self._counter = itertools.count()

    # -- blobs ---------------------------------------------------------------------------
    def blob_path(self, sha256: str) -> Path:
        return self.blob_dir / sha256[:2] / sha256[2:]

    def has_blob(self, sha256: str) -> bool:
        return self.blob_path(sha256).is_file()

    def put_blob(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        if not self.has_blob(sha):
            tmp = self.new_blob_tempfile()
            with tmp:
                tmp.write(data)
            self.adopt_blob(Path(tmp.name), sha)
        return sha

    def new_blob_tempfile(self) -> Any:
        return tempfile.NamedTemporaryFile(dir=self.blob_dir, prefix=".upload-", delete=False)

    def adopt_blob(self, tmp_path: Path, sha256: str) -> None:
        """Move a fully written, verified upload into place (atomic, so readers never see half a blob)."""
        target = self.blob_path(sha256)
        target.parent.mkdir(exist_ok=True)
        os.replace(tmp_path, target)

    def read(self, entry: Entry) -> bytes:
        return self.blob_path(entry.sha256).read_bytes()

    def regular_entry(self, data: bytes) -> Entry:
        return Entry(sha256=self.put_blob(data), size=len(data), lfs=False, _regular_oid=git_blob_sha1(data))

    # -- repos ---------------------------------------------------------------------------
    def get(self, repo_type: str, repo_id: str) -> Repo:
        try:
            return self.repos[(repo_type, repo_id)]
        except KeyError:
            raise repo_not_found(repo_type, repo_id) from None

    def create_repo(self, repo_type: str, repo_id: str, private: bool) -> Repo:
        if (repo_type, repo_id) in self.repos:
            raise HubError(409, "You already created this repo", None)
        repo = Repo(type=repo_type, id=repo_id, private=private, created_at=utcnow())
        tree = {".gitattributes": self.regular_entry(DEFAULT_GITATTRIBUTES.encode())}
        first = self._new_commit(repo, "initial commit", "", (), tree, author="system")
        repo.refs["refs/heads/main"] = first.id
        self.repos[(repo_type, repo_id)] = repo
        return repo

    def delete_repo(self, repo_type: str, repo_id: str) -> None:
        self.get(repo_type, repo_id)
        del self.repos[(repo_type, repo_id)]

    def _new_commit(
        self, repo: Repo, title: str, message: str, parents: tuple[str, ...], tree: dict[str, Entry], author: str
    ) -> Commit:
        seed = f"{repo.type}/{repo.id}|{parents}|{title}|{message}|{sorted(tree.items())}|{next(self._counter)}"
        commit = Commit(
            id=hashlib.sha1(seed.encode()).hexdigest(),
            title=title,
            message=message,
            parents=parents,
            tree=MappingProxyType(dict(tree)),
            date=utcnow(),
            author=author,
        )
        repo.commits[commit.id] = commit
        return commit

    # -- reading helpers -----------------------------------------------------------------
    def upload_mode(self, commit: Commit, path: str, size: int, sample: bytes) -> str:
        attributes = commit.tree.get(".gitattributes")
        patterns = _patterns(self.read(attributes).decode("utf-8", "replace"), "filter=lfs") if attributes else []
        if matches(path, patterns) or size >= LFS_SIZE_THRESHOLD or b"\0" in sample:
            return "lfs"
        return "regular"

    def should_ignore(self, commit: Commit, path: str, gitignore: str | None) -> bool:
        if gitignore is None and ".gitignore" in commit.tree:
            gitignore = self.read(commit.tree[".gitignore"]).decode("utf-8", "replace")
        return bool(gitignore) and matches(path, _patterns(gitignore, None))

    def card_data(self, commit: Commit) -> dict[str, Any] | None:
        readme = commit.tree.get("README.md")
        return card_data(self.read(readme) if readme else None)

    # -- writing -------------------------------------------------------------------------
    def commit(
        self,
        repo: Repo,
        revision: str,
        operations: list[dict[str, Any]],
        *,
        author: str,
        create_pr: bool = False,
    ) -> tuple[Commit, int | None]:
        """Apply NDJSON commit operations (header first) to `revision`; returns (commit, PR number or None).

        Raises:
            HubError: 400 bad payload, 404 unknown revision/file, 412 stale `parentCommit`.
        """
        if not operations or operations[0].get("key") != "header":
            raise HubError(400, "The first line of a commit payload must be its header")
        header = operations[0].get("value") or {}
        ref = self._branch_ref(repo, revision)
        head = repo.commits[repo.refs[ref]]
        parent = head
        wanted = header.get("parentCommit")
        if wanted is not None and create_pr:
            parent = repo.resolve(wanted)
        elif wanted is not None and wanted != head.id:
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        tree = dict(parent.tree)
        for op in operations[1:]:
            self._apply(tree, op.get("key"), op.get("value") or {})
        title = header.get("summary") or "Update files"
        new = self._new_commit(repo, title, header.get("description") or "", (parent.id,), tree, author=author)
        if create_pr:
            repo.last_pr += 1
            repo.refs[f"refs/pr/{repo.last_pr}"] = new.id
            return new, repo.last_pr
        repo.refs[ref] = new.id
        return new, None

    def create_branch(self, repo: Repo, branch: str, starting_point: str | None) -> None:
        ref = f"refs/heads/{branch}"
        if ref in repo.refs:
            raise HubError(409, f"Reference already exists: {ref}")
        repo.refs[ref] = repo.resolve(starting_point or "main").id

    def delete_branch(self, repo: Repo, branch: str) -> None:
        if branch == "main" or f"refs/heads/{branch}" not in repo.refs:
            raise HubError(400 if branch == "main" else 404, f"Cannot delete branch {branch}")
        del repo.refs[f"refs/heads/{branch}"]

    @staticmethod
    def _branch_ref(repo: Repo, revision: str) -> str:
        for ref in (revision, f"refs/heads/{revision}"):
            if ref.startswith(("refs/heads/", "refs/pr/")) and ref in repo.refs:
                return ref
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def _apply(self, tree: dict[str, Entry], key: str | None, value: dict[str, Any]) -> None:
        path = str(value.get("path", "")).strip("/")
        if not path and key != "deletedFolder":
            raise HubError(400, f"Missing path in '{key}' operation")
        if key == "file":
            if value.get("encoding", "base64") != "base64":
                raise HubError(400, f"Unsupported encoding for {path}")
            tree[path] = self.regular_entry(base64.b64decode(value.get("content", "")))
        elif key == "lfsFile":
            oid = str(value.get("oid", ""))
            if not self.has_blob(oid):
                raise HubError(400, f"LFS file {path} points to an object that was not uploaded: {oid}")
            size = self.blob_path(oid).stat().st_size
            if value.get("size") not in (None, size):
                raise HubError(400, f"LFS file {path}: size {value.get('size')} does not match the upload ({size})")
            tree[path] = Entry(sha256=oid, size=size, lfs=True)
        elif key == "deletedFile":
            if tree.pop(path, None) is None:
                raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
        elif key == "deletedFolder":
            doomed = [p for p in tree if not path or p.startswith(path + "/")]
            if not doomed:
                raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
            for p in doomed:
                del tree[p]
        else:
            raise HubError(400, f"Unknown commit operation '{key}'")
