"""What a tagging run would send, before anything is sent: ``Tagger.plan`` / ``instag tag --dry-run``.

The queries are read as the tagger reads them (same formats, same fitting to the server's
input limit) and looked up in the request cache under the same keys, so "would send" is
exactly the number of generation requests a first ask makes. Prompt tokens are an
estimate from characters; the servers' own counts come back in ``TaggingStats`` once the
run happens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from instag_hf.tagging.batch import fit_query
from instag_hf.tagging.cache import request_key
from instag_hf.tagging.client import _max_query_chars, first_params
from instag_hf.tagging.rows import extract_queries
from instag_hf.tagging.servers import ServerInfo

if TYPE_CHECKING:
    from datasets import Dataset

    from instag_hf.tagging.tagger import Tagger

#: Characters per prompt token assumed by the estimate: an English average of common tokenizers.
ESTIMATE_CHARS_PER_TOKEN = 4


@dataclass(frozen=True)
class TaggingPlan:
    """The requests tagging a dataset would send.

    Attributes:
        rows: Rows read.
        queries: User queries in them (one per user turn, empty ones left out).
        distinct: Distinct queries as they would be sent (after fitting the input limit).
        cached: Distinct queries the request cache already answers.
        to_send: Distinct queries that would be sent (one request each, before retries).
        prompt_tokens: Estimated prompt tokens of those requests (template included).
        model: The model the endpoints serve (None without an endpoint).
        kind: The server kind (None without an endpoint).
        cache_checked: Whether the request cache was looked at (it needs an endpoint's
            model identity, and a cache that is on).
    """

    rows: int
    queries: int
    distinct: int
    cached: int
    to_send: int
    prompt_tokens: int
    model: str | None
    kind: str | None
    cache_checked: bool

    def describe(self) -> str:
        """One paragraph for a terminal."""
        where = f" to {self.model} on server kind {self.kind}" if self.model else ""
        cache = (
            f"{self.cached:,} answered by the request cache"
            if self.cache_checked
            else "request cache not checked" + ("" if self.model else " (no endpoint configured)")
        )
        return (
            f"Dry run: {self.rows:,} rows, {self.queries:,} user queries ({self.distinct:,} distinct); {cache}; "
            f"would send {self.to_send:,} requests{where}, about {self.prompt_tokens:,} prompt tokens "
            f"(at ~{ESTIMATE_CHARS_PER_TOKEN} characters per token). Nothing was sent."
        )


@dataclass(frozen=True)
class PlannedQuery:
    """One distinct query as it would be sent, and where it first appears.

    Attributes:
        query: The query as sent (after fitting the server's input limit).
        key: Its request-cache key (None without a model identity to key on).
        row, turn: The first row holding it, and the user turn inside that row.
        cached: The request cache already answers it.
    """

    query: str
    key: str | None
    row: int
    turn: int
    cached: bool


def plan(tagger: Tagger, ds: Dataset, *, batch_size: int = 1000) -> TaggingPlan:
    """See :meth:`instag_hf.Tagger.plan`."""
    infos = tagger.servers() if tagger.endpoints else None
    return plan_queries(tagger, ds, infos, batch_size=batch_size)[0]


def plan_queries(
    tagger: Tagger, ds: Dataset, infos: list[ServerInfo] | None, *, batch_size: int = 1000
) -> tuple[TaggingPlan, list[PlannedQuery]]:
    """The plan, and every distinct query in order of first appearance.

    Args:
        tagger: Whose row format, prompt, answer form and cache decide what is sent.
        ds: The dataset.
        infos: What answers the requests (``Tagger.servers()``), or None when nothing is
            known: then no input limit applies and the cache is not looked at.
        batch_size: Rows read at a time.

    Raises:
        FormatError: No column to read queries from.
    """
    fmt = tagger._row_format(ds.column_names)
    prompt = tagger.settings.prompt
    limit = _max_query_chars(infos, prompt, tagger.max_new_tokens) if infos else None
    names = [fmt.column] + ([fmt.input_column] if fmt.input_column and fmt.input_column in ds.column_names else [])
    queries = 0
    first: dict[str, tuple[int, int]] = {}
    row_index = 0
    for table in ds.select_columns(names).with_format("arrow").iter(batch_size=batch_size):
        batch = {name: table.column(name).to_pylist() for name in names}
        for row in extract_queries(batch, fmt):
            for turn, query in row.queries:
                queries += 1
                sent, _ = fit_query(query, limit, tagger.long_queries)
                if sent is not None:
                    first.setdefault(sent, (row_index, turn))
            row_index += 1
    params = first_params(tagger.max_new_tokens, tagger.settings.answer)
    keys = {q: request_key(infos[0].identity, prompt.sha256, q, params) for q in first} if infos else {}
    cache = tagger._request_cache() if infos else None
    found = cache.get_many(keys.values()) if cache is not None else {}
    planned = [PlannedQuery(q, keys.get(q), row, turn, keys.get(q) in found) for q, (row, turn) in first.items()]
    missing = [p.query for p in planned if not p.cached]
    chars = sum(len(prompt.render(q)) for q in missing)
    summary = TaggingPlan(
        rows=len(ds),
        queries=queries,
        distinct=len(first),
        cached=len(first) - len(missing),
        to_send=len(missing),
        prompt_tokens=-(-chars // ESTIMATE_CHARS_PER_TOKEN),
        model=infos[0].model_name if infos else None,
        kind=infos[0].kind if infos else None,
        cache_checked=cache is not None,
    )
    return summary, planned
