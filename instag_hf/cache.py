"""A content-addressed, on-disk cache of model answers.

One SQLite file in WAL mode. Every answer is committed as it arrives, so a process killed
at any point loses nothing it had received, and ``num_proc`` workers (separate processes)
share the file safely through SQLite's own locking. The key is a hash of what determines
the answer — server kind and model identity, prompt template, query, generation
parameters — never of the endpoint URL and never of a token: the cache holds no secret.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from filelock import FileLock

from instag_hf import constants

logger = logging.getLogger(__name__)

_SCHEMA = "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, answer TEXT NOT NULL, created REAL NOT NULL)"
_LOOKUP_CHUNK = 500  # stays below SQLite's limit on bound parameters


def request_key(identity: str, template_sha256: str, query: str, params: dict[str, Any]) -> str:
    """The cache key of one request: sha256 over everything that decides the answer."""
    payload = json.dumps([identity, template_sha256, query, params], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


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
        self.directory = Path(directory) if directory is not None else constants.cache_dir()
        self.path = self.directory / self.FILENAME
        self._conn: sqlite3.Connection | None = None
        self._pid: int | None = None

    def _connection(self) -> sqlite3.Connection:
        # A connection must not cross fork(): num_proc workers each open their own.
        if self._conn is None or self._pid != os.getpid():
            self.directory.mkdir(parents=True, exist_ok=True)
            # Switching to WAL and creating the table answer "locked" without waiting when
            # workers open the file at the same moment: they take turns through a file lock.
            with FileLock(str(self.path) + ".lock"):
                conn = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL survives a killed process
                conn.execute(_SCHEMA)
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def get_many(self, keys: Iterable[str]) -> dict[str, str]:
        """The cached answers among ``keys``."""
        keys = list(dict.fromkeys(keys))
        found: dict[str, str] = {}
        conn = self._connection()
        for start in range(0, len(keys), _LOOKUP_CHUNK):
            chunk = keys[start : start + _LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            found.update(conn.execute(f"SELECT key, answer FROM answers WHERE key IN ({marks})", chunk).fetchall())
        return found

    def put(self, key: str, answer: str) -> None:
        """Store one answer, committed before returning."""
        self._connection().execute(
            "INSERT OR REPLACE INTO answers (key, answer, created) VALUES (?, ?, ?)", (key, answer, time.time())
        )

    def __len__(self) -> int:
        return self._connection().execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def clear(self) -> None:
        """Forget every cached answer."""
        self._connection().execute("DELETE FROM answers")
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
