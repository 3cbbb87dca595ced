"""``instag batch prepare``: the requests a dataset still needs, as OpenAI Batch files.

One line per distinct user query the request cache does not answer yet, counted as
``instag tag --dry-run`` counts them (:func:`~instag_hf.tagging.dry_run.plan_queries`),
with the body online tagging would send (:meth:`BatchTarget.request_line`). The lines are
split into files of at most 50,000 lines and 200 MB, OpenAI's limits per batch:
``-o requests.jsonl`` writes ``requests-00000.jsonl``, ``requests-00001.jsonl``, ...
Files of an earlier prepare under the same name are removed first, so the folder holds
exactly the requests still missing.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from instag_hf.batching.target import BatchTarget
from instag_hf.errors import OutputError
from instag_hf.tagging.dry_run import ESTIMATE_CHARS_PER_TOKEN, TaggingPlan, plan_queries

if TYPE_CHECKING:
    from datasets import Dataset

    from instag_hf.tagging.tagger import Tagger

logger = logging.getLogger(__name__)

#: OpenAI's limits on one batch input file.
MAX_LINES = 50_000
MAX_BYTES = 200 * 1000 * 1000


@dataclass(frozen=True)
class PreparedBatch:
    """What :func:`prepare_batch` wrote.

    Attributes:
        plan: The counts, as ``instag tag --dry-run`` gives them.
        files: The requests files, in order (none when the cache answers everything).
        requests: Lines written (``plan.to_send``).
    """

    plan: TaggingPlan
    files: tuple[Path, ...]
    requests: int

    def describe(self) -> str:
        """One paragraph for a terminal."""
        p = self.plan
        where = f"{p.model} (server kind {p.kind})"
        head = f"Batch requests: {p.rows:,} rows, {p.queries:,} user queries ({p.distinct:,} distinct); " + (
            f"{p.cached:,} answered by the request cache" if p.cache_checked else "request cache off"
        )
        if not self.files:
            return f"{head}; nothing left to ask {where}, no file written."
        names = ", ".join(str(f) for f in self.files[:3]) + (
            f" and {len(self.files) - 3} more" if len(self.files) > 3 else ""
        )
        return (
            f"{head}; wrote {self.requests:,} requests for {where} in {len(self.files)} "
            f"file{'s' * (len(self.files) > 1)}, about {p.prompt_tokens:,} prompt tokens "
            f"(at ~{ESTIMATE_CHARS_PER_TOKEN} characters per token) -> {names}"
        )


def part_path(output: str | os.PathLike[str], index: int) -> Path:
    """The ``index``-th requests file of ``output`` (``requests.jsonl`` -> ``requests-00000.jsonl``)."""
    path = Path(output)
    return path.with_name(f"{path.stem}-{index:05d}{path.suffix or '.jsonl'}")


def part_paths(output: str | os.PathLike[str]) -> list[Path]:
    """The requests files of ``output`` that exist, in order."""
    path = Path(output)
    pattern = f"{path.stem}-[0-9][0-9][0-9][0-9][0-9]{path.suffix or '.jsonl'}"
    return sorted(path.parent.glob(pattern))


def prepare_batch(
    ds: Dataset,
    tagger: Tagger,
    output: str | os.PathLike[str],
    *,
    max_lines: int = MAX_LINES,
    max_bytes: int = MAX_BYTES,
    batch_size: int = 1000,
) -> PreparedBatch:
    """Write the OpenAI Batch requests files of every query of ``ds`` the cache lacks.

    Args:
        ds: The dataset, in any row format the tagger reads.
        tagger: Its model, server kind, template, answer form, ``max_new_tokens`` and
            cache decide the lines (see :class:`~instag_hf.batching.target.BatchTarget`).
        output: The files' name: ``requests.jsonl`` writes ``requests-00000.jsonl``, ...
        max_lines, max_bytes: Limits per file (OpenAI's by default).
        batch_size: Rows read at a time.

    Returns:
        A :class:`PreparedBatch`.

    Raises:
        ConfigurationError: No model to name (see ``BatchTarget.of``).
        FormatError: No column to read queries from.
        OutputError: A file cannot be written.

    Example:
        >>> prepare_batch(ds, Tagger(model="gpt-4o-mini"), "requests.jsonl").files  # doctest: +SKIP
        (PosixPath('requests-00000.jsonl'),)
    """
    if max_lines < 1 or max_bytes < 1:
        raise ValueError("max_lines and max_bytes must be >= 1")
    target = BatchTarget.of(tagger)
    plan, planned = plan_queries(tagger, ds, [target.info], batch_size=batch_size)
    try:
        for stale in part_paths(output):
            stale.unlink()
            logger.info("Removed %s from an earlier prepare", stale)
        files: list[Path] = []
        lines = size = 0
        handle = None
        try:
            for query in planned:
                if query.cached:
                    continue
                assert query.key is not None  # plan_queries keys every query when given a server
                data = (
                    json.dumps(
                        target.request_line(query.query, query.key, query.row, query.turn),
                        ensure_ascii=False,
                        separators=(",", ":"),
                    ).encode("utf-8")
                    + b"\n"
                )
                if handle is None or lines >= max_lines or (lines and size + len(data) > max_bytes):
                    if handle is not None:
                        handle.close()
                    files.append(part_path(output, len(files)))
                    files[-1].parent.mkdir(parents=True, exist_ok=True)
                    handle = files[-1].open("wb")
                    lines = size = 0
                handle.write(data)
                lines, size = lines + 1, size + len(data)
        finally:
            if handle is not None:
                handle.close()
    except OSError as error:
        raise OutputError(f"Cannot write the batch requests next to {os.fspath(output)!r}: {error}") from error
    return PreparedBatch(plan=plan, files=tuple(files), requests=plan.to_send)
