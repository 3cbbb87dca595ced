"""``instag batch collect``: batch results into the request cache, and the tagged dataset.

Result lines are OpenAI's (``{id, custom_id, response: {status_code, request_id, body},
error}``, from the output and the error file of a batch) or ``vllm run-batch``'s (the same
shape). Every line is checked before anything is written:

- a line that is not JSON (a file cut off mid-write) is counted; its query stays without
  an answer, and the row's ``instag_error`` says which line it was;
- a ``custom_id`` prepare did not write, one made with other settings (model, prompt,
  answer form, ``max_new_tokens``), or one whose key no query of this dataset has (a
  results file of another dataset, or of an edited one) stops collect with a
  :class:`~instag_hf.errors.BatchError` naming the file and line: nothing is written;
- a request answered twice with different answers stops it too; the same answer twice
  (a file passed twice) is counted and kept once; an answer beats an error for the same
  request (a retried batch's output after the first one's error file);
- a line that is not HTTP 200 (an error file's ``batch_expired`` lines, a 400) is an
  error for its query, written to ``instag_error`` and not cached: prepare writes it again.

Then every answer goes into the request cache under its key, and the dataset is tagged
from the cache alone (:class:`CachedTags`): the same columns and per-row errors as
``instag tag``, and ``instag tag`` of the same dataset and settings afterwards sends no
request for what was collected. A query with no result line gets an ``instag_error``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from instag_hf.batching.cached_tags import CachedTags
from instag_hf.batching.target import CHAT_URL, BatchTarget, key_prefix, parse_custom_id
from instag_hf.columns import ERROR_COLUMN, RAW_TAGS_COLUMN, TAGS_COLUMN
from instag_hf.errors import BatchError, ConfigurationError, InstagError, OutputError
from instag_hf.sampling.provenance import record_tagging
from instag_hf.tagging.dialects import read_reply
from instag_hf.tagging.dry_run import plan_queries

if TYPE_CHECKING:
    from datasets import Dataset

    from instag_hf.tagging.tagger import Tagger

_CUSTOM_ID_TEXT = re.compile(r'"custom_id"\s*:\s*"([^"]*)"')
_SHOWN = 3  # places named in an error


@dataclass
class CollectReport:
    """What :func:`collect_batch` read and wrote.

    Attributes:
        lines: Result lines read (blank lines not counted).
        answered: Distinct requests answered (HTTP 200 with text): written to the cache.
        failed: Distinct requests whose line was not HTTP 200 (or held no text).
        unreadable: Lines that are not JSON objects with a ``custom_id`` (a cut-off file).
        duplicates: Lines repeating a request already read.
        queries: Distinct queries of the dataset.
        missing: Distinct queries neither the results nor the cache answer.
        rows: Rows written.
        rows_with_error: Rows whose ``instag_error`` is set.
        notes: Where the unreadable lines are.
    """

    lines: int = 0
    answered: int = 0
    failed: int = 0
    unreadable: int = 0
    duplicates: int = 0
    queries: int = 0
    missing: int = 0
    rows: int = 0
    rows_with_error: int = 0
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """A few lines for a terminal."""
        text = (
            f"Collected {self.lines:,} result lines: {self.answered:,} answers written to the request cache, "
            f"{self.failed:,} failed requests, {self.unreadable:,} unreadable lines, {self.duplicates:,} duplicates. "
            f"{self.rows:,} rows ({self.rows_with_error:,} with an instag_error); "
            f"{self.missing:,} of {self.queries:,} distinct queries have no answer"
        )
        if self.missing or self.failed:
            text += " (run `instag batch prepare` again to write their requests)"
        return "\n".join([text + "."] + [f"note: {note}" for note in self.notes])


@dataclass
class _Outcome:
    text: str | None  # the answer, or None for a failed request
    error: str | None
    where: str
    unreadable: bool = False  # from a line that is not JSON: no request outcome at all


def collect_batch(
    ds: Dataset, tagger: Tagger, results: Sequence[str | os.PathLike[str]], *, batch_size: int = 1000
) -> tuple[Dataset, CollectReport]:
    """Read batch results, cache every answer, and tag ``ds`` as ``instag tag`` would.

    Args:
        ds: The dataset the requests were prepared from.
        tagger: The same settings as at prepare (model, server kind, template, answer form,
            ``max_new_tokens``, cache folder).
        results: Results files: OpenAI's output and error files, ``vllm run-batch`` output.
        batch_size: Rows per map batch.

    Returns:
        The tagged dataset (``instag_raw_tags``, ``instag_error``) and a :class:`CollectReport`.

    Raises:
        ConfigurationError: The request cache is off, or no results file was given.
        BatchError: A line belongs to other settings or another dataset, or one request has
            two different answers; nothing is written then.
        OutputError: A results file cannot be read.

    Example:
        >>> tagged, report = collect_batch(ds, Tagger(model="gpt-4o-mini"), ["out.jsonl"])  # doctest: +SKIP
    """
    cache = tagger._request_cache()
    if cache is None:
        raise ConfigurationError(
            "collect writes every answer into the request cache: turn the cache on (drop --no-cache / INSTAG_CACHE=0)"
        )
    if not results:
        raise ConfigurationError("Give the results files to collect: --results output.jsonl [errors.jsonl ...]")
    target = BatchTarget.of(tagger)
    _, planned = plan_queries(tagger, ds, [target.info], batch_size=batch_size)
    keys = {key_prefix(p.key): p.key for p in planned if p.key is not None}
    report = CollectReport(queries=len(planned))
    outcomes = _read_all(results, target, keys, report)

    for key, outcome in outcomes.items():
        if outcome.text is not None:
            cache.put(key, outcome.text)
    report.answered = sum(1 for o in outcomes.values() if o.text is not None)
    report.failed = sum(1 for o in outcomes.values() if o.text is None and not o.unreadable)
    errors = {key: o.error for key, o in outcomes.items() if o.text is None and o.error}
    found = cache.get_many(keys.values())
    report.missing = sum(1 for key in keys.values() if key not in found)
    state = hashlib.sha256()
    for key in sorted(keys.values()):  # what the map's output depends on: its fingerprint
        value = found.get(key)
        state.update(
            f"{key}:{hashlib.sha256(value.encode()).hexdigest() if value is not None else errors.get(key)}\n".encode()
        )
    mapper = CachedTags.of(
        tagger, target, cache, {k: v for k, v in errors.items() if k not in found}, state.hexdigest()
    )
    previous = [c for c in (RAW_TAGS_COLUMN, ERROR_COLUMN, TAGS_COLUMN) if c in ds.column_names]
    if previous:  # tagging again: the old tags would be stale
        ds = ds.remove_columns(previous)
    tagged = ds.map(mapper, batched=True, batch_size=batch_size, desc="InsTag collecting batch results")
    try:
        record_tagging(tagged, target.provenance(tagger))
    except InstagError:  # pragma: no cover - the target's provenance needs no server
        pass
    report.rows = len(tagged)
    report.rows_with_error = sum(1 for error in tagged[ERROR_COLUMN] if error)
    return tagged, report


def _read_all(
    results: Iterable[str | os.PathLike[str]], target: BatchTarget, keys: dict[str, str], report: CollectReport
) -> dict[str, _Outcome]:
    outcomes: dict[str, _Outcome] = {}
    other_settings: list[str] = []
    other_dataset: list[str] = []
    not_ours: list[str] = []
    conflicts: list[str] = []
    for path in results:
        for number, line in _lines(path):
            where = f"{os.fspath(path)}:{number}"
            report.lines += 1
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            custom_id = record.get("custom_id") if isinstance(record, dict) else None
            if not isinstance(custom_id, str):
                report.unreadable += 1
                match = _CUSTOM_ID_TEXT.search(line)
                parts = parse_custom_id(match.group(1)) if match else None
                key = keys.get(parts.key_prefix) if parts and parts.digest == target.digest else None
                if key is not None and key not in outcomes:
                    outcomes[key] = _Outcome(
                        None, f"its batch result line {where} is not valid JSON (cut off?)", where, unreadable=True
                    )
                report.notes.append(f"{where} is not a JSON result line (cut off?): {line[:80]!r}")
                continue
            parts = parse_custom_id(custom_id)
            if parts is None:
                not_ours.append(f"{where} ({custom_id[:80]!r})")
                continue
            if parts.digest != target.digest:
                other_settings.append(f"{where} (settings {parts.digest}, expected {target.digest})")
                continue
            key = keys.get(parts.key_prefix)
            if key is None:
                other_dataset.append(f"{where} (row {parts.row}, turn {parts.turn})")
                continue
            new = _outcome(record, where)
            old = outcomes.get(key)
            if old is None or (old.text is None and new.text is not None):
                outcomes[key] = new
            elif old.text is not None and new.text is not None and old.text != new.text:
                conflicts.append(f"{old.where} and {where} ({custom_id})")
            else:
                report.duplicates += 1
    _check(other_settings, other_dataset, not_ours, conflicts)
    return outcomes


def _lines(path: str | os.PathLike[str]) -> Iterable[tuple[int, str]]:
    try:
        with Path(path).open(encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    yield number, line.strip()
    except OSError as error:
        raise OutputError(f"Cannot read the batch results file {os.fspath(path)!r}: {error}") from error


def _outcome(record: dict[str, Any], where: str) -> _Outcome:
    response = record.get("response")
    status = response.get("status_code") if isinstance(response, dict) else None
    body = response.get("body") if isinstance(response, dict) else None
    if status == 200:
        text = read_reply(CHAT_URL, body)
        if text is not None:
            return _Outcome(text, None, where)
        return _Outcome(None, f"batch request answered HTTP 200 with no generated text ({where})", where)
    error = record.get("error") if isinstance(record.get("error"), dict) else None
    if error is None and isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
    message = " ".join(str(error.get(k)) for k in ("code", "message") if error and error.get(k)) or "no message"
    what = f"HTTP {status}: " if status is not None else ""
    return _Outcome(None, f"batch request failed ({what}{message[:300]})", where)


def _check(other_settings: list[str], other_dataset: list[str], not_ours: list[str], conflicts: list[str]) -> None:
    problems = []
    if other_settings:
        problems.append(
            f"{len(other_settings)} line(s) were prepared with other settings (model, server kind, template, "
            f"answer form or max_new_tokens): {_few(other_settings)}. Collect with the settings given to "
            "`instag batch prepare`, or leave those files out"
        )
    if other_dataset:
        problems.append(
            f"{len(other_dataset)} line(s) ask queries this dataset does not hold: {_few(other_dataset)}. "
            "They are results of another dataset (or of this one before it changed): pass the dataset the "
            "requests were prepared from, or leave those files out"
        )
    if not_ours:
        problems.append(
            f"{len(not_ours)} line(s) have a custom_id `instag batch prepare` did not write: {_few(not_ours)}. "
            "Pass only results of requests files instag wrote"
        )
    if conflicts:
        problems.append(
            f"{len(conflicts)} request(s) were answered twice with different answers: {_few(conflicts)}. "
            "Pass each batch's results once (keep one run's output when a batch was run twice)"
        )
    if problems:
        raise BatchError("Cannot collect these batch results, nothing was written: " + "; ".join(problems) + ".")


def _few(places: list[str]) -> str:
    return ", ".join(places[:_SHOWN]) + (f" and {len(places) - _SHOWN} more" if len(places) > _SHOWN else "")
