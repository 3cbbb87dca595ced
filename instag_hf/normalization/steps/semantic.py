"""Semantic clusters of tag embeddings: sklearn DBSCAN under cosine distance.

With the paper's ``eps = 0.05`` and ``min_samples = 1`` a cluster is a connected component
of the graph "cosine similarity >= 0.95", so nothing is dropped as noise. With a larger
``min_samples`` DBSCAN may call a tag noise; such a tag stays a cluster of its own rather
than vanishing from the vocabulary.

    >>> cluster(vectors, eps=0.05, min_samples=1)
    array([0, 0, 1])
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)

# sklearn computes the radius neighbourhoods chunk by chunk; this caps one chunk's distance
# block (MiB), so memory grows with the number of tags, not with its square.
_WORKING_MEMORY_MIB = 256


def cluster(vectors: np.ndarray, eps: float, min_samples: int) -> np.ndarray:
    """DBSCAN cluster label of every row of ``vectors``, noise turned into singletons.

    Args:
        vectors: One embedding per tag, rows in a deterministic order.
        eps: Neighbourhood radius as a cosine distance (inclusive).
        min_samples: DBSCAN ``min_samples``.

    Returns:
        An ``int64`` label per row; equal labels mean one cluster.
    """
    import sklearn
    from sklearn.cluster import DBSCAN

    if len(vectors) < 2:
        return np.arange(len(vectors), dtype=np.int64)
    with sklearn.config_context(working_memory=_WORKING_MEMORY_MIB):
        labels = DBSCAN(eps=eps, min_samples=min_samples, metric="cosine").fit_predict(vectors)
    labels = labels.astype(np.int64)
    noise = np.flatnonzero(labels < 0)
    labels[noise] = labels.max() + 1 + np.arange(len(noise))
    logger.info("DBSCAN: %d tags in %d clusters (%d were noise)", len(vectors), len(np.unique(labels)), len(noise))
    return labels
