"""Settings of a TagNormalizer, checked when built.

Defaults are the paper's (docs/method.md section 2): alpha = 20, DBSCAN at cosine
distance 0.05 with min_samples 1, FP-Growth at support 40 (queries) and confidence 0.99.

    >>> NormalizerConfig(min_frequency=5, semantic_aggregation=False).min_frequency
    5
    >>> NormalizerConfig(association_min_confidence=1.5)
    Traceback (most recent call last):
    ...
    instag_hf.errors.ConfigurationError: association_min_confidence must be in (0, 1], got 1.5
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from types import MappingProxyType
from typing import Any

from instag_hf.errors import ConfigurationError
from instag_hf.extras import require

UNKNOWN_POLICIES = ("drop", "keep")

#: The ``instag normalize`` / ``instag run`` flag of each setting that has one, in the order
#: ``--help`` lists them. A step's switch has a ``--no-...`` flag that turns the step off (every
#: step is on by default); the other flags take the setting's value. The CLI builds its
#: options from this table and the card's reproduction command line writes these flags.
CLI_FLAGS: Mapping[str, str] = MappingProxyType(
    {
        "min_frequency": "--min-frequency",
        "frequency_filter": "--no-frequency-filter",
        "rule_aggregation": "--no-rule",
        "semantic_aggregation": "--no-semantic",
        "association_aggregation": "--no-association",
        "embedding_model": "--embedding-model",
        "semantic_eps": "--semantic-eps",
        "association_min_support": "--association-min-support",
    }
)


@dataclass(frozen=True)
class NormalizerConfig:
    """What a TagNormalizer does; every step can be switched off and tuned.

    Args:
        frequency_filter: Drop rare tags (step 1).
        min_frequency: Queries a raw tag must occur in to survive step 1 (the paper's alpha).
        rule_aggregation: Merge tags equal after lowercasing, punctuation removal and
            Porter stemming (step 2).
        semantic_aggregation: Merge tags whose embeddings are close (step 3).
        semantic_eps: DBSCAN radius as a cosine distance; 0.05 means similarity >= 0.95.
        semantic_min_samples: DBSCAN ``min_samples``; tags DBSCAN calls noise stay alone.
        association_aggregation: Merge tags that almost never appear without another (step 4).
        association_min_support: Minimum queries holding both tags of a rule (absolute count).
        association_min_confidence: Minimum confidence of a rule.
        embedding_model: Hub id or local folder; ``None`` means ``INSTAG_EMBEDDING_MODEL``,
            else the packaged sentence-transformers/all-MiniLM-L6-v2.
        embedding_batch_size: Tags per forward pass of the embedding model.
        unknown: What happens at apply time to a tag unseen at fit time whose rule key is
            unknown too: ``"drop"`` it, or ``"keep"`` it as written (stripped).
        batch_size: Rows per Arrow batch read during ``fit``.

    Raises:
        ConfigurationError: A value is out of its allowed range; the message gives the range.
    """

    frequency_filter: bool = True
    min_frequency: int = 20
    rule_aggregation: bool = True
    semantic_aggregation: bool = True
    semantic_eps: float = 0.05
    semantic_min_samples: int = 1
    association_aggregation: bool = True
    association_min_support: int = 40
    association_min_confidence: float = 0.99
    embedding_model: str | None = None
    embedding_batch_size: int = 256
    unknown: str = "drop"
    batch_size: int = 10_000

    def __post_init__(self) -> None:
        for name in (
            "frequency_filter",
            "rule_aggregation",
            "semantic_aggregation",
            "association_aggregation",
        ):
            if not isinstance(getattr(self, name), bool):
                raise ConfigurationError(f"{name} must be True or False, got {getattr(self, name)!r}")
        for name in (
            "min_frequency",
            "semantic_min_samples",
            "association_min_support",
            "embedding_batch_size",
            "batch_size",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{name} must be an integer >= 1, got {value!r}")
        _check_fraction("semantic_eps", self.semantic_eps, "a cosine distance in (0, 1]")
        _check_fraction("association_min_confidence", self.association_min_confidence, "in (0, 1]")
        # 1 and 1.0 are one setting: keep one spelling so artifacts and hashes agree.
        object.__setattr__(self, "semantic_eps", float(self.semantic_eps))
        object.__setattr__(self, "association_min_confidence", float(self.association_min_confidence))
        if self.embedding_model is not None and (
            not isinstance(self.embedding_model, str) or not self.embedding_model.strip()
        ):
            raise ConfigurationError(
                f"embedding_model must be a Hub model id or a local folder, got {self.embedding_model!r}"
            )
        if self.unknown not in UNKNOWN_POLICIES:
            raise ConfigurationError(f"unknown must be one of {UNKNOWN_POLICIES}, got {self.unknown!r}")

    def require_extras(self) -> None:
        """Check that the packages of every step switched on are installed, before fitting.

        Raises:
            MissingExtraError: One is not; the message names ``instag_hf[normalize]``.
        """
        if self.rule_aggregation:
            require("normalize", "nltk", step="Rule aggregation (Porter stemming)")
        if self.semantic_aggregation:
            require("normalize", "transformers", "torch", "sklearn", step="Semantic aggregation (embeddings, DBSCAN)")
        if self.association_aggregation:
            require("normalize", "scipy", step="Association aggregation")

    def to_dict(self) -> dict[str, Any]:
        """Every setting by name (JSON-ready)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> NormalizerConfig:
        """Build from :meth:`to_dict` output.

        Raises:
            ConfigurationError: A name is not a setting, or a value is out of range.
        """
        known = {f.name for f in fields(cls)}
        unexpected = sorted(set(values) - known)
        if unexpected:
            raise ConfigurationError(f"Unknown TagNormalizer settings {unexpected}; known: {sorted(known)}")
        return cls(**values)


def _check_fraction(name: str, value: Any, allowed: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ConfigurationError(f"{name} must be {allowed}, got {value!r}")
