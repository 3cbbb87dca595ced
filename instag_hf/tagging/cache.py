"""A content-addressed, on-disk cache of model answers.

One SQLite file in WAL mode. Every answer is committed as it arrives, so a process killed
at any point loses nothing it had received, and ``num_proc`` workers (separate processes)
share the file safely through SQLite's own locking. The key is a hash of what determines
the answer — server kind and model identity, prompt template, query, generation
parameters — never of the endpoint URL and never of a token: the cache holds no secret.

Damage is survivable. Each entry carries a checksum of its key and answer: an entry changed
on disk is a miss (asked again and rewritten), never a wrong answer. A file that is not a
database, or whose pages are broken, is moved aside (``requests.sqlite3.corrupt-<time>``)
and a new one started, with a warning saying so. Files written before the checksum existed
are migrated when first opened: their entries get checksums and keep answering.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from filelock import FileLock

from instag_hf import env
from instag_hf.errors import CacheError
from instag_hf.tagging.parsing import valid_text

logger = logging.getLogger(__name__)

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS answers "
    "(key TEXT PRIMARY KEY, answer TEXT NOT NULL, created REAL NOT NULL, checksum TEXT)"
)
_LOOKUP_CHUNK = 500  # stays below SQLite's limit on bound parameters
# SQLite's primary result codes for a damaged file: SQLITE_CORRUPT, SQLITE_NOTADB.
_DAMAGE_CODES = (11, 26)
_DAMAGE_WORDS = ("file is not a database", "malformed")  # Python 3.10 has no error codes

_T = TypeVar("_T")


def request_key(identity: str, template_sha256: str, query: str, params: dict[str, Any]) -> str:
    """The cache key of one request: sha256 over everything that decides the answer."""
    payload = json.dumps([identity, template_sha256, query, params], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def entry_checksum(key: str, answer: bytes) -> str:
    """The checksum stored with an entry: sha256 of its key and the UTF-8 bytes of its answer."""
    return hashlib.sha256(key.encode("utf-8") + b"\0" + answer).hexdigest()


class RequestCache:
    """Answers by request key, on disk.

    Args:
        directory: folder of the cache file (created if missing). Default: the
            ``INSTAG_CACHE_DIR`` variable, else ``<datasets cache>/instag_requests``.

    Example:
        >>> cache = RequestCache("/tmp/instag-cache-doc")
        >>> cache.put("k", '[{"tag": "math", "explanation": "..."}]')
        >>> cache.get_many(["k"])["k"][:8]
        '[{"tag":'
    """

    FILENAME = "requests.sqlite3"

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = Path(directory) if directory is not None else env.cache_dir()
        self.path = self.directory / self.FILENAME
        self._conn: sqlite3.Connection | None = None
        self._pid: int | None = None
        self._inode: int | None = None  # of the file this process opened, to tell it from a replacement

    def _lock(self) -> FileLock:
        return FileLock(str(self.path) + ".lock")

    def _connection(self) -> sqlite3.Connection:
        # A connection must not cross fork(): num_proc workers each open their own.
        if self._conn is None or self._pid != os.getpid():
            self.directory.mkdir(parents=True, exist_ok=True)
            # Switching to WAL, creating the table and migrating answer "locked" without waiting
            # when workers open the file at the same moment: they take turns through a file lock.
            with self._lock():
                conn = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
                self._inode = _inode(self.path)
                try:
                    conn.execute("PRAGMA journal_mode=WAL")
                    conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL survives a killed process
                    conn.execute(_SCHEMA)
                    _migrate(conn)
                except BaseException:
                    conn.close()
                    raise
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def _run(self, operation: Callable[[sqlite3.Connection], _T]) -> _T:
        """``operation`` on the connection; a damaged file is set aside and the operation run once more."""
        try:
            return operation(self._connection())
        except sqlite3.DatabaseError as error:
            if not _damaged(error):
                raise  # "database is locked" and the like: not the file's fault
            self._set_aside(error)
        try:
            return operation(self._connection())
        except sqlite3.DatabaseError as error:
            if not _damaged(error):
                raise
            raise CacheError(self._advice(f"is damaged again after being replaced ({error})")) from error

    def _set_aside(self, error: sqlite3.DatabaseError) -> None:
        """Move the damaged file (and its WAL) aside and let the next connection start a new one."""
        self.close()
        with self._lock():
            # Another worker may have replaced the file already: move only the one we opened.
            if _inode(self.path) not in (None, self._inode):
                return
            aside = self.path.with_name(f"{self.FILENAME}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
            try:
                for suffix in ("-wal", "-shm"):
                    companion = self.path.with_name(self.FILENAME + suffix)
                    if companion.exists():
                        companion.replace(aside.with_name(aside.name + suffix))
                self.path.replace(aside)
            except OSError as move_error:
                raise CacheError(
                    self._advice(f"is damaged ({error}) and could not be moved aside ({move_error})"),
                    path=str(self.path),
                ) from error
        logger.warning("The request cache %s is damaged (%s): moved it aside to %s and started a new one; "
                       "answers it held will be asked again.", self.path, error, aside)  # fmt: skip

    def _advice(self, what: str) -> str:
        return (f"The request cache {self.path} {what}: delete it, run without the cache (--no-cache, "
                f"cache=False or INSTAG_CACHE=0), or point {env.ENV_CACHE_DIR} at another folder.")  # fmt: skip

    def get_many(self, keys: Iterable[str]) -> dict[str, str]:
        """The cached answers among ``keys``; an entry that fails its checksum is left out."""
        keys = list(dict.fromkeys(keys))

        def read(conn: sqlite3.Connection) -> dict[str, str]:
            found: dict[str, str] = {}
            broken = 0
            for start in range(0, len(keys), _LOOKUP_CHUNK):
                chunk = keys[start : start + _LOOKUP_CHUNK]
                marks = ",".join("?" * len(chunk))
                query = f"SELECT key, CAST(answer AS BLOB), checksum FROM answers WHERE key IN ({marks})"
                for key, answer, checksum in conn.execute(query, chunk):
                    text = _verified(key, answer, checksum)
                    if text is None:
                        broken += 1
                    else:
                        found[key] = text
            if broken:
                logger.warning("%d cached answer(s) in %s do not match their checksum: they are asked again.",
                               broken, self.path)  # fmt: skip
            return found

        return self._run(read)

    def put(self, key: str, answer: str) -> None:
        """Store one answer, committed before returning."""
        answer = valid_text(answer)  # SQLite stores UTF-8: a lone surrogate could not be written
        row = (key, answer, time.time(), entry_checksum(key, answer.encode("utf-8")))
        self._run(
            lambda conn: conn.execute(
                "INSERT OR REPLACE INTO answers (key, answer, created, checksum) VALUES (?, ?, ?, ?)", row
            )
        )

    def __len__(self) -> int:
        return int(self._run(lambda conn: conn.execute("SELECT COUNT(*) FROM answers").fetchone()[0]))

    def clear(self) -> None:
        """Forget every cached answer."""
        self._run(lambda conn: conn.execute("DELETE FROM answers"))
        logger.info("Cleared the request cache at %s", self.path)

    def close(self) -> None:
        if self._conn is not None and self._pid == os.getpid():
            self._conn.close()
        self._conn = None

    def __getstate__(self) -> dict[str, Any]:
        return {"directory": str(self.directory)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["directory"])  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"RequestCache({str(self.directory)!r})"


def _migrate(conn: sqlite3.Connection) -> None:
    """Give a file from before the checksum column one, with the checksums of its entries."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(answers)")}
    if "checksum" in columns:
        return
    conn.create_function("instag_checksum", 2, entry_checksum, deterministic=True)
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("ALTER TABLE answers ADD COLUMN checksum TEXT")
        conn.execute("UPDATE answers SET checksum = instag_checksum(key, CAST(answer AS BLOB))")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    logger.info("Added checksums to the entries of an older request cache")


def _verified(key: str, answer: bytes, checksum: str | None) -> str | None:
    """The answer's text if it matches its checksum (a missing one fails too), else None."""
    if checksum is None or entry_checksum(key, answer) != checksum:
        return None
    try:
        return answer.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _damaged(error: sqlite3.DatabaseError) -> bool:
    """True when SQLite says the file itself is broken (not locked, not full, not read-only)."""
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in _DAMAGE_CODES
    return type(error) is sqlite3.DatabaseError and any(word in str(error) for word in _DAMAGE_WORDS)


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except OSError:
        return None
