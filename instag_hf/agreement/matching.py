"""Tag agreement between two taggers: exact and semantic matching, micro and macro P/R/F1.

Three kinds of match, each scored on its own (``mode`` picks which):

- ``exact_raw``: two tags match when they are the same string.
- ``exact``: two tags match when their rule keys are equal (the normalizer's rule
  aggregation: lowercase, special characters to spaces, Porter stems), so "Email writing"
  and "email-writing" are one tag. Tags with no letter or digit have no key and are dropped,
  as the normalizer drops them.
- ``semantic``: tags are identified by rule key as in ``exact``; a predicted and a
  reference tag match when their keys are equal or when the cosine similarity of their
  embeddings is strictly above ``threshold`` (the paper: "> 0.8"). Each tag matches at most
  one tag of the other side: the matches of a row are a **maximum bipartite matching**
  (scipy's Hopcroft-Karp), not a greedy one, so the count is the most pairs that can be
  matched at once. Greedy-by-similarity can match fewer (a tag takes its best partner and
  leaves another tag with none); the tests show such a case.

Within a row a tag counts once (duplicates, and for ``exact``/``semantic`` spellings with
one rule key, collapse). ``None``, empty and blank strings are not tags.

Averages: **micro** sums matches and tag counts over rows (precision = matches /
predicted tags, recall = matches / reference tags, F1 = 2 * matches / (predicted +
reference)); **macro** is the mean over rows of each row's precision, recall and F1.

**Empty rows.** A row where both sides have no tag carries nothing to agree on: it is left
out of every figure and counted in ``empty_rows``. A row where exactly one side is empty
scores precision, recall and F1 of 0 (a tagger that says nothing where the other says
something disagrees completely). A figure whose denominator is 0 (no predicted tag at all,
or no scored row) is 0.0.

Embeddings: each distinct rule key that takes part in a non-identical candidate pair is
embedded once, in batches, with the text the normalizer's semantic step embeds (its most
frequent spelling, lowercased and cleaned); a :class:`TagMatcher` keeps them for its later
calls. The similarity of each distinct pair of keys is computed once.

    >>> scores = score([["Email writing", "poetry"]], [["email-writing"]], mode="exact")
    >>> scores["exact"].micro_precision, scores["exact"].micro_recall
    (0.5, 1.0)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from instag_hf.agreement._arrays import Side, candidate_pairs, encode_side, exact_hits, figures, ranked, rule_keys
from instag_hf.errors import ConfigurationError
from instag_hf.extras import require
from instag_hf.normalization.steps.rule import clean_text, rule_key

logger = logging.getLogger(__name__)

KINDS = ("exact_raw", "exact", "semantic")
#: ``mode`` -> the kinds it scores.
MODES: dict[str, tuple[str, ...]] = {"all": KINDS, "exact": ("exact_raw", "exact"), "semantic": ("semantic",)}
DEFAULT_THRESHOLD = 0.8
# Candidate pairs whose similarity is computed in one numpy product: 32K pairs of
# 384-float vectors is ~100 MB of temporaries.
_PAIR_CHUNK = 32_768

#: A callable that embeds texts: ``list[str] -> float array (len(texts), dim)``, rows L2-normalised.
Encoder = Callable[[list[str]], np.ndarray]

__all__ = ["DEFAULT_THRESHOLD", "KINDS", "MODES", "AgreementScores", "Encoder", "Matches", "TagMatcher", "score"]


@dataclass(frozen=True)
class AgreementScores:
    """Precision, recall and F1 of one kind of match, micro and macro over rows.

    Attributes:
        kind: ``"exact_raw"``, ``"exact"`` or ``"semantic"``.
        micro_precision, micro_recall, micro_f1: From the counts summed over rows.
        macro_precision, macro_recall, macro_f1: Means of the per-row figures.
        matched: Matched pairs, summed over rows.
        predicted: Distinct predicted tags, summed over rows.
        referenced: Distinct reference tags, summed over rows.
        rows: Rows scored (rows with a tag on at least one side).
        empty_rows: Rows left out because neither side has a tag.
    """

    kind: str
    micro_precision: float
    micro_recall: float
    micro_f1: float
    macro_precision: float
    macro_recall: float
    macro_f1: float
    matched: int
    predicted: int
    referenced: int
    rows: int
    empty_rows: int

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready."""
        return asdict(self)


@dataclass(frozen=True)
class Matches:
    """The outcome of one :meth:`TagMatcher.match` call, for reports beyond the figures.

    Attributes:
        scores: kind -> :class:`AgreementScores`.
        missed: Per kind, ``(tag, rows)``: reference tags that no predicted tag of the same
            row matched, with the number of rows where that happened, most frequent first
            (ties by tag). A tag is named by its most frequent spelling.
        invented: Per kind, ``(tag, rows)``: predicted tags that matched no reference tag
            of the same row, likewise.
    """

    scores: dict[str, AgreementScores]
    missed: dict[str, list[tuple[str, int]]]
    invented: dict[str, list[tuple[str, int]]]


class TagMatcher:
    """Scores tag agreement; keeps the embeddings it computed for its later calls.

    Args:
        mode: ``"all"`` (default), ``"exact"`` (``exact_raw`` and ``exact``) or ``"semantic"``.
        threshold: Cosine similarity a semantic match must exceed, in [-1, 1].
        embedding_model: Hub id or folder of the embedding model; ``None`` reads
            ``INSTAG_EMBEDDING_MODEL`` and falls back to the packaged all-MiniLM-L6-v2.
            Loaded on the first semantic call that needs a vector.
        encoder: Instead of a model, any callable ``list[str] -> array`` of L2-normalised
            rows (an embedding service, precomputed vectors).

    Raises:
        ConfigurationError: An unknown mode or a threshold outside [-1, 1].

    Example:
        >>> matcher = TagMatcher(mode="semantic")
        >>> matcher.match([["code generation"]], [["generating code"]]).scores["semantic"].micro_f1
        1.0
    """

    def __init__(
        self,
        mode: str = "all",
        threshold: float = DEFAULT_THRESHOLD,
        embedding_model: str | None = None,
        encoder: Encoder | None = None,
    ) -> None:
        if mode not in MODES:
            raise ConfigurationError(f"Unknown mode {mode!r}: use one of {', '.join(map(repr, MODES))}.")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not -1.0 <= threshold <= 1.0:
            raise ConfigurationError(f"threshold must be a cosine similarity in [-1, 1], got {threshold!r}.")
        # Built here, so a missing extra is one line before any row is read.
        require("normalize", "scipy", "nltk", step="compare (maximum matching, rule keys)")
        if "semantic" in MODES[mode] and encoder is None:
            require("normalize", "transformers", "torch", step="compare's semantic matching (embedding model)")
        self.kinds = MODES[mode]
        self.mode = mode
        self.threshold = float(threshold)
        self._model_name = embedding_model
        self._encoder = encoder
        self.embedding_model_id: str | None = None if encoder is None else "custom encoder"
        self._vectors: dict[str, np.ndarray] = {}

    @property
    def semantic(self) -> bool:
        return "semantic" in self.kinds

    def resolved_model_id(self) -> str | None:
        """The id of the embedding model semantic matching uses (``None`` without semantic)."""
        if not self.semantic:
            return None
        if self.embedding_model_id is None:
            from instag_hf.normalization.embeddings import resolve_model

            self.embedding_model_id = resolve_model(self._model_name)[0]
        return self.embedding_model_id

    def similarity(self, a: str, b: str) -> float:
        """The similarity semantic matching gives two tags: 1.0 for equal rule keys, else cosine.

        Raises:
            ConfigurationError: A tag has no letter or digit, or the model cannot be loaded.

        Example:
            >>> round(TagMatcher().similarity("math", "mathematics"), 2)
            0.91
        """
        if not rule_key(a) or not rule_key(b):
            raise ConfigurationError(f"{a!r} or {b!r} has no letter or digit: it is not a tag.")
        if rule_key(a) == rule_key(b):
            return 1.0
        return float(self._similarities(np.array([0]), np.array([1]), [a, b])[0])

    def match(
        self, predictions: Sequence[Sequence[str | None] | None], references: Sequence[Sequence[str | None] | None]
    ) -> Matches:
        """Match ``predictions`` against ``references`` row by row.

        Args:
            predictions: Per row, the tags of the tagger under test (``None`` = no tag).
            references: Per row, the reference tags; as many rows as ``predictions``.

        Returns:
            The :class:`Matches`: scores per kind, and the missed and invented tags.

        Raises:
            ConfigurationError: The two sides have different lengths, or a tag is not a string.
            ConfigurationError: The embedding model cannot be loaded (semantic only).
        """
        if len(predictions) != len(references):
            raise ConfigurationError(
                f"predictions has {len(predictions)} rows and references {len(references)}: give one tag "
                "list per row on each side, in the same row order."
            )
        n_rows = len(predictions)
        spellings: dict[str, int] = {}
        pred = encode_side(predictions, "predictions", spellings)
        ref = encode_side(references, "references", spellings)
        texts = list(spellings)
        counts = np.bincount(np.concatenate([pred.ids, ref.ids]), minlength=len(texts))
        scores: dict[str, AgreementScores] = {}
        missed: dict[str, list[tuple[str, int]]] = {}
        invented: dict[str, list[tuple[str, int]]] = {}
        names = texts
        key_side: tuple[Side, Side] | None = None
        for kind in self.kinds:
            if kind == "exact_raw":
                sides, names = (pred, ref), texts
            else:
                if key_side is None:
                    key_of_text, key_names = rule_keys(texts, counts)
                    key_side = (pred.mapped(key_of_text), ref.mapped(key_of_text))
                sides, names = key_side, key_names
            p, r = sides
            if kind == "semantic":
                pred_hit, ref_hit = self._semantic(p, r, names)
            else:
                pred_hit, ref_hit = exact_hits(p, r)
            scores[kind] = AgreementScores(kind=kind, **figures(p, r, pred_hit, n_rows))
            missed[kind] = ranked(r.ids[~ref_hit], names)
            invented[kind] = ranked(p.ids[~pred_hit], names)
        return Matches(scores, missed, invented)

    def _semantic(self, p: Side, r: Side, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        from scipy.sparse import csr_matrix
        from scipy.sparse.csgraph import maximum_bipartite_matching

        pair_p, pair_r = candidate_pairs(p, r)
        same = p.ids[pair_p] == r.ids[pair_r]
        edge = same.copy()
        other = np.flatnonzero(~same)
        if other.size:
            a, b = p.ids[pair_p[other]], r.ids[pair_r[other]]
            # Compared in float64: a float32 comparison would round the threshold itself.
            edge[other] = self._similarities(a, b, names).astype(np.float64) > self.threshold
        pair_p, pair_r = pair_p[edge], pair_r[edge]
        pred_hit = np.zeros(len(p.ids), dtype=bool)
        ref_hit = np.zeros(len(r.ids), dtype=bool)
        if pair_p.size == 0:
            return pred_hit, ref_hit
        # Rows never share a tag element, so one matrix over every row is block-diagonal and
        # its maximum matching is the union of each row's maximum matching: one scipy call.
        graph = csr_matrix((np.ones(pair_p.size, dtype=np.int8), (pair_p, pair_r)), shape=(len(p.ids), len(r.ids)))
        partner = maximum_bipartite_matching(graph, perm_type="column")
        pred_hit = partner >= 0
        ref_hit[partner[pred_hit]] = True
        return pred_hit, ref_hit

    def _similarities(self, a: np.ndarray, b: np.ndarray, names: list[str]) -> np.ndarray:
        width = len(names)
        codes, inverse = np.unique(a.astype(np.int64) * width + b, return_inverse=True)
        first, second = codes // width, codes % width
        needed = np.unique(np.concatenate([first, second]))
        vectors = self._embed([clean_text(names[i]) for i in needed])
        row_of = np.full(width, -1, dtype=np.int64)
        row_of[needed] = np.arange(len(needed))
        sims = np.empty(len(codes), dtype=np.float32)
        for start in range(0, len(codes), _PAIR_CHUNK):
            stop = start + _PAIR_CHUNK
            left = vectors[row_of[first[start:stop]]]
            right = vectors[row_of[second[start:stop]]]
            sims[start:stop] = np.einsum("ij,ij->i", left, right)
        return sims[inverse.reshape(-1)]

    def _embed(self, texts: list[str]) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self._vectors))
        if missing:
            vectors = np.asarray(self._encode(missing), dtype=np.float32)
            if vectors.shape[0] != len(missing):
                raise ConfigurationError(
                    f"The encoder returned {vectors.shape[0]} vectors for {len(missing)} texts: it must "
                    "return one row per text."
                )
            self._vectors.update(zip(missing, vectors))
            logger.info("Embedded %d distinct tags for semantic matching", len(missing))
        return np.stack([self._vectors[t] for t in texts]) if texts else np.zeros((0, 1), dtype=np.float32)

    def _encode(self, texts: list[str]) -> np.ndarray:
        if self._encoder is None:
            model = _load_model(self._model_name)
            self.embedding_model_id = model.model_id
            self._encoder = model.encode
        return self._encoder(texts)


def score(
    predictions: Sequence[Sequence[str | None] | None],
    references: Sequence[Sequence[str | None] | None],
    *,
    mode: str = "all",
    threshold: float = DEFAULT_THRESHOLD,
    embedding_model: str | None = None,
    encoder: Encoder | None = None,
) -> dict[str, AgreementScores]:
    """Agreement of ``predictions`` with ``references`` (see the module docstring for the rules).

    Args:
        predictions: Per row, the tags of the tagger under test.
        references: Per row, the reference tags, in the same row order.
        mode, threshold, embedding_model, encoder: As :class:`TagMatcher`.

    Returns:
        kind -> :class:`AgreementScores`, for the kinds ``mode`` selects.

    Raises:
        ConfigurationError: Mismatched lengths, a non-string tag, a bad mode or threshold,
            or an embedding model that cannot be loaded.

    Example:
        >>> score([["a", "b"]], [["a"]], mode="exact")["exact_raw"].micro_f1
        0.6666666666666666
    """
    matcher = TagMatcher(mode, threshold, embedding_model, encoder)
    return matcher.match(predictions, references).scores


# ----------------------------------------------------------------------------- helpers


def _load_model(name: str | None) -> Any:
    from instag_hf.normalization.embeddings import EmbeddingModel

    key = name or ""
    if key not in _MODELS:
        _MODELS.clear()  # one model at a time: an encoder is ~100 MB
        _MODELS[key] = EmbeddingModel.from_name(name)
    return _MODELS[key]


_MODELS: dict[str, Any] = {}
