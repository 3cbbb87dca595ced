"""The four normalization steps, run on the occurrences of a tagged pool.

Frequency filter -> rule aggregation -> semantic aggregation -> association aggregation,
in the order docs/method.md lists them; the choices each step makes are documented in
:mod:`instag_hf.normalization.normalizer`. Everything here is deterministic for a given input: groups
are numbered by name and ties are broken by name.

    >>> fitted = fit_vocabulary(read_occurrences(ds, 10_000), NormalizerConfig())
    >>> fitted.report.after_frequency, len(fitted.mapping)
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from instag_hf.errors import NormalizationError
from instag_hf.normalization.config import NormalizerConfig
from instag_hf.normalization.grouping import Level
from instag_hf.normalization.occurrences import Occurrences, unique_group_pairs
from instag_hf.normalization.report import NormalizationReport
from instag_hf.normalization.steps.association import merge_targets, mine_rules
from instag_hf.normalization.steps.rule import clean_text, rule_key
from instag_hf.normalization.steps.semantic import cluster

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FittedVocabulary:
    """What a fit learned.

    Args:
        mapping: Raw tag -> canonical tag, for every raw tag kept, sorted by raw tag.
        dropped: Raw tags seen and dropped (frequency filter, punctuation only), sorted.
        keys: Rule key -> canonical tag, for tags unseen at fit time; sorted by key.
        embedding_model_id: The embedding model used, ``None`` without semantic aggregation.
        report: Counts per step and example merges.
        timings: Seconds per step.
    """

    mapping: dict[str, str]
    dropped: list[str]
    keys: dict[str, str]
    embedding_model_id: str | None
    report: NormalizationReport
    timings: dict[str, float]


def fit_vocabulary(occ: Occurrences, config: NormalizerConfig) -> FittedVocabulary:
    """Run the enabled steps of ``config`` on ``occ``.

    Args:
        occ: The pool's (query, raw tag) occurrences.
        config: Which steps run, with which thresholds.

    Returns:
        The learned mapping and its report.

    Raises:
        NormalizationError: The pool is empty, holds no tag, or a step leaves no tag.
        ConfigurationError: The embedding model cannot be found or loaded.
    """
    if occ.rows == 0:
        raise NormalizationError("Cannot fit a TagNormalizer on an empty dataset.")
    if not occ.vocabulary:
        raise NormalizationError(
            f"The dataset's {occ.rows} rows hold no tag ({occ.rows_with_error} have an "
            "instag_error): check the tagging step before normalizing."
        )
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    examples: dict[str, list[dict[str, Any]]] = {}
    level, examples["frequency"] = _frequency_step(occ, config)
    counts = {"raw": len(occ.vocabulary), "frequency": len(level.names)}
    clock = _lap(timings, "frequency", clock)

    level, examples["rule"], keys = _rule_step(level, occ, config)
    counts["rule"] = len(level.names)
    clock = _lap(timings, "rule", clock)

    level, examples["semantic"], model_id = _semantic_step(level, occ, config)
    counts["semantic"] = len(level.names)
    clock = _lap(timings, "semantic", clock)

    level, examples["association"], n_rules = _association_step(level, occ, config)
    counts["association"] = len(level.names)
    _lap(timings, "association", clock)
    logger.info("Tag vocabulary per step: %s", counts)

    mapping = {
        tag: level.names[group] for tag, group in sorted(zip(occ.vocabulary, level.group_of_tag.tolist())) if group >= 0
    }
    return FittedVocabulary(
        mapping=mapping,
        dropped=sorted(tag for tag in occ.vocabulary if tag not in mapping),
        keys={key: mapping[tag] for key, tag in sorted(keys.items())},
        embedding_model_id=model_id,
        report=NormalizationReport(
            rows=occ.rows,
            rows_with_error=occ.rows_with_error,
            queries=occ.n_queries,
            raw_tags=counts["raw"],
            after_frequency=counts["frequency"],
            after_rule=counts["rule"],
            after_semantic=counts["semantic"],
            after_association=counts["association"],
            association_rules=n_rules,
            examples=examples,
        ),
        timings=timings,
    )


def _frequency_step(occ: Occurrences, config: NormalizerConfig) -> tuple[Level, list[dict[str, Any]]]:
    counts = occ.query_counts()
    keep = counts >= config.min_frequency if config.frequency_filter else np.ones(len(counts), bool)
    if not keep.any():
        raise NormalizationError(
            f"The frequency filter dropped all {len(counts)} tags: none occurs in "
            f"{config.min_frequency} queries (the most frequent occurs in {int(counts.max())}). "
            "Lower min_frequency, e.g. TagNormalizer(min_frequency=1), for a small dataset."
        )
    kept = np.flatnonzero(keep)
    group_of_tag = np.full(len(counts), -1, dtype=np.int64)
    group_of_tag[kept] = np.arange(len(kept))
    # The dropped tags closest to the threshold show what the filter cost.
    dropped = sorted(np.flatnonzero(~keep).tolist(), key=lambda i: (-int(counts[i]), occ.vocabulary[i]))
    examples = [{"dropped": occ.vocabulary[i], "queries": int(counts[i])} for i in dropped[:5]]
    return Level(group_of_tag, [occ.vocabulary[i] for i in kept], counts[kept]), examples


def _rule_step(
    level: Level, occ: Occurrences, config: NormalizerConfig
) -> tuple[Level, list[dict[str, Any]], dict[str, str]]:
    if not config.rule_aggregation:
        return level, [], {}
    key_of_group = [rule_key(name) for name in level.names]
    distinct = sorted(set(key_of_group) - {""})
    if not distinct:
        raise NormalizationError("Rule aggregation left no tag: every tag is punctuation only.")
    label_of_key = {key: i for i, key in enumerate(distinct)}
    labels = np.array([label_of_key.get(key, -1) for key in key_of_group], dtype=np.int64)
    merged, examples = level.merge(labels, occ)
    # One raw spelling per key is enough to find the key's final group later.
    keys = {key: name for key, name in zip(key_of_group, level.names) if key}
    return merged, examples, keys


def _semantic_step(
    level: Level, occ: Occurrences, config: NormalizerConfig
) -> tuple[Level, list[dict[str, Any]], str | None]:
    if not config.semantic_aggregation:
        return level, [], None
    from instag_hf.normalization.embeddings import (
        EmbeddingModel,  # torch and transformers: only when used
    )

    model = EmbeddingModel.from_name(config.embedding_model)
    model_id = model.model_id
    try:
        # Once per group, on its readable name (a stem such as "mathemat" embeds poorly).
        vectors = model.encode([clean_text(name) for name in level.names], config.embedding_batch_size)
    finally:
        del model  # never kept: the fitted normalizer holds no model
    labels = cluster(vectors, config.semantic_eps, config.semantic_min_samples)
    merged, examples = level.merge(labels, occ)
    return merged, examples, model_id


def _association_step(
    level: Level, occ: Occurrences, config: NormalizerConfig
) -> tuple[Level, list[dict[str, Any]], int]:
    if not config.association_aggregation:
        return level, [], 0
    queries, items = unique_group_pairs(occ, level.group_of_tag, len(level.names))
    rules = mine_rules(
        queries, items, len(level.names), config.association_min_support, config.association_min_confidence
    )
    targets = merge_targets(rules, level.counts, level.names)
    merged, examples = level.merge(targets, occ, representatives=targets)
    return merged, examples, len(rules)


def _lap(timings: dict[str, float], step: str, start: float) -> float:
    now = time.perf_counter()
    timings[step] = now - start
    return now
