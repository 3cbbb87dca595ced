"""Where a subset made by :func:`instag_hf.sample` came from, readable by the card builder.

Also which model tagged the rows: :func:`record_tagging` (called by
:func:`instag_hf.pipeline.tag_dataset`) writes one more record into ``info.description``, so
the card names the model that produced the tags, not whatever answers at the URL when the
card is built.

Two records are kept, on purpose:

- an in-process registry keyed by the subset's fingerprint. ``Dataset.select`` is given a
  fingerprint derived from the pool's fingerprint, the request and the chosen indices, so
  the key is deterministic and distinct requests never overwrite each other's record;
- a human-readable paragraph plus one JSON line in ``subset.info.description``.
  ``DatasetInfo`` is copied by every ``datasets`` transform and written by
  ``save_to_disk``, so this record survives a later ``map``/``select``/reload in another
  process, where the registry cannot help. It then describes the selection the rows came
  from, not what was done to them afterwards.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from datasets import Dataset, IterableDataset

from instag_hf.datasets_internals import fingerprint

logger = logging.getLogger(__name__)

#: Prefix of the JSON line in ``info.description``.
MARKER = "instag_hf.selection: "
_HEADLINE = "Selected by instag_hf.sample"

_REGISTRY: dict[str, SelectionInfo] = {}

#: Prefix of the JSON line recording which server, model and prompt tagged the rows.
TAGGER_MARKER = "instag_hf.tagger: "
_TAGGER_HEADLINE = "Tagged by instag_hf"
#: What a tagging record holds: which server, model, prompt and answer form tagged the rows.
TAGGER_KEYS = ("kind", "model", "model_sha", "template", "template_sha256", "answer")


@dataclass(frozen=True)
class SelectionInfo:
    """How a subset was selected, and what the selection achieved.

    Attributes:
        strategy: ``"instag"``, ``"diversity"``, ``"complexity"`` or ``"random"``.
        n_requested: rows asked for.
        n_selected: rows returned (smaller only with a warning saying why).
        seed: seed of the tie-break shuffle or of ``"random"`` (for ``"random"`` without a
            seed, the seed that was drawn, so the subset can be rebuilt).
        tag_column: column the tags were read from.
        target_coverage: requested share of the pool's tags, or ``None``.
        target_mean_tags: requested mean tags per row, or ``None``.
        pool_rows: rows in the pool.
        pool_tagged_rows: pool rows with at least one tag.
        pool_tags: distinct tags in the pool (the vocabulary coverage is measured against).
        pool_mean_tags: mean tags per row in the pool.
        unique_tags: distinct tags in the subset.
        coverage: ``unique_tags / pool_tags`` (0.0 for a pool without tags).
        mean_tags: mean tags per row in the subset (0.0 when empty).
        passes: covering passes run (Algorithm 1 passes), ``None`` for strategies without.
        warnings: messages of the warnings raised while selecting.
        pool_fingerprint: fingerprint of the pool dataset.
    """

    strategy: str
    n_requested: int
    n_selected: int
    seed: int | None
    tag_column: str
    target_coverage: float | None
    target_mean_tags: float | None
    pool_rows: int
    pool_tagged_rows: int
    pool_tags: int
    pool_mean_tags: float
    unique_tags: int
    coverage: float
    mean_tags: float
    passes: int | None
    warnings: tuple[str, ...] = field(default_factory=tuple)
    pool_fingerprint: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict, keys in field order.

        Example:
            >>> info.to_dict()["strategy"]  # doctest: +SKIP
            'instag'
        """
        data = asdict(self)
        data["warnings"] = list(self.warnings)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SelectionInfo:
        """Rebuild from :meth:`to_dict` output; unknown keys (from newer versions) are ignored."""
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        values["warnings"] = tuple(values.get("warnings", ()))
        return cls(**values)

    def describe(self) -> str:
        """One human-readable paragraph, as written into ``info.description``."""
        text = (
            f"{_HEADLINE} (strategy {self.strategy!r}, seed {self.seed}): {self.n_selected} of "
            f"{self.pool_rows} rows (requested {self.n_requested}) from column {self.tag_column!r}; "
            f"{self.unique_tags} of {self.pool_tags} tags covered ({self.coverage:.1%}), "
            f"{self.mean_tags:.2f} tags per row (pool: {self.pool_mean_tags:.2f})"
        )
        if self.target_coverage is not None or self.target_mean_tags is not None:
            text += f"; targets: coverage {self.target_coverage}, mean tags {self.target_mean_tags}"
        if self.passes is not None:
            text += f"; {self.passes} covering pass{'es' if self.passes != 1 else ''}"
        if self.warnings:
            text += "; warnings: " + " | ".join(self.warnings)
        return text + "."


def record(subset: Dataset, info: SelectionInfo) -> None:
    """Register ``info`` for ``subset`` and write it into ``subset.info.description``."""
    kept = [line for line in (subset.info.description or "").splitlines() if not line.startswith((MARKER, _HEADLINE))]
    base = "\n".join(kept).strip()
    block = info.describe() + "\n" + MARKER + json.dumps(info.to_dict())
    subset.info.description = f"{base}\n\n{block}" if base else block
    key = fingerprint(subset)
    if key is not None:  # a Dataset always has one
        _REGISTRY[key] = info
    logger.debug("recorded selection %s for fingerprint %s", info.strategy, key)


def selection_info(ds: Dataset | IterableDataset) -> SelectionInfo | None:
    """How ``ds`` was selected by :func:`instag_hf.sample`, or ``None`` if it was not.

    Looks the dataset's fingerprint up in this process's registry first, then falls back
    to the record in ``ds.info.description`` (which survives ``save_to_disk`` and the
    transforms that copy ``info``; it then describes the selection the rows came from).

    Args:
        ds: a dataset, typically returned by :func:`instag_hf.sample`.

    Returns:
        The :class:`SelectionInfo`, or ``None``.

    Example:
        >>> subset = instag_hf.sample(ds, n=2)  # doctest: +SKIP
        >>> instag_hf.selection_info(subset).strategy  # doctest: +SKIP
        'instag'
    """
    key = fingerprint(ds)
    if key in _REGISTRY:
        return _REGISTRY[key]
    description = ds.info.description if ds.info is not None else ""
    for line in reversed((description or "").splitlines()):
        if line.startswith(MARKER):
            try:
                return SelectionInfo.from_dict(json.loads(line[len(MARKER) :]))
            except (ValueError, TypeError) as err:
                # A hand-edited description should not make card building fail.
                logger.warning("ignoring an unreadable selection record in info.description: %s", err)
                return None
    return None


def record_tagging(ds: Dataset, tagger: dict[str, Any]) -> None:
    """Write which server, model and prompt tagged ``ds`` into ``ds.info.description``.

    Args:
        ds: The dataset a tagging map just returned.
        tagger: ``{"kind", "model", "model_sha", "template", "template_sha256", "answer"}``, as
            :meth:`instag_hf.Tagger.provenance` gives it.
    """
    values = {key: tagger.get(key) for key in TAGGER_KEYS}
    kept = [line for line in (ds.info.description or "").splitlines()
            if not line.startswith((TAGGER_MARKER, _TAGGER_HEADLINE))]  # fmt: skip
    base = "\n".join(kept).strip()
    block = (f"{_TAGGER_HEADLINE} with {values['model']} ({values['kind']} server), prompt template "
             f"{values['template']}, answer form {values['answer'] or 'paper'}.\n{TAGGER_MARKER}{json.dumps(values)}")  # fmt: skip
    ds.info.description = f"{base}\n\n{block}" if base else block


def tagging_record(ds: Dataset | IterableDataset) -> dict[str, Any] | None:
    """The record :func:`record_tagging` left in ``ds.info.description``, or ``None``.

    It survives ``save_to_disk`` and every transform that copies ``info`` (normalizing,
    sampling), so a subset still says which model tagged its rows.
    """
    description = ds.info.description if ds.info is not None else ""
    for line in reversed((description or "").splitlines()):
        if line.startswith(TAGGER_MARKER):
            try:
                data = json.loads(line[len(TAGGER_MARKER) :])
            except ValueError as err:
                logger.warning("ignoring an unreadable tagger record in info.description: %s", err)
                return None
            return {key: data.get(key) for key in TAGGER_KEYS} if isinstance(data, dict) else None
    return None
