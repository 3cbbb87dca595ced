"""TagNormalizer: the paper's four normalization steps as a fitted ``Dataset.map`` callable.

    normalizer = TagNormalizer().fit(ds)            # learns raw tag -> canonical tag
    ds = ds.map(normalizer, batched=True)           # + instag_tags
    normalizer.save("normalizer.json")              # re-apply later: TagNormalizer.load(...)

Steps, in the order docs/method.md lists them (each can be switched off and tuned, see
:class:`~instag_hf.normalization.config.NormalizerConfig`):

1. Frequency filter: a raw tag (stripped spelling) found in fewer than ``min_frequency``
   queries is dropped. Counting happens *before* rule aggregation, as the paper orders it,
   so "Python" and "python" are counted apart. A query is one user turn of a row; a tag
   repeated within a query counts once.
2. Rule aggregation: tags whose keys (lowercase, special characters to spaces, Porter
   stems) are equal are one tag. Tags with no letter or digit have an empty key and are
   dropped.
3. Semantic aggregation: each group's name, lowercased and cleaned, is embedded once;
   DBSCAN at cosine distance ``semantic_eps`` clusters them; a cluster is named after its
   member found in the most queries (ties by name).
4. Association aggregation: rules ``A -> B`` between single tags over per-query tag sets
   (the pairs FP-Growth finds; support an absolute query count, confidence compared
   exactly). A rule means A almost never appears without B, so A merges into B; of several
   consequents the one in most queries wins (ties: confidence, then name); chains are
   followed and a cycle collapses into its member in most queries (ties: name). Details
   in :mod:`instag_hf.normalization.steps.association`.

The canonical name of a group is always a spelling someone wrote (the most frequent one,
ties by name), never a stem. At apply time a tag seen at fit time maps as learned (to
nothing if a step dropped it); an unseen tag is looked up by its rule key, and if that is
unknown too it is dropped (``unknown="keep"`` keeps it as written instead).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from os import PathLike
from typing import Any

import numpy as np
import pyarrow as pa

from instag_hf._version import __version__
from instag_hf.columns import RAW_TAGS_COLUMN, TAGS_COLUMN, missing_column
from instag_hf.datasets_internals import batch_table
from instag_hf.errors import (
    ConfigurationError,
    MissingColumnError,
    NormalizationError,
    NotFittedError,
)
from instag_hf.normalization.applying import TAGS_TYPE, SpellingTable, normalized_column
from instag_hf.normalization.artifact import content_hash, read_artifact, write_artifact
from instag_hf.normalization.config import NormalizerConfig
from instag_hf.normalization.fitting import fit_vocabulary
from instag_hf.normalization.occurrences import check_column_type, field_type_error, read_occurrences
from instag_hf.normalization.report import NormalizationReport
from instag_hf.normalization.steps.rule import rule_key

logger = logging.getLogger(__name__)

# What the state, the artifact and the content hash are made of.
_CONTENT_KEYS = ("parameters", "embedding_model", "mapping", "dropped", "keys")


class TagNormalizer:
    """Learns a raw -> canonical tag mapping from a tagged pool and applies it in ``Dataset.map``.

    Args:
        config: A ready :class:`NormalizerConfig`; or pass its fields as keywords.
        **settings: ``NormalizerConfig`` fields, e.g. ``min_frequency=20``,
            ``semantic_aggregation=False``, ``embedding_model="my-org/encoder"``.

    Raises:
        ConfigurationError: A setting is unknown or out of range.

    Example:
        >>> normalizer = TagNormalizer(min_frequency=20).fit(ds)
        >>> ds = ds.map(normalizer, batched=True)
        >>> normalizer.report.after_rule  # the paper's pool: 7157
    """

    def __init__(self, config: NormalizerConfig | None = None, **settings: Any) -> None:
        if config is not None and settings:
            raise ConfigurationError("Pass either a NormalizerConfig or keyword settings, not both.")
        try:
            self.config = config if config is not None else NormalizerConfig.from_dict(settings)
        except TypeError as error:  # a wrong type where a dataclass field was expected
            raise ConfigurationError(f"Invalid TagNormalizer settings: {error}") from error
        self.embedding_model_id: str | None = None
        self.report: NormalizationReport | None = None
        #: Wall-clock seconds per step of the last ``fit`` (not saved, not part of the hash).
        self.timings: dict[str, float] = {}
        self._mapping: dict[str, str] | None = None
        self._dropped: frozenset[str] = frozenset()
        self._keys: dict[str, str] = {}
        self._spellings: SpellingTable | None = None

    # ----------------------------------------------------------------- fitting

    def fit(self, ds: Any) -> TagNormalizer:
        """Learn the mapping from the ``instag_raw_tags`` column of ``ds``.

        Args:
            ds: A ``datasets.Dataset`` or ``datasets.IterableDataset``, read in Arrow batches.

        Returns:
            ``self``, fitted.

        Raises:
            MissingColumnError: ``ds`` has no ``instag_raw_tags`` column (tag it first).
            NormalizationError: ``ds`` is empty, holds no tag, or a step leaves no tag.
            ConfigurationError: The embedding model cannot be found or loaded.
            MissingExtraError: A step switched on needs ``instag_hf[normalize]``.
        """
        self.config.require_extras()  # before reading anything
        clock = time.perf_counter()
        occurrences = read_occurrences(ds, self.config.batch_size)
        read_seconds = time.perf_counter() - clock
        fitted = fit_vocabulary(occurrences, self.config)
        # Assigned only now, so a fit that fails half-way leaves the normalizer as it was.
        self._mapping = fitted.mapping
        self._dropped = frozenset(fitted.dropped)
        self._keys = fitted.keys
        self._spellings = None
        self.embedding_model_id = fitted.embedding_model_id
        self.report = fitted.report
        self.timings = {"read": read_seconds, **fitted.timings}
        return self

    # ----------------------------------------------------------------- applying

    def __call__(self, batch: Any) -> Any:
        """Normalized tags of a batch, for ``ds.map(normalizer, batched=True)`` or Ray Data.

        Args:
            batch: Columns of a batch (datasets' batch, a dict of lists, or a pyarrow
                Table as Ray Data's ``map_batches(..., batch_format="pyarrow")`` gives);
                only ``instag_raw_tags`` is read.

        Returns:
            Per row, the union of its turns' canonical tags, de-duplicated, in order of
            first appearance: for an Arrow-backed batch (``Dataset.map``, Ray's pyarrow
            batches) the whole batch as a pyarrow Table with ``instag_tags`` added or
            replaced, as the Tagger does (so ``map(remove_columns=...)`` has no effect:
            call ``.remove_columns()`` on the result); for a plain dict of lists,
            ``{"instag_tags": [...]}``.

        Raises:
            NotFittedError: Neither ``fit`` nor ``load`` was called.
            MissingColumnError: The batch has no ``instag_raw_tags`` column.
            NormalizationError: The column has another type than the tagger writes (a
                ``tag`` that is not a string, say); the message says which and what it needs.
        """
        self._check_fitted()
        table = batch if isinstance(batch, pa.Table) else batch_table(batch)  # Ray's pyarrow batch, datasets' LazyBatch
        names = table.column_names if table is not None else list(batch)
        if RAW_TAGS_COLUMN not in names:
            raise MissingColumnError(missing_column(RAW_TAGS_COLUMN, names), column=RAW_TAGS_COLUMN)
        if table is not None:
            kind = table.column(RAW_TAGS_COLUMN).type
            if not pa.types.is_null(kind):  # a column of nulls only: rows without tags
                check_column_type(kind)
            # Arrow all the way, and the whole batch back as a table: reading the struct
            # column as Python dicts, and datasets converting a returned column row by row,
            # cost 20x what the look-ups do (benchmarks/bench_scale.py).
            tags = normalized_column(table.column(RAW_TAGS_COLUMN), self._spelling_table())
            if TAGS_COLUMN in table.column_names:  # normalizing again replaces the tags
                table = table.drop_columns([TAGS_COLUMN])
            return table.append_column(pa.field(TAGS_COLUMN, TAGS_TYPE), tags)
        rows: Any = [self._row(row) for row in batch[RAW_TAGS_COLUMN]]
        if rows and not any(rows):
            # `Dataset.map` fixes a column's type from the first batch it writes; from lists
            # that are all empty it infers list<null> and then fails on the first real tag.
            # Empty *string* arrays carry the type (datasets reads NumPy dtypes).
            rows = np.empty(len(rows), dtype=object)
            for i in range(len(rows)):
                rows[i] = np.array([], dtype=str)
        return {TAGS_COLUMN: rows}

    def _spelling_table(self) -> SpellingTable:
        # Built once per process from the fitted state; never pickled or hashed.
        if self._spellings is None:
            self._spellings = SpellingTable(self._mapping or {}, self._dropped, self._lookup)
        return self._spellings

    def normalize_row(self, raw_tags: list[Mapping[str, Any]] | None) -> list[str]:
        """Canonical tags of one row's ``instag_raw_tags`` value.

        Example:
            >>> normalizer.normalize_row([{"turn": 0, "tag": "Python", "explanation": ""}])
            ['python']

        Raises:
            NotFittedError: Neither ``fit`` nor ``load`` was called.
        """
        self._check_fitted()
        return self._row(raw_tags)

    def _row(self, raw_tags: list[Mapping[str, Any]] | None) -> list[str]:
        out: list[str] = []
        seen: set[str] = set()
        for item in raw_tags or ():
            tag = item.get("tag") if item else None
            if tag is not None and not isinstance(tag, str):
                raise field_type_error("tag", type(tag).__name__)
            canonical = self._lookup(tag) if tag else None
            if canonical is not None and canonical not in seen:
                seen.add(canonical)
                out.append(canonical)
        return out

    def canonical(self, tag: str) -> str | None:
        """The canonical form of one raw tag, or ``None`` when it is dropped.

        Example:
            >>> normalizer.canonical("  Mathematical reasoning.")
            'math reasoning'

        Raises:
            NotFittedError: Neither ``fit`` nor ``load`` was called.
        """
        self._check_fitted()
        return self._lookup(tag)

    def _lookup(self, tag: str) -> str | None:
        tag = tag.strip()
        found = self._mapping.get(tag)  # type: ignore[union-attr]
        if found is not None or tag in self._dropped:
            return found
        if self.config.rule_aggregation:
            found = self._keys.get(rule_key(tag))
            if found is not None:
                return found
        return tag if self.config.unknown == "keep" and tag else None

    @property
    def mapping(self) -> dict[str, str]:
        """A copy of the learned raw -> canonical mapping (kept tags only)."""
        self._check_fitted()
        return dict(self._mapping)  # type: ignore[arg-type]

    @property
    def vocabulary(self) -> list[str]:
        """The canonical tags, sorted."""
        return sorted(set(self.mapping.values()))

    def _check_fitted(self) -> None:
        if self._mapping is None:
            raise NotFittedError(
                "This TagNormalizer is not fitted: call normalizer.fit(ds) on the tagged pool, "
                "or TagNormalizer.load(path) a saved one."
            )

    # ----------------------------------------------------------------- state

    def _content(self) -> dict[str, Any]:
        self._check_fitted()
        return {
            "parameters": self.config.to_dict(),
            "embedding_model": self.embedding_model_id,
            "mapping": self._mapping,
            "dropped": sorted(self._dropped),
            "keys": self._keys,
        }

    def __getstate__(self) -> dict[str, Any]:
        # Config + mapping only, in a fixed order: `datasets` hashes this to fingerprint the
        # map, so no model, no timings and no set (whose order varies per process).
        if self._mapping is None:
            return {"parameters": self.config.to_dict()}
        state = self._content()
        state["report"] = self.report.to_dict() if self.report else None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(NormalizerConfig.from_dict(state["parameters"]))  # type: ignore[misc]
        if "mapping" in state:
            self.embedding_model_id = state["embedding_model"]
            self._mapping = dict(state["mapping"])
            self._dropped = frozenset(state["dropped"])
            self._keys = dict(state["keys"])
            self.report = NormalizationReport.from_dict(state["report"]) if state.get("report") else None

    @property
    def content_hash(self) -> str:
        """sha256 of the canonical JSON of what decides the output.

        That is the parameters, the embedding model id and the mapping (with the dropped
        tags and the rule keys used for unseen tags); not the report or library version.

        Raises:
            NotFittedError: Neither ``fit`` nor ``load`` was called.
        """
        return content_hash(self._content())

    def save(self, path: str | PathLike[str]) -> None:
        """Write the fitted normalizer as JSON; identical input gives identical bytes.

        Args:
            path: The file to write (``normalizer.json`` by convention).

        Raises:
            NotFittedError: Nothing to save yet.
            NormalizationError: The file cannot be written.

        Example:
            >>> normalizer.save("normalizer.json")
        """
        report = self.report.to_dict() if self.report else None
        write_artifact(path, self._content(), report, __version__)

    @classmethod
    def load(cls, path: str | PathLike[str]) -> TagNormalizer:
        """Read a normalizer written by :meth:`save`; it applies to new shards without refitting.

        Args:
            path: The JSON file.

        Returns:
            A fitted TagNormalizer.

        Raises:
            NormalizationError: The file is missing, not a TagNormalizer, or was altered
                (its content hash does not match).

        Example:
            >>> ds = ds.map(TagNormalizer.load("normalizer.json"), batched=True)
        """
        content, report = read_artifact(path, _CONTENT_KEYS)
        normalizer = cls.__new__(cls)
        try:
            normalizer.__setstate__({**content, "report": report})
        except (TypeError, ValueError) as error:  # hash-consistent but not ours: a foreign writer
            raise NormalizationError(f"{str(path)!r} holds an invalid TagNormalizer: {error}") from error
        return normalizer

    def __repr__(self) -> str:
        if self._mapping is None:
            return f"TagNormalizer(not fitted, {self.config})"
        return f"TagNormalizer({len(self.vocabulary)} tags, content_hash={self.content_hash[:12]})"
