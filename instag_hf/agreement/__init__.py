"""Tag agreement between two taggers: the measures, ``compare`` and the card's sampled audit.

One entry per use:

- :func:`compare` (:mod:`.comparison`, exported as ``instag_hf.compare``): two tagged datasets
  of the same queries, aligned by query text.
- :func:`score` and :class:`TagMatcher` (:mod:`.matching`): the figures for tag lists
  already aligned row by row; the rules (exact raw, rule key, semantic maximum matching,
  micro/macro, empty rows) are documented there.
- :func:`audit` (:mod:`.auditing`): re-tag a seeded sample of a pool with a second Tagger,
  for ``instag_hf.build_card(..., audit=...)``.
- The same figures as an ``evaluate`` metric: ``evaluate.load(METRIC_PATH)``.
"""

from pathlib import Path

from instag_hf.agreement.auditing import DEFAULT_AUDIT_ROWS, Audit, audit
from instag_hf.agreement.comparison import Comparison, TurnAgreement, compare
from instag_hf.agreement.matching import DEFAULT_THRESHOLD, KINDS, MODES, AgreementScores, TagMatcher, score

#: Folder of the ``evaluate`` metric module (``evaluate.load(METRIC_PATH)``).
METRIC_PATH = str(Path(__file__).parent / "metric" / "instag_agreement")

__all__ = [
    "DEFAULT_AUDIT_ROWS",
    "DEFAULT_THRESHOLD",
    "KINDS",
    "METRIC_PATH",
    "MODES",
    "AgreementScores",
    "Audit",
    "Comparison",
    "TagMatcher",
    "TurnAgreement",
    "audit",
    "compare",
    "score",
]
