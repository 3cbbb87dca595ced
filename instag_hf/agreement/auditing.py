"""The sampled audit: how far the pool's tags agree with a second, usually stronger, tagger.

    from instag_hf.agreement import audit
    report = audit(pool, Tagger("http://big-model:8080"), rows=200, pool_tagger=tagger)
    card = instag_hf.build_card(subset, pool=pool, audit=report)   # agreement in the provenance

A seeded random sample of the pool's rows is tagged again through the given
:class:`~instag_hf.Tagger` (so its request cache, retries and fail-fast apply: a second run
with the same cache sends nothing) and scored against the pool's own tags by
:func:`~instag_hf.agreement.comparison.score_rows`, the pool's tagger being the candidate and the
audit's the reference. The pool and any subset are only read: the audit never changes a row.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from instag_hf.agreement.comparison import _batches, _has_turns, read_row_tags, score_rows
from instag_hf.agreement.matching import DEFAULT_THRESHOLD, Encoder, TagMatcher
from instag_hf.columns import ERROR_COLUMN, RAW_TAGS_COLUMN, TAGS_COLUMN, missing_column
from instag_hf.errors import AgreementError, ConfigurationError, EndpointError, MissingColumnError, NoEndpointError
from instag_hf.tagging.rows import detect_format, extract_queries

logger = logging.getLogger(__name__)

DEFAULT_AUDIT_ROWS = 200

__all__ = ["DEFAULT_AUDIT_ROWS", "Audit", "audit", "check_sample", "served_model"]


@dataclass(frozen=True)
class Audit:
    """The outcome of :func:`audit`, as the dataset card shows it (micro-averaged F1s).

    Attributes:
        rows_sampled: Pool rows drawn at random.
        rows_compared: Of those, rows tagged on both sides (the others failed on a side).
        seed: Seed of the draw.
        candidate_model: Model that tagged the pool (``None``: not known).
        reference_model: Model of the audit's tagger.
        exact_raw_f1: F1 of identical tag strings.
        exact_f1: F1 of tags equal after the rule key (case, punctuation, stems).
        semantic_f1: F1 of semantic matches (``None`` when not scored).
        threshold: Cosine similarity a semantic match exceeds (``None`` without semantic).
        embedding_model: Embedding model of semantic matching (``None`` without).
        requests: Requests the audit sent (0 when all answers came from the cache).
        cache_hits: Queries the request cache answered.
    """

    rows_sampled: int
    rows_compared: int
    seed: int
    candidate_model: str | None
    reference_model: str | None
    exact_raw_f1: float | None
    exact_f1: float | None
    semantic_f1: float | None
    threshold: float | None
    embedding_model: str | None
    requests: int = 0
    cache_hits: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Audit:
        """Rebuild from :meth:`to_dict` output; unknown keys are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def describe(self) -> str:
        """One line for a terminal."""
        figures = [f"exact F1 {_pct(self.exact_f1)} (raw {_pct(self.exact_raw_f1)})"]
        if self.semantic_f1 is not None:
            figures.append(f"semantic F1 {_pct(self.semantic_f1)}")
        return (f"audit: {self.rows_compared} of {self.rows_sampled} sampled rows re-tagged by "
                f"{self.reference_model}: {', '.join(figures)} (requests sent: {self.requests}, "
                f"answered from cache: {self.cache_hits})")  # fmt: skip


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def check_sample(rows: int, seed: int) -> None:
    """Reject audit sample settings that :func:`audit` would reject.

    Raises:
        ConfigurationError: ``rows`` is not a positive integer or ``seed`` not a non-negative one.
    """
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise ConfigurationError(f"The audit needs a positive number of rows, got {rows!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigurationError(f"The audit seed must be a non-negative integer, got {seed!r}.")


def served_model(tagger: Any, expected: str | None = None) -> str:
    """The model id the tagger's endpoint serves, checked against ``expected``.

    Asks the server once (the Tagger keeps the answer).

    Args:
        tagger: A :class:`~instag_hf.Tagger`.
        expected: The model the endpoint must serve, or ``None`` to accept any.

    Returns:
        The served model id.

    Raises:
        NoEndpointError: The tagger has no endpoint.
        EndpointError: The endpoint does not answer.
        ConfigurationError: It serves another model than ``expected``.
    """
    endpoints = tagger.endpoints
    if not endpoints:
        raise NoEndpointError("The audit tagger has no endpoint: give Tagger(endpoint=...) or --audit-endpoint URL.")
    model = str(tagger.servers()[0].model_id)
    if expected is not None and model != expected:
        raise ConfigurationError(
            f"The audit endpoint {', '.join(endpoints)} serves {model!r}, not {expected!r}: point "
            "--audit-endpoint at the server of that model, or drop --audit-model to accept what it serves."
        )
    return model


def audit(
    pool: Any,
    tagger: Any,
    *,
    rows: int = DEFAULT_AUDIT_ROWS,
    seed: int = 0,
    pool_tagger: Any | None = None,
    model: str | None = None,
    column: str | None = None,
    mode: str = "all",
    threshold: float = DEFAULT_THRESHOLD,
    embedding_model: str | None = None,
    encoder: Encoder | None = None,
) -> Audit:
    """Tag a seeded random sample of ``pool`` with ``tagger`` and score the pool's tags against it.

    Args:
        pool: The tagged pool (a ``datasets.Dataset``); only read.
        tagger: The audit's :class:`~instag_hf.Tagger` (the reference).
        rows: Rows to sample (all rows when the pool is smaller).
        seed: Seed of the sample.
        pool_tagger: The Tagger that tagged the pool, or its model id, for the record.
        model: The model the audit endpoint must serve (checked before anything is sent).
        column: The pool's tag column; default ``instag_raw_tags``, else ``instag_tags``.
        mode, threshold, embedding_model, encoder: As :class:`~instag_hf.agreement.TagMatcher`.

    Returns:
        An :class:`Audit`; give it to :func:`instag_hf.build_card` as ``audit=``.

    Raises:
        ConfigurationError: A bad argument, or the endpoint serves another model than ``model``.
        MissingColumnError: The pool has no tag column.
        AgreementError: The pool is empty, or every sampled row failed on a side.
        EndpointError, NoEndpointError: As the Tagger raises them.

    Example:
        >>> report = audit(pool, Tagger("http://127.0.0.1:8081"), rows=200)  # doctest: +SKIP
        >>> report.semantic_f1                                               # doctest: +SKIP
        0.71
    """
    check_sample(rows, seed)
    names = list(pool.column_names)
    column = column or (RAW_TAGS_COLUMN if RAW_TAGS_COLUMN in names else TAGS_COLUMN)
    if column not in names:
        raise MissingColumnError(missing_column(column, names, what="The pool"), column=column)
    if len(pool) == 0:
        raise AgreementError("The pool is empty: there is nothing to audit.")
    matcher = TagMatcher(mode, threshold, embedding_model, encoder)  # bad settings fail before any request
    reference_model = served_model(tagger, model)
    candidate_model = _model_of(pool_tagger)

    picked = np.random.default_rng(seed).choice(len(pool), size=min(rows, len(pool)), replace=False)
    sample = pool.select(sorted(int(i) for i in picked))
    fmt = detect_format(names, format=tagger.format, column=tagger.column)
    before = (tagger.stats.requests, tagger.stats.cache_hits)
    candidates, references = [], []
    turns = _has_turns(pool, column)
    query_columns = list(dict.fromkeys(c for c in (fmt.column, fmt.input_column) if c))
    tag_columns = [c for c in (column, ERROR_COLUMN) if c in names and c not in query_columns]
    for batch in _batches(sample, query_columns + tag_columns):
        queries = extract_queries(batch, fmt)
        tagged = tagger({name: batch[name] for name in query_columns})  # the same Tagger: cache, retries
        errors = batch.get(ERROR_COLUMN) or [None] * len(queries)
        for row, value, error, ref_value, ref_error in zip(
            queries, batch[column], errors, tagged[RAW_TAGS_COLUMN], tagged[ERROR_COLUMN], strict=True
        ):
            query_turns = [turn for turn, _ in row.queries] or [0]
            candidates.append(read_row_tags(value, error, turns, query_turns))
            references.append(read_row_tags(ref_value, ref_error, True, query_turns))
    result = score_rows(candidates, references, matcher)
    scores = result["scores"]
    report = Audit(
        rows_sampled=len(candidates),
        rows_compared=result["rows_compared"],
        seed=seed,
        candidate_model=candidate_model,
        reference_model=reference_model,
        exact_raw_f1=scores["exact_raw"].micro_f1 if "exact_raw" in scores else None,
        exact_f1=scores["exact"].micro_f1 if "exact" in scores else None,
        semantic_f1=scores["semantic"].micro_f1 if "semantic" in scores else None,
        threshold=result["threshold"],
        embedding_model=result["embedding_model"],
        requests=tagger.stats.requests - before[0],
        cache_hits=tagger.stats.cache_hits - before[1],
    )
    logger.info("%s", report.describe())
    return report


def _model_of(pool_tagger: Any | None) -> str | None:
    if pool_tagger is None or isinstance(pool_tagger, str):
        return pool_tagger
    try:
        return served_model(pool_tagger)
    except (EndpointError, ConfigurationError) as error:  # the record says "unknown" rather than failing the audit
        logger.warning("The pool's tagging endpoint did not say what it serves (%s); the audit records it as unknown.",
                       error)  # fmt: skip
        return None
