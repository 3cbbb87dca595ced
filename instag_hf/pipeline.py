"""The whole chain in one call: tag, normalize, analyze, sample, then save or publish.

``instag run`` is this module; Python users get the same thing:

    result = run_chain(load_source("pool.jsonl"), n=1000, tagger=Tagger("http://127.0.0.1:8080"))
    print(result.summary())
    publish(result, output_dir="curated")         # or publish(result, push_to="me/curated")

Each step is also a function of its own (:func:`tag_dataset`, :func:`normalize_dataset`),
which the single-step CLI commands call.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset

from instag_hf.agreement.auditing import DEFAULT_AUDIT_ROWS, Audit, audit, check_sample, served_model
from instag_hf.analysis.stats import TagStats, analyze
from instag_hf.columns import ERROR_COLUMN, RAW_TAGS_COLUMN, TAGS_COLUMN
from instag_hf.errors import ConfigurationError, InstagError, OutputError
from instag_hf.normalization.normalizer import TagNormalizer
from instag_hf.sampling.provenance import record_tagging
from instag_hf.sampling.sampler import sample
from instag_hf.tagging.tagger import Tagger

logger = logging.getLogger(__name__)

__all__ = ["ChainResult", "normalize_dataset", "publish", "run_chain", "tag_dataset", "write_card"]


@dataclass
class ChainResult:
    """What :func:`run_chain` made.

    Attributes:
        pool: The whole dataset with ``instag_raw_tags``, ``instag_error`` and ``instag_tags``.
        subset: The selected rows.
        normalizer: The normalizer fitted on the pool.
        pool_stats: :func:`~instag_hf.analyze` of the pool.
        subset_stats: :func:`~instag_hf.analyze` of the subset against the pool.
        requests: Requests sent to the tagging endpoint (0 when nothing was tagged).
        cache_hits: Queries answered from the request cache.
        notes: Anything worth telling the user (rows that failed tagging, a short subset).
        tagger: The Tagger that tagged the pool (``None`` when the pool came tagged).
        audit: The sampled audit of the pool's tags by a second tagger, when one was asked for.
        prompt_tokens, generated_tokens: Tokens the servers reported for this run's requests.
        seconds: Wall time of each stage (``tagging``, ``normalizing``, ``sampling``), in seconds.
    """

    pool: Dataset
    subset: Dataset
    normalizer: TagNormalizer
    pool_stats: TagStats
    subset_stats: TagStats
    requests: int = 0
    cache_hits: int = 0
    notes: list[str] = field(default_factory=list)
    tagger: Tagger | None = None
    prompt_tokens: int = 0
    generated_tokens: int = 0
    audit: Audit | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        """A few lines for a terminal or a CI log."""
        pool, sub = self.pool_stats, self.subset_stats
        lines = [
            (
                f"pool: {pool.rows} rows, {pool.unique_tags} tags, {pool.mean_tags:.2f} tags/row "
                f"(tagging requests sent: {self.requests}, answered from cache: {self.cache_hits}; "
                f"{self.prompt_tokens} prompt tokens, {self.generated_tokens} generated tokens)"
            ),
            (
                f"subset: {sub.rows} rows, {sub.unique_tags} tags ({sub.coverage:.1%} of the pool's), "
                f"{sub.mean_tags:.2f} tags/row"
            ),
        ]
        if self.audit is not None:
            lines.append(self.audit.describe())
        return "\n".join(lines + [f"note: {note}" for note in self.notes])


def tag_dataset(ds: Dataset, tagger: Tagger, *, overlap: bool = True, **map_kwargs: Any) -> Dataset:
    """``ds.map(tagger.atag, batched=True)``: add ``instag_raw_tags`` and ``instag_error``.

    Args:
        ds: Rows in any format the tagger recognises.
        tagger: The configured :class:`~instag_hf.Tagger`.
        overlap: Run batches concurrently (``tagger.atag``), which keeps many endpoint
            slots busy across batch boundaries. ``False`` tags one batch after the other
            (``tagger``): as fast for a server that answers one request at a time, and the
            progress bar then moves batch by batch instead of all batches ending together.
        **map_kwargs: Passed to ``Dataset.map`` (``batch_size``, ``num_proc``, ...).

    Returns:
        The tagged dataset. Its ``info.description`` records the server kind, model and
        prompt that tagged it, which :func:`~instag_hf.build_card` names; the Tagger's
        connections and progress bar are closed, so the bar's last line is the tagging rate.

    Raises:
        NoEndpointError, EndpointError, FormatError: As :class:`~instag_hf.Tagger` does.
    """
    previous = [c for c in (RAW_TAGS_COLUMN, ERROR_COLUMN, TAGS_COLUMN) if c in ds.column_names]
    if previous:  # tagging again: the old tags would be stale
        ds = ds.remove_columns(previous)
    try:
        tagged = ds.map(tagger.atag if overlap else tagger, batched=True, **map_kwargs)
    finally:
        tagger.close()  # the progress bar's last line is then the tagging rate, not the chain's
    # The rows say which model tagged them: the card names it, whatever answers later.
    try:
        record_tagging(tagged, tagger.provenance())
    except InstagError as error:  # no row needed an answer (an empty dataset): nothing to record
        logger.debug("No tagger record for %d rows: %s", len(tagged), error)
    return tagged


def normalize_dataset(ds: Dataset, normalizer: TagNormalizer | None = None, *, fit: bool = True) -> Dataset:
    """Fit ``normalizer`` on ``ds`` (unless ``fit=False``) and add ``instag_tags``.

    Raises:
        MissingColumnError: ``ds`` has not been tagged.
        NormalizationError: The normalizer cannot be fitted (say, every tag is too rare).
    """
    normalizer = normalizer if normalizer is not None else TagNormalizer()
    if fit:
        normalizer.fit(ds)
    if TAGS_COLUMN in ds.column_names:
        ds = ds.remove_columns(TAGS_COLUMN)
    return ds.map(normalizer, batched=True, desc="InsTag normalizing")


def run_chain(
    ds: Dataset,
    n: int,
    *,
    tagger: Tagger | None = None,
    tag_options: Mapping[str, Any] | None = None,
    normalizer: TagNormalizer | Mapping[str, Any] | None = None,
    strategy: str = "instag",
    seed: int | None = None,
    target_coverage: float | None = None,
    target_mean_tags: float | None = None,
    audit_tagger: Tagger | None = None,
    audit_rows: int = DEFAULT_AUDIT_ROWS,
    audit_seed: int = 0,
    audit_model: str | None = None,
) -> ChainResult:
    """Tag ``ds`` (when a tagger is given), normalize it, analyze it and sample ``n`` rows.

    Args:
        ds: The pool. Without ``tagger`` it must already hold ``instag_raw_tags``.
        n: Rows to select.
        tagger: Tags the pool; ``None`` keeps the tags already there.
        tag_options: Keywords for :func:`tag_dataset` (``overlap``, ``batch_size``, ...).
        normalizer: An unfitted :class:`~instag_hf.TagNormalizer`, or its settings as a
            mapping (``{"min_frequency": 2}``); fitted here on the pool.
        strategy, seed, target_coverage, target_mean_tags: As :func:`~instag_hf.sample`.
        audit_tagger: A second (usually stronger) Tagger: after sampling, ``audit_rows`` pool
            rows drawn with ``audit_seed`` are tagged again by it and the agreement goes into
            the card (:func:`instag_hf.agreement.audit`). It reads the pool only; the subset
            is the same with or without it.
        audit_model: The model the audit endpoint must serve; checked before the pool is tagged.

    Returns:
        A :class:`ChainResult`; write it with :func:`publish`.

    Raises:
        InstagError: Whatever step fails, with that step's message.

    Example:
        >>> result = run_chain(ds, n=100, tagger=Tagger("http://127.0.0.1:8080"))  # doctest: +SKIP
        >>> result.subset_stats.coverage                                            # doctest: +SKIP
        1.0
    """
    if not isinstance(normalizer, TagNormalizer):
        normalizer = TagNormalizer(**dict(normalizer or {}))
    if audit_tagger is not None:  # a wrong audit setting or endpoint fails now, not after the pool is tagged
        check_sample(audit_rows, audit_seed)
        served_model(audit_tagger, audit_model)
    counters = ("requests", "cache_hits", "prompt_tokens", "generated_tokens")
    clock = [time.monotonic()]
    seconds: dict[str, float] = {}

    def took(stage: str) -> None:
        clock.append(time.monotonic())
        seconds[stage] = clock[-1] - clock[-2]

    if tagger is not None:
        before = [getattr(tagger.stats, name) for name in counters]
        ds = tag_dataset(ds, tagger, **dict(tag_options or {}))
        spent = [getattr(tagger.stats, name) - was for name, was in zip(counters, before)]
    else:
        spent = [0] * len(counters)
    requests, cache_hits, prompt_tokens, generated_tokens = spent
    took("tagging")
    notes = _tagging_notes(ds)
    pool = normalize_dataset(ds, normalizer)
    took("normalizing")
    pool_stats = analyze(pool)
    subset = sample(
        pool, n, strategy=strategy, seed=seed, target_coverage=target_coverage, target_mean_tags=target_mean_tags
    )
    took("sampling")
    if len(subset) < n:
        notes.append(f"asked for {n} rows, selected {len(subset)} (the pool has no more rows with new tags)")
    subset_stats = analyze(subset, pool=pool_stats)
    report = None
    if audit_tagger is not None:
        report = audit(pool, audit_tagger, rows=audit_rows, seed=audit_seed, pool_tagger=tagger, model=audit_model,
                       embedding_model=normalizer.config.embedding_model)  # fmt: skip
    return ChainResult(
        pool,
        subset,
        normalizer,
        pool_stats,
        subset_stats,
        requests,
        cache_hits,
        notes,
        tagger,
        prompt_tokens,
        generated_tokens,
        report,
        seconds,
    )


def check_destination(push_to: str | None, output_dir: str | os.PathLike[str] | None) -> None:
    """Exactly one of the two: the chain publishes to a Hub repo or to a folder.

    Raises:
        ConfigurationError: Neither or both.
    """
    if (push_to is None) == (output_dir is None):
        raise ConfigurationError(
            "Give exactly one destination: a Hub repo (--push-to REPO) or a folder (--output-dir DIR)."
        )


def publish(
    result: ChainResult,
    *,
    push_to: str | None = None,
    output_dir: str | os.PathLike[str] | None = None,
    private: bool | None = None,
    create_pr: bool = False,
    source: str | None = None,
    source_revision: str | None = None,
    extra_files: Mapping[str, bytes] | None = None,
    card_template: str | os.PathLike[str] | None = None,
) -> str:
    """Write the subset, its card, plots and normalizer to the Hub or to a local folder.

    Args:
        result: What :func:`run_chain` returned.
        push_to: Hub dataset repo id (created if missing).
        output_dir: Local folder, same layout as the Hub repo would get.
        private: Create the Hub repo private.
        create_pr: Open a pull request instead of committing to the main branch.
        source, source_revision: The source dataset, named in the card.
        extra_files: More files for the repo, path -> bytes, in the same commit as the
            data (a refresh's state lands with the data it describes, or not at all).
        card_template: A card template file instead of the packaged one (see
            :func:`~instag_hf.build_card`).

    Returns:
        The commit (or pull request) URL, or the folder written.

    Raises:
        ConfigurationError: Neither or both of ``push_to`` and ``output_dir``.
        CardError, HubError: As :func:`~instag_hf.build_card` / :func:`~instag_hf.push_to_hub`.
    """
    from instag_hf.publishing.card import build_card
    from instag_hf.publishing.hub import push_to_hub, save

    check_destination(push_to, output_dir)
    card = build_card(
        result.subset,
        pool=result.pool_stats,
        normalizer=result.normalizer,
        tagger=result.tagger,
        source=source,
        source_revision=source_revision,
        repo_id=push_to,
        audit=result.audit,
        stats=result.subset_stats,  # run_chain measured the subset against the pool already
        template=card_template,
    )
    if push_to is None:
        assert output_dir is not None  # check_destination: exactly one of the two is set
        folder = save(result.subset, output_dir, card=card, normalizer=result.normalizer, extra_files=extra_files)
        return str(folder)
    info = push_to_hub(
        result.subset,
        push_to,
        card=card,
        normalizer=result.normalizer,
        private=private,
        create_pr=create_pr,
        extra_files=extra_files,
    )
    return str(info.pr_url or info.commit_url)


def write_card(
    subset: Dataset,
    folder: str | os.PathLike[str],
    *,
    pool: Dataset | None = None,
    normalizer: TagNormalizer | None = None,
    source: str | None = None,
    template: str | os.PathLike[str] | None = None,
) -> Path:
    """Write the card of ``subset`` as ``folder/README.md`` with its plots beside it.

    ``template`` is a card template file instead of the packaged one (see
    :func:`~instag_hf.build_card`).

    Raises:
        CardError: The card cannot be built from what was given.
        OutputError: The card cannot be written to ``folder``.
    """
    from instag_hf.publishing.card import build_card
    from instag_hf.publishing.layout import README, write_card_files

    card = build_card(subset, pool=pool, normalizer=normalizer, source=source, template=template)
    root = Path(folder)
    try:
        write_card_files(root, card)
    except OSError as error:
        raise OutputError(f"Cannot write the card to {str(root)!r}: {error}", path=str(root)) from error
    return root / README


def _tagging_notes(ds: Dataset) -> list[str]:
    if ERROR_COLUMN not in ds.column_names:
        return []
    errors = [e for e in ds[ERROR_COLUMN] if e]
    if not errors:
        return []
    return [f"{len(errors)} of {len(ds)} rows have an instag_error (kept; first: {errors[0][:200]})"]
