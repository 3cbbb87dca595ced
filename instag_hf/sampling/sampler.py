"""Complexity-first diverse sampling (InsTag, Algorithm 1), its baselines and controls.

    subset = instag_hf.sample(ds, n=6000)                          # the paper's sampler
    subset = instag_hf.sample(ds, n=6000, target_mean_tags=8.0)    # 100% coverage, mean 8
    subset = instag_hf.sample(ds, n=6000, target_coverage=0.6, target_mean_tags=5.0)
    instag_hf.selection_info(subset).to_dict()                     # provenance for the card

Tags are read once from Arrow batches into integer arrays (``instag_hf.analysis.tagsets``); the
selection itself is numpy (``instag_hf.sampling.passes``); the result is ``ds.select(indices)``.
"""

from __future__ import annotations

import logging
import math
import operator
import warnings
from dataclasses import dataclass, replace

import numpy as np
from datasets import Dataset, IterableDataset
from datasets.fingerprint import Hasher

from instag_hf.analysis.tagsets import TagSets, read_tag_sets, require_column
from instag_hf.datasets_internals import fingerprint
from instag_hf.errors import ConfigurationError, SamplingError
from instag_hf.sampling.passes import (
    base_order,
    covering_passes,
    frequency_core_vocabulary,
    gather,
    rows_where,
    sort_by,
    steer_to_mean,
)
from instag_hf.sampling.provenance import SelectionInfo, record, selection_info

logger = logging.getLogger(__name__)

STRATEGIES = ("instag", "diversity", "complexity", "random")

#: A mean within this many tags per row of the target (or within rounding, 0.5 / n) is met.
MEAN_TOLERANCE = 0.05
#: A coverage above the target by at most this share of the vocabulary (or one tag) is met.
COVERAGE_TOLERANCE = 0.01

__all__ = ["STRATEGIES", "SelectionInfo", "sample", "selection_info"]


@dataclass(frozen=True)
class SamplingRequest:
    """A validated sampling request (rejected when built, before any data is read)."""

    n: int
    strategy: str = "instag"
    seed: int | None = None
    tag_column: str = "instag_tags"
    target_coverage: float | None = None
    target_mean_tags: float | None = None

    def __post_init__(self) -> None:
        try:
            n = operator.index(self.n)
        except TypeError:
            raise ConfigurationError(f"n must be an integer, got {self.n!r}.") from None
        if isinstance(self.n, bool) or n < 0:
            raise ConfigurationError(f"n must be a non-negative integer, got {self.n!r}.")
        object.__setattr__(self, "n", n)
        if self.strategy not in STRATEGIES:
            raise ConfigurationError(f"Unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}.")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0):
            raise ConfigurationError(f"seed must be a non-negative integer or None, got {self.seed!r}.")
        if not isinstance(self.tag_column, str) or not self.tag_column:
            raise ConfigurationError(f"tag_column must be a column name, got {self.tag_column!r}.")
        if self.target_coverage is not None and not (
            _is_number(self.target_coverage) and 0.0 < self.target_coverage <= 1.0
        ):
            raise ConfigurationError(
                f"target_coverage is a share of the pool's tags in (0, 1], got {self.target_coverage!r}."
            )
        if self.target_mean_tags is not None and not (_is_number(self.target_mean_tags) and self.target_mean_tags > 0):
            raise ConfigurationError(f"target_mean_tags must be a positive number, got {self.target_mean_tags!r}.")
        if self.controlled and self.strategy != "instag":
            raise ConfigurationError(
                f"target_coverage/target_mean_tags control the 'instag' strategy; drop them or use "
                f"strategy='instag' (got strategy={self.strategy!r})."
            )

    @property
    def controlled(self) -> bool:
        return self.target_coverage is not None or self.target_mean_tags is not None


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def sample(
    ds: Dataset,
    n: int,
    strategy: str = "instag",
    seed: int | None = None,
    tag_column: str = "instag_tags",
    *,
    target_coverage: float | None = None,
    target_mean_tags: float | None = None,
) -> Dataset:
    """Select ``n`` rows of ``ds`` by their tags and return them as ``ds.select(indices)``.

    Strategies:

    - ``"instag"`` (default): the paper's Algorithm 1. Rows are sorted by tag count,
      most first (complexity first); then passes run over the rows not yet selected, each
      pass starting with no tag covered, taking a row iff it has a tag not covered yet in
      this pass (diversity), until ``n`` rows are selected. When a pass would add nothing
      (every tagged row is selected) it stops with a warning and returns what it has.
    - ``"diversity"``: the same passes in original (or, with ``seed``, shuffled) row order:
      coverage first, complexity ignored.
    - ``"complexity"``: the ``n`` rows with most tags.
    - ``"random"``: ``n`` rows uniformly at random, with or without tags.

    Ties (equal tag counts, and the row order of ``"diversity"``) keep the original row
    order when ``seed`` is ``None``, and follow a shuffle seeded by ``seed`` otherwise.
    A row's tags are a set (repeats count once, nulls are skipped); rows without tags are
    only ever picked by ``"random"``.

    The passes are not run row by row: within one pass a row is taken iff it is the first
    row of the pass order (among rows not yet selected) carrying some tag, so a pass is
    one vectorised "first occurrence per tag" over integer tag ids read from Arrow
    batches (identical selections; ``benchmarks/bench_sampling.py`` compares the two).

    Controls (strategy ``"instag"`` only; the decoupled analysis of the paper, 4.3):

    - ``target_coverage=c``: cover a share ``c`` of the pool's tags. The tags are ranked
      by how many rows carry them (ties by name) and the smallest top-``k`` of that
      ranking is chosen whose own rows (rows with every tag inside it) cover at least
      ``round(c * tags)`` tags; only those rows are candidates, so no tag outside the
      chosen vocabulary can enter. A random share of the tags is not used because few rows
      lie wholly inside one (0.45 ** 5 = 2% of 5-tag rows at c = 0.45).
    - ``target_mean_tags=m``: a covering core first, one pass over the candidates ordered
      by ``|tags - m|`` (so the rows a tag forces in are as close to ``m`` as possible),
      then the remaining rows are filled from the other candidates by tag count, taking
      counts on both sides of the running target in the proportion that lands the mean on
      ``m`` (see ``_selectors.steer_to_mean``). Without ``target_coverage`` the core covers
      every tag (the paper's fixed 100% coverage).
    - ``target_coverage`` alone runs Algorithm 1 over the candidates.

    A control that cannot be met (too few candidate rows, a core larger than ``n``, a mean
    out of reach) is met as closely as possible, with a warning saying what was achieved.

    Order of the returned rows: selection order, i.e. the order the algorithm took them
    (pass after pass for ``"instag"``/``"diversity"``, most tags first for
    ``"complexity"``, draw order for ``"random"``, core then fill for ``target_mean_tags``).

    Provenance: a :class:`SelectionInfo` is recorded for the subset; read it with
    :func:`selection_info` (it is also written into ``subset.info.description``).

    Args:
        ds: the pool, a ``datasets.Dataset`` with a list-of-strings ``tag_column``.
        n: rows to select (0 gives an empty dataset).
        strategy: one of ``STRATEGIES``.
        seed: seed of the tie-break shuffle, or of ``"random"``.
        tag_column: column holding each row's tags.
        target_coverage: share of the pool's tags to cover, in (0, 1].
        target_mean_tags: mean tags per selected row to aim for.

    Returns:
        A ``datasets.Dataset`` of the selected rows, in selection order.

    Raises:
        ConfigurationError: a bad argument; ``ds`` is an ``IterableDataset`` or a
            ``DatasetDict``; ``tag_column`` is not a list of strings.
        MissingColumnError: ``tag_column`` is missing (the message names the step that adds it).
        SamplingError: ``n`` is larger than the dataset.

    Example:
        >>> ds = Dataset.from_dict({"instag_tags": [["a"], ["a", "b"], ["c"], []]})
        >>> list(instag_hf.sample(ds, n=2)["instag_tags"])
        [['a', 'b'], ['c']]
    """
    request = SamplingRequest(n, strategy, seed, tag_column, target_coverage, target_mean_tags)
    if isinstance(ds, IterableDataset):
        raise ConfigurationError(
            "sample needs a datasets.Dataset, which rows can be selected from by index; load without "
            "streaming=True, or materialise the stream with Dataset.from_generator."
        )
    require_column(ds, tag_column)
    if request.n > len(ds):
        raise SamplingError(
            f"Cannot select {request.n} rows from a dataset of {len(ds)} rows; ask for n <= {len(ds)}.",
            n=request.n,
            rows=len(ds),
        )
    ts = read_tag_sets(ds, tag_column)
    if request.strategy == "random" and request.seed is None:
        # Drawn here and recorded, so that an unseeded random subset can still be rebuilt.
        entropy = np.random.SeedSequence().entropy
        # Built without entropy, a SeedSequence draws a fresh int from the OS: never None or a sequence.
        assert isinstance(entropy, int)
        request = replace(request, seed=int(entropy % 2**63))
    indices, passes, notes = _select(ts, request)
    info = _summarise(ts, request, indices, passes, notes, fingerprint(ds))
    subset = _select_rows(ds, indices, info)
    record(subset, info)
    for note in notes:
        warnings.warn(note, UserWarning, stacklevel=2)
    logger.info("%s", info.describe())
    return subset


def _select(ts: TagSets, request: SamplingRequest) -> tuple[np.ndarray, int | None, list[str]]:
    rng = None if request.seed is None else np.random.default_rng(request.seed)
    n, lengths = request.n, ts.lengths
    tagged = int(np.count_nonzero(lengths))
    if request.strategy == "random":
        # sample() draws and records a seed for "random" before calling here.
        assert rng is not None
        return rng.choice(ts.rows, size=n, replace=False).astype(np.int64), None, []
    order = base_order(ts.rows, rng)
    if request.controlled:
        return _controlled(ts, request, order)
    notes: list[str] = []
    passes: int | None = None
    if request.strategy == "complexity":
        picked = sort_by(rows_where(order, lengths > 0), lengths, descending=True)[:n]
    elif request.strategy == "instag":
        picked, passes = covering_passes(ts, sort_by(order, lengths, descending=True), n)
    else:
        picked, passes = covering_passes(ts, np.arange(ts.rows, dtype=np.int64) if order is None else order, n)
    if picked.size < n:
        notes.append(
            f"Only {picked.size} of the requested {n} rows could be selected: the pool has {tagged} rows "
            f"with tags (rows without tags are never selected by {request.strategy!r})"
            + (f", and pass {passes + 1} would add nothing." if passes is not None else ".")
        )
    return picked, passes, notes


def _controlled(ts: TagSets, request: SamplingRequest, order: np.ndarray | None) -> tuple[np.ndarray, int, list[str]]:
    n, lengths, vocab_size = request.n, ts.lengths, len(ts.vocabulary)
    notes: list[str] = []
    coverage = 1.0 if request.target_coverage is None else float(request.target_coverage)
    if vocab_size == 0:
        if n:
            notes.append(f"No row has tags, so none of the requested {n} rows could be selected.")
        return np.zeros(0, dtype=np.int64), 0, notes
    target_tags = max(1, round(coverage * vocab_size))
    if target_tags >= vocab_size:
        inside = lengths > 0
    else:
        _, inside = frequency_core_vocabulary(ts, target_tags)
    candidates = rows_where(order, inside)
    if candidates.size < n:
        inside_what = (
            "have tags"
            if target_tags >= vocab_size
            else f"have all their tags inside the {target_tags}-tag vocabulary chosen for coverage {coverage:g}"
        )
        notes.append(f"Only {candidates.size} rows {inside_what}; returning those instead of {n}.")
    mean = request.target_mean_tags
    if mean is None:
        picked, passes = covering_passes(ts, sort_by(candidates, lengths, descending=True), n)
    else:
        core, passes = covering_passes(ts, sort_by(candidates, np.abs(lengths - mean)), n, max_passes=1)
        rest = candidates[np.isin(candidates, core, assume_unique=True, invert=True)]
        size = min(n, core.size + rest.size)
        fill = rest[steer_to_mean(lengths[rest], size - core.size, mean * size - lengths[core].sum())]
        picked = np.concatenate([core, fill])
        achieved = float(lengths[picked].mean()) if picked.size else 0.0
        if picked.size and abs(achieved - mean) > max(MEAN_TOLERANCE, 0.5 / picked.size):
            notes.append(
                f"Target mean of {mean:g} tags per row not reachable with these rows: achieved {achieved:.2f} "
                f"(the covering core alone has {core.size} rows averaging "
                f"{lengths[core].mean() if core.size else 0.0:.2f})."
            )
    covered = _unique_tags(ts, picked)
    # Coverage moves in steps of one tag; a tolerance below that would warn on rounding.
    slack = max(1, math.floor(COVERAGE_TOLERANCE * vocab_size))
    if n and covered < target_tags:
        notes.append(
            f"Target coverage of {coverage:.1%} ({target_tags} of {vocab_size} tags) not reached: achieved "
            f"{covered / vocab_size:.1%} ({covered} tags) with {picked.size} rows; covering the chosen "
            "vocabulary needs more rows than that."
        )
    elif n and covered - target_tags > slack:
        notes.append(
            f"Coverage {covered / vocab_size:.1%} ({covered} tags) exceeds the requested {coverage:.1%} "
            f"({target_tags} tags): several tags become coverable together at the chosen vocabulary size."
        )
    return picked, passes, notes


def _unique_tags(ts: TagSets, rows: np.ndarray) -> int:
    tags = gather(ts, rows)
    return int(np.count_nonzero(np.bincount(tags, minlength=len(ts.vocabulary)))) if tags.size else 0


def _summarise(
    ts: TagSets,
    request: SamplingRequest,
    indices: np.ndarray,
    passes: int | None,
    notes: list[str],
    pool_fingerprint: str | None,
) -> SelectionInfo:
    lengths = ts.lengths
    unique = _unique_tags(ts, indices)
    vocab_size = len(ts.vocabulary)
    return SelectionInfo(
        strategy=request.strategy,
        n_requested=request.n,
        n_selected=int(indices.size),
        seed=request.seed,
        tag_column=request.tag_column,
        target_coverage=request.target_coverage,
        target_mean_tags=request.target_mean_tags,
        pool_rows=ts.rows,
        pool_tagged_rows=int(np.count_nonzero(lengths)),
        pool_tags=vocab_size,
        pool_mean_tags=float(lengths.mean()) if ts.rows else 0.0,
        unique_tags=unique,
        coverage=unique / vocab_size if vocab_size else 0.0,
        mean_tags=float(lengths[indices].mean()) if indices.size else 0.0,
        passes=passes,
        warnings=tuple(notes),
        pool_fingerprint=pool_fingerprint,
    )


def _select_rows(ds: Dataset, indices: np.ndarray, info: SelectionInfo) -> Dataset:
    # Deterministic, and distinct for distinct requests even when they pick the same rows,
    # so each subset's provenance record keeps its own key.
    fingerprint = Hasher.hash((info.pool_fingerprint, info.to_dict(), indices.astype(np.int64).tobytes()))
    if len(ds) == 0:
        # Dataset.select returns the very same object for an empty dataset; writing the
        # record into it would rewrite the pool's description.
        return Dataset(ds.data.slice(0, 0), info=ds.info.copy(), split=ds.split, fingerprint=fingerprint)
    return ds.select(indices, new_fingerprint=fingerprint)
