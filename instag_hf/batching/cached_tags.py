"""Tagging a dataset from the request cache alone, after batch results were collected into it.

:class:`CachedTags` is a batched map function like :class:`~instag_hf.Tagger`, with the
same reading of rows (:mod:`~instag_hf.tagging.rows`), the same fitting of long queries,
the same parser and the same columns and per-row errors
(:func:`~instag_hf.tagging.batch.assemble`); where the Tagger would send a request it
writes why there is no answer instead. It holds plain values only, so ``Dataset.map``
hashes it the same across runs; ``state`` (a digest of every answer and error it will
read) changes its fingerprint whenever a collect brought something new.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from instag_hf.tagging.batch import assemble, columns_of, fit_query, query_columns, with_columns
from instag_hf.tagging.cache import RequestCache, request_key
from instag_hf.tagging.client import Answer
from instag_hf.tagging.parsing import parse_tags
from instag_hf.tagging.rows import detect_format, extract_queries

if TYPE_CHECKING:
    from instag_hf.batching.target import BatchTarget
    from instag_hf.tagging.tagger import Tagger

#: The ``instag_error`` of a query no batch result answered.
NO_RESULT = (
    "no batch result for this query: run `instag batch prepare` again to write the requests still missing, "
    "or `instag tag` to ask them online"
)


@dataclass(frozen=True)
class CachedTags:
    """``ds.map(CachedTags.of(...), batched=True)``: ``instag_raw_tags`` and ``instag_error``
    from the request cache.

    Attributes:
        format, column: The row-format settings (detected per batch, as the Tagger does).
        limit: Longest query sent (the target server's input limit), None for no limit.
        long_queries: ``"truncate"`` or ``"error"``, as the Tagger's.
        identity, prompt_sha256, params: What the request-cache keys are made of.
        cache_dir: The request cache folder.
        errors: Why a request failed, by key (its batch line was not HTTP 200).
        state: Digest of the answers and errors this map reads.
    """

    format: str | None
    column: str | None
    limit: int | None
    long_queries: str
    identity: str
    prompt_sha256: str
    params: tuple[tuple[str, Any], ...]
    cache_dir: str
    errors: tuple[tuple[str, str], ...]
    state: str

    @classmethod
    def of(
        cls, tagger: Tagger, target: BatchTarget, cache: RequestCache, errors: dict[str, str], state: str
    ) -> CachedTags:
        """The map function for ``tagger``'s settings at ``target``."""
        settings = tagger.settings
        return cls(
            format=settings.format,
            column=settings.column,
            limit=target.max_query_chars,
            long_queries=settings.long_queries,
            identity=target.info.identity,
            prompt_sha256=target.prompt.sha256,
            params=tuple(sorted(target.params.items())),
            cache_dir=str(cache.directory),
            errors=tuple(sorted(errors.items())),
            state=state,
        )

    def __call__(self, batch: Any) -> Any:
        columns, table = columns_of(batch)
        fmt = detect_format(columns, format=self.format, column=self.column)
        rows = extract_queries(query_columns(batch, table, fmt), fmt)
        params = dict(self.params)
        sent = (fit_query(q, self.limit, self.long_queries)[0] for row in rows for _, q in row.queries)
        keys = {q: request_key(self.identity, self.prompt_sha256, q, params) for q in sent if q is not None}
        cache = RequestCache(self.cache_dir)
        try:
            found = cache.get_many(keys.values())
        finally:
            cache.close()
        errors = dict(self.errors)
        answers = {
            query: Answer(parse_tags(found[key])) if key in found else Answer(None, errors.get(key, NO_RESULT))
            for query, key in keys.items()
        }
        raw_tags, problems = assemble(rows, answers, self.limit, self.long_queries)
        return with_columns(batch, table, raw_tags, problems)
