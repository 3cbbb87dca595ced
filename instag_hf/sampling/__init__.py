"""Stage 4, sampling: the paper's complexity-first diverse sampler and its variants.

Open :mod:`~instag_hf.sampling.sampler` first (``sample``, ``selection_info``); ``passes``
holds Algorithm 1's passes, ``provenance`` what a subset records about how it was made.
"""

from instag_hf.sampling.sampler import SelectionInfo, sample, selection_info

__all__ = ["SelectionInfo", "sample", "selection_info"]
