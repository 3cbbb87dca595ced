"""Stage 2, normalization: the paper's four steps turn raw tags into a clean vocabulary.

Open :mod:`~instag_hf.normalization.normalizer` first (``TagNormalizer``); ``fitting`` runs the
steps in ``steps/`` (frequency filter in ``fitting``, then ``rule``, ``semantic``,
``association``) over the ``occurrences`` read from the dataset.
"""

from instag_hf.normalization.normalizer import TagNormalizer

__all__ = ["TagNormalizer"]
