"""Stage 3, analysis: diversity, coverage and complexity of a tagged dataset.

Open :mod:`~instag_hf.analysis.stats` first (``analyze``, ``TagStats``); ``tagsets`` reads tag
columns from Arrow; ``measurements/instag`` is the same as an ``evaluate`` module
(:data:`MEASUREMENT_PATH`).
"""

from instag_hf.analysis.stats import MEASUREMENT_PATH, TagStats, analyze

__all__ = ["MEASUREMENT_PATH", "TagStats", "analyze"]
