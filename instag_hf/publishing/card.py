"""The dataset card of a curated subset: InsTag statistics, provenance and plots.

    card = instag_hf.build_card(subset, pool=ds, normalizer=normalizer, tagger=tagger,
                                source="org/sharegpt", source_revision="abc123",
                                audit=instag_hf.agreement.audit(ds, Tagger(...)))  # optional
    card.data.tags      # ['instag', ...]          (YAML from DatasetCardData)
    card.plots          # {"plots/top_tags.png": b"...", "plots/tags_per_row.png": b"..."}
    card.save("out/README.md")

The body is the Jinja2 template ``instag_subset.md.jinja`` of the package
``instag_hf.publishing.templates``; the YAML header is ``DatasetCardData.to_yaml()``, never text
assembled here.

Tags are written by an LLM and are untrusted. Every string reaching the body is escaped in
one place, :func:`markdown_text` (the template Environment's ``finalize``), unless a filter
made it safe on purpose (code spans, Python and shell literals, numbers). Tags never enter
the YAML header.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from datasets import Dataset
from huggingface_hub import DatasetCard, DatasetCardData

from instag_hf._version import __version__
from instag_hf.agreement.auditing import Audit
from instag_hf.analysis.stats import PoolLike, TagStats, analyze
from instag_hf.dataset_io import is_hub_id
from instag_hf.errors import CardError, ConfigurationError, EndpointError
from instag_hf.publishing.layout import DATA_DIR, NORMALIZER_FILENAME, data_split
from instag_hf.publishing.markdown import Safe, fmt_count, fmt_dec, fmt_pct, load_template, markdown_text, render
from instag_hf.publishing.reproduction import reproduction
from instag_hf.sampling.provenance import TAGGER_KEYS, tagging_record
from instag_hf.sampling.sampler import SelectionInfo, selection_info

if TYPE_CHECKING:
    from instag_hf.normalization.normalizer import TagNormalizer

logger = logging.getLogger(__name__)

TASK_CATEGORIES = ["text-generation"]
#: Tags come from a model, as the Hub's field for curated, machine-annotated subsets says.
ANNOTATIONS_CREATORS = ["machine-generated"]
CARD_TAGS = ["instag", "instruction-tuning", "sft", "data-selection"]
_SIZE_CATEGORIES = (
    (1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"),
)  # fmt: skip

__all__ = ["InstagCard", "build_card", "data_split", "markdown_text", "size_category"]


class InstagCard(DatasetCard):
    """A ``DatasetCard`` plus the files it links to, so that saving or pushing it is complete.

    Attributes:
        plots: ``{path relative to the card: PNG bytes}``.
        normalizer: The :class:`TagNormalizer` the card describes, or ``None``.
    """

    def __init__(
        self,
        content: str,
        ignore_metadata_errors: bool = False,
        *,
        plots: Mapping[str, bytes] | None = None,
        normalizer: TagNormalizer | None = None,
    ) -> None:
        super().__init__(content, ignore_metadata_errors=ignore_metadata_errors)
        self.plots = dict(plots or {})
        self.normalizer = normalizer


def size_category(rows: int) -> str:
    """The Hub's ``size_categories`` value for a number of rows.

    Example:
        >>> size_category(6000)
        '1K<n<10K'
    """
    for limit, name in _SIZE_CATEGORIES:
        if rows < limit:
            return name
    return "n>1B"


def build_card(
    subset: Dataset,
    pool: PoolLike | None = None,
    normalizer: TagNormalizer | None = None,
    tagger: Any | None = None,
    source: str | None = None,
    *,
    source_revision: str | None = None,
    repo_id: str | None = None,
    pretty_name: str | None = None,
    license: str | None = None,
    tag_column: str | None = None,
    top_k: int = 20,
    plots: bool = True,
    date: dt.date | str | None = None,
    audit: Audit | Mapping[str, Any] | None = None,
    stats: TagStats | None = None,
    template: str | os.PathLike[str] | None = None,
) -> InstagCard:
    """Build the dataset card of ``subset``: statistics against its pool, provenance, plots.

    Args:
        subset: The rows to describe, typically returned by :func:`instag_hf.sample`.
        pool: The dataset the subset was selected from (or its :class:`TagStats`); without
            it, the pool column shows what the selection record knows.
        normalizer: The fitted :class:`TagNormalizer` that wrote the tag column.
        tagger: The :class:`~instag_hf.Tagger` that tagged the pool, or a mapping with
            ``kind``, ``model``, ``model_sha``, ``template``, ``template_sha256`` and
            optionally ``queries``, ``cache_hits``, ``prompt_tokens``, ``generated_tokens``,
            ``unmetered``. A
            mapping is written as given; otherwise the record that tagging left in the rows
            (:func:`instag_hf.pipeline.tag_dataset` writes it) names the model that produced
            the tags, and only without one is the Tagger's server asked what it serves. The
            Tagger's token counts make the card's cost line.
        source: Hub id of the source dataset, or the local file or folder it was read from
            (the reproduction snippet then reads it the way it was read).
        source_revision: The source's revision (commit sha or tag).
        repo_id: Where the subset will be pushed, for the reproduction snippet.
        pretty_name: Display name; defaults to one built from ``source``.
        license: Licence id for the YAML header; defaults to ``subset.info.license`` when
            that is an id (``"apache-2.0"``), not free text.
        tag_column: Column of normalized tags; defaults to the selection's, else
            ``"instag_tags"``.
        top_k: Tags listed in the top-tags table and chart.
        plots: Draw the PNG plots (kept in :attr:`InstagCard.plots`).
        date: Date written in the card (a ``date`` or ISO string); defaults to today (UTC).
        audit: The sampled audit of the pool's tags (:func:`instag_hf.agreement.audit`, or
            its ``to_dict()``): its agreement figures go into the provenance.
        stats: The subset's :class:`TagStats` against ``pool`` when already computed (as
            :func:`instag_hf.pipeline.run_chain` does), so the subset is not read twice;
            computed here otherwise.
        template: A Jinja2 card template file to render instead of the packaged one. Start
            from a copy of ``dataset_cards/instag_subset.md.jinja`` (its README lists the
            names a template can use); keep its YAML header lines first.

    Returns:
        An :class:`InstagCard` (a ``huggingface_hub.DatasetCard``) with ``.plots``.

    Raises:
        CardError: A value cannot be used (unfitted normalizer, bad date, bad tagger or
            audit), or the template cannot be read or rendered, or drops the YAML header.
        MissingColumnError: The tag column is missing.

    Example:
        >>> card = instag_hf.build_card(subset, pool=ds, source="org/data")  # doctest: +SKIP
        >>> card.save("out/README.md")  # doctest: +SKIP
    """
    from instag_hf.publishing.plots import (  # late: matplotlib is slow to import
        TAGS_PER_ROW_PLOT,
        TOP_TAGS_PLOT,
        render_plots,
    )

    card_template = load_template(template)  # before any work: a typo in the path fails at once
    selection = selection_info(subset)
    tagged_by = _tagger_context(tagger, subset)
    column = tag_column or (selection.tag_column if selection else "instag_tags")
    if stats is None or stats.top_k != top_k:
        stats = analyze(subset, tag_column=column, pool=pool, top_k=top_k)
    split = data_split(subset)
    # The Hub accepts licence ids only; a source's free-text licence would fail its YAML check.
    inherited = subset.info.license if re.fullmatch(r"[a-z0-9][a-z0-9.+-]*", subset.info.license or "") else None
    card_data = DatasetCardData(
        pretty_name=pretty_name or (f"{source} (InsTag subset)" if source else "InsTag subset"),
        license=license if license is not None else inherited,
        size_categories=[size_category(stats.rows)],
        task_categories=list(TASK_CATEGORIES),
        annotations_creators=list(ANNOTATIONS_CREATORS),
        source_datasets=[source] if source and is_hub_id(source) else None,
        tags=list(CARD_TAGS),
        configs=[{"config_name": "default", "data_files": [{"split": split, "path": f"{DATA_DIR}/{split}-*"}]}],
    )
    context = {
        "card_data": Safe(card_data.to_yaml()),
        "title": card_data.pretty_name,
        "source": {"id": source, "revision": source_revision} if source else None,
        "tag_column": column,
        "statistics": _statistics(stats, selection),
        "top_tags": _top_tags(stats),
        "histogram": _histogram(stats),
        "plots": {"top_tags": Safe(TOP_TAGS_PLOT), "tags_per_row": Safe(TAGS_PER_ROW_PLOT)} if plots else None,
        "tagger": tagged_by,
        "audit": _audit_context(audit),
        "normalizer": _normalizer_context(normalizer),
        "selection": selection.to_dict() if selection else None,
        "version": __version__,
        "date": Safe(_card_date(date)),
        "repro": reproduction(
            source,
            source_revision,
            split,
            repo_id,
            tagged_by,
            normalizer,
            selection,
            column,
            None if isinstance(tagger, Mapping) else tagger,
        ),
    }
    content = render(card_template, template, context)
    images = render_plots(stats, top_k=top_k) if plots else {}
    logger.info("Built the card of %d rows (%d unique tags)", stats.rows, stats.unique_tags)
    return InstagCard(content, plots=images, normalizer=normalizer)


def _card_date(date: dt.date | str | None) -> str:
    if date is None:
        return dt.datetime.now(dt.timezone.utc).date().isoformat()  # noqa: UP017 (3.10 has no dt.UTC)
    if isinstance(date, dt.date):
        return date.isoformat()[:10]
    try:
        return dt.date.fromisoformat(str(date)).isoformat()
    except ValueError:
        raise CardError(f"date must be a datetime.date or an ISO date like '2024-05-01', got {date!r}.") from None


_STATISTICS = (
    ("Rows", "rows", fmt_count),
    ("Rows without tags", "rows_without_tags", fmt_count),
    ("Unique tags (diversity)", "unique_tags", fmt_count),
    ("Coverage of the pool's tags", "coverage", fmt_pct),
    ("Mean tags per row (complexity)", "mean_tags", fmt_dec),
    ("Median tags per row", "median_tags", fmt_dec),
    ("Most tags on one row", "max_tags", fmt_count),
)


def _statistics(stats: TagStats, selection: SelectionInfo | None) -> list[dict[str, Any]]:
    subset = {name: getattr(stats, name) for _, name, _ in _STATISTICS}
    subset["coverage"] = stats.comparison["pool_coverage"] if stats.comparison else None
    pool: dict[str, Any] = {name: getattr(stats.pool, name) for _, name, _ in _STATISTICS} if stats.pool else {}
    if stats.pool is None and selection is not None:  # the selection record knows the pool's headline figures
        subset["coverage"] = selection.coverage
        pool = {"rows": selection.pool_rows, "rows_without_tags": selection.pool_rows - selection.pool_tagged_rows,
                "unique_tags": selection.pool_tags, "mean_tags": selection.pool_mean_tags}  # fmt: skip
    if pool:
        pool["coverage"] = 1.0
    return [{"label": Safe(label), "pool": fmt(pool.get(name)), "subset": fmt(subset[name])}
            for label, name, fmt in _STATISTICS]  # fmt: skip


def _counts(value: int, rows: int, pool_value: int | None, pool_rows: int | None) -> dict[str, Any]:
    return {"rows": value, "share": value / rows if rows else 0.0, "pool_rows": pool_value,
            "pool_share": pool_value / pool_rows if pool_value is not None and pool_rows else None}  # fmt: skip


def _top_tags(stats: TagStats) -> list[dict[str, Any]]:
    pool = stats.pool
    pool_counts = dict(pool.tag_counts) if pool is not None else {}
    return [
        {"rank": rank, "tag": tag, **_counts(count, stats.rows, pool_counts.get(tag, 0) if pool else None,
                                             pool.rows if pool else None)}
        for rank, (tag, count) in enumerate(stats.top_tags, start=1)
    ]  # fmt: skip


def _histogram(stats: TagStats) -> list[dict[str, Any]]:
    pool = stats.pool
    present = set(stats.tags_per_row) | set(pool.tags_per_row if pool else ())
    return [
        {"tags": k, **_counts(stats.tags_per_row.get(k, 0), stats.rows, pool.tags_per_row.get(k, 0) if pool else None,
                              pool.rows if pool else None)}
        for k in (range(min(present), max(present) + 1) if present else ())
    ]  # fmt: skip


#: A card's tagger context: the provenance record, then what this build cost.
_TAGGER_KEYS = (*TAGGER_KEYS, "queries", "cache_hits", "prompt_tokens", "generated_tokens", "unmetered")


def _tagger_context(tagger: Any | None, subset: Dataset) -> dict[str, Any] | None:
    if isinstance(tagger, Mapping):
        unknown = sorted(set(tagger) - set(_TAGGER_KEYS))
        if unknown:
            raise CardError(f"Unknown tagger keys {unknown}: a tagger mapping may hold {list(_TAGGER_KEYS)}.")
        return {key: tagger.get(key) for key in _TAGGER_KEYS}
    # What tagged the rows, as tagging recorded it: a server asked now may serve another model.
    recorded = tagging_record(subset)
    if recorded is None and tagger is None:
        return None
    context: dict[str, Any] = dict.fromkeys(_TAGGER_KEYS)
    if tagger is not None:
        context.update(template=tagger.template.name, template_sha256=tagger.template.sha256, answer=tagger.answer)
        stats = tagger.stats
        if stats.requests or stats.cache_hits:  # the cost of this build, as the servers counted it
            context.update(
                queries=stats.answered,
                cache_hits=stats.cache_hits,
                prompt_tokens=stats.prompt_tokens,
                generated_tokens=stats.generated_tokens,
                unmetered=stats.unmetered,
            )
    if recorded is not None:
        context.update({key: value for key, value in recorded.items() if key in _TAGGER_KEYS})
        return context
    assert tagger is not None
    try:
        context.update(tagger.provenance())
    except (EndpointError, ConfigurationError) as error:
        # The card is still worth writing; it says what is unknown rather than guessing.
        logger.warning("The tagging endpoint did not say what it serves (%s); the card records it as n/a.", error)
    return context


def _audit_context(audit: Audit | Mapping[str, Any] | None) -> dict[str, Any] | None:
    if audit is None:
        return None
    if isinstance(audit, Mapping):
        try:
            audit = Audit.from_dict(dict(audit))
        except TypeError as error:
            raise CardError(f"The audit mapping is incomplete ({error}): pass instag_hf.agreement.audit(...) "
                            "or its to_dict().") from None  # fmt: skip
    if not isinstance(audit, Audit):
        raise CardError(f"audit must be an instag_hf.agreement.Audit or its to_dict(), got {type(audit).__name__}.")
    return audit.to_dict()


_STEPS = (
    ("Raw tags (distinct spellings)", "raw_tags", None),
    ("After the frequency filter", "after_frequency", "frequency_filter"),
    ("After rule aggregation", "after_rule", "rule_aggregation"),
    ("After semantic aggregation", "after_semantic", "semantic_aggregation"),
    ("After association aggregation", "after_association", "association_aggregation"),
)


def _normalizer_context(normalizer: TagNormalizer | None) -> dict[str, Any] | None:
    if normalizer is None:
        return None
    if normalizer.report is None:
        raise CardError("The normalizer is not fitted: call normalizer.fit(pool) (or TagNormalizer.load) first.")
    config = normalizer.config.to_dict()
    report = normalizer.report
    steps = [
        {"label": Safe(label), "tags": Safe(f"{getattr(report, field):,}" + ("" if switch is None or config[switch]
                                                                              else " (step off)"))}
        for label, field, switch in _STEPS
    ]  # fmt: skip
    return {
        "content_hash": normalizer.content_hash,
        "embedding_model": normalizer.embedding_model_id,
        "filename": NORMALIZER_FILENAME,
        "steps": steps,
        "rows": report.rows,
        "queries": report.queries,
        "rows_with_error": report.rows_with_error,
        "association_rules": report.association_rules,
        "parameters": [(Safe(name), _setting(value)) for name, value in config.items()],
    }


def _setting(value: object) -> object:
    if isinstance(value, bool):
        return Safe("yes" if value else "no")
    if value is None:
        return Safe("default")
    return value  # numbers print as they are; strings are escaped by finalize
