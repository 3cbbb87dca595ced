"""What a TagNormalizer fit did: vocabulary size after each step, rules, rows, example merges.

Counts follow the paper's table (12K+ raw -> 8,541 after the frequency filter -> 7,157
after rule aggregation -> 6,587 after semantic aggregation); a step that is switched off
leaves the count unchanged. The report holds no timings, so identical input gives an
identical report (and an identical saved artifact).

    >>> report.to_dict()["after_frequency"]
    8541
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class NormalizationReport:
    """Figures of one fit, ready for a dataset card.

    Args:
        rows: Rows read.
        rows_with_error: Rows whose ``instag_error`` was set (they are used, not skipped).
        queries: Queries (user turns) holding at least one tag.
        raw_tags: Distinct raw tags (stripped spellings).
        after_frequency: Tags left after the frequency filter.
        after_rule: Tags left after rule aggregation.
        after_semantic: Tags left after semantic aggregation.
        after_association: Tags left after association aggregation (the final vocabulary).
        association_rules: Rules ``A -> B`` found by association mining (the single-tag rules FP-Growth finds).
        examples: Per step, a few merges ``{"into": tag, "merged": [tags]}``; for the
            frequency step, ``{"dropped": tag, "queries": n}`` for the most frequent tags
            it removed.
    """

    rows: int
    rows_with_error: int
    queries: int
    raw_tags: int
    after_frequency: int
    after_rule: int
    after_semantic: int
    after_association: int
    association_rules: int
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """All figures as plain JSON-ready values.

        Example:
            >>> sorted(report.to_dict())[:3]
            ['after_association', 'after_frequency', 'after_rule']
        """
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> NormalizationReport:
        """Rebuild a report from :meth:`to_dict` output."""
        return cls(**values)
