"""The saved form of a fitted TagNormalizer: one JSON file, byte-identical for equal content.

Keys are sorted, separators fixed, nothing time-dependent is written, and the content hash
(sha256 of the canonical JSON of what decides the output) is checked when read back, so a
hand-edited mapping is caught instead of silently applied.

    >>> write_artifact("normalizer.json", content, report={...}, library_version="0.1.0")
    >>> content, report = read_artifact("normalizer.json")
"""

from __future__ import annotations

import hashlib
import json
from os import PathLike
from typing import Any

from instag_hf.errors import NormalizationError

FORMAT = "instag_hf.TagNormalizer"
FORMAT_VERSION = 1


def content_hash(content: dict[str, Any]) -> str:
    """sha256 hex digest of the canonical JSON of ``content``.

    Example:
        >>> content_hash({"b": 1, "a": [2]}) == content_hash({"a": [2], "b": 1})
        True
    """
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def write_artifact(
    path: str | PathLike[str],
    content: dict[str, Any],
    report: dict[str, Any] | None,
    library_version: str,
) -> None:
    """Write ``content`` (hashed) plus the report and library version (not hashed) to ``path``.

    Raises:
        NormalizationError: The file cannot be written.
    """
    document = {
        **content,
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library_version": library_version,
        "report": report,
        "content_hash": content_hash(content),
    }
    # indent=1 keeps a 100K-tag mapping diffable line by line at little size cost.
    text = json.dumps(document, sort_keys=True, indent=1, separators=(",", ": "), ensure_ascii=False)
    try:
        with open(path, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text + "\n")
    except OSError as error:
        raise NormalizationError(f"Cannot save the TagNormalizer to {str(path)!r}: {error}") from error


def read_artifact(path: str | PathLike[str], content_keys: tuple[str, ...]) -> tuple[dict[str, Any], Any]:
    """Read a file written by :func:`write_artifact` and check its content hash.

    Args:
        path: The JSON file.
        content_keys: The keys that were hashed.

    Returns:
        ``(content, report)``.

    Raises:
        NormalizationError: The file is missing or unreadable, is not a saved TagNormalizer,
            has another format version, or was edited after saving.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except (OSError, ValueError) as error:
        raise NormalizationError(f"Cannot read a TagNormalizer from {str(path)!r}: {error}") from error
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise NormalizationError(f"{str(path)!r} is not a saved TagNormalizer.")
    if document.get("format_version") != FORMAT_VERSION:
        raise NormalizationError(
            f"{str(path)!r} has format version {document.get('format_version')}; this "
            f"instag_hf reads version {FORMAT_VERSION}."
        )
    missing = [key for key in content_keys if key not in document]
    if missing:
        raise NormalizationError(f"{str(path)!r} lacks {missing}: it is not a complete saved TagNormalizer.")
    content = {key: document[key] for key in content_keys}
    if content_hash(content) != document.get("content_hash"):
        raise NormalizationError(f"{str(path)!r} was modified after saving: its content hash does not match.")
    return content, document.get("report")
