"""Association aggregation: tags that (almost) never appear without another one merge into it.

Rules are mined over per-query tag sets at an absolute minimum support (the paper's 40
queries) and a minimum confidence (the paper's 0.99). Only rules with one tag on each
side are mined (FP-Growth's ``max_len=2``): a merge joins two tags, and a rule such as
``{A, B} -> C`` names no single tag to merge. For such rules the frequent itemsets are the
tag pairs held by at least ``min_support`` queries, which a sparse co-occurrence count
finds exactly (see :func:`mine_rules` for why not mlxtend's FP-Growth).

Direction: ``A -> B`` with confidence >= the threshold means A almost never appears without
B, so A merges into B. When A has several such consequents, the one with the largest
support (number of queries holding it) wins, ties by the rule's confidence, then by name.
Chains are followed (A -> B -> C merges A and B into C); a cycle (tags that always appear
together) collapses into its member with the largest support, ties by name.

    >>> rules = mine_rules(queries, items, n_items, min_support=40, min_confidence=0.99)
    >>> targets = merge_targets(rules, counts, names)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

logger = logging.getLogger(__name__)

#: Pair counts computed at once, at most (antecedents per block x tags): ~16M, ~200 MB.
_PAIR_BUDGET = 1 << 24


@dataclass(frozen=True)
class Rule:
    """``antecedent -> consequent`` between two item ids, with exact query counts.

    Args:
        antecedent: Item id of A.
        consequent: Item id of B.
        support: Queries holding both A and B.
        antecedent_support: Queries holding A.
    """

    antecedent: int
    consequent: int
    support: int
    antecedent_support: int

    @property
    def confidence(self) -> Fraction:
        return Fraction(self.support, self.antecedent_support)


def exact_fraction(value: float) -> Fraction:
    """The decimal a person typed, exactly (0.99 -> 99/100, not the nearest binary float)."""
    return Fraction(repr(float(value)))


def mine_rules(
    queries: np.ndarray,
    items: np.ndarray,
    n_items: int,
    min_support: int,
    min_confidence: float,
) -> list[Rule]:
    """Single-item rules ``A -> B`` with support >= ``min_support`` and confidence >= ``min_confidence``.

    Args:
        queries: Query id of each distinct (query, item) pair.
        items: Item id of each pair.
        n_items: Number of item ids.
        min_support: Minimum number of queries holding both A and B (inclusive).
        min_confidence: Minimum ``support(A and B) / support(A)`` (inclusive, compared exactly).

    Returns:
        The rules, sorted by (antecedent, consequent); the same rules as mlxtend's
        ``fpgrowth(max_len=2)`` + ``association_rules(metric="confidence")`` find.

    Example:
        >>> mine_rules(np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1]), 2, 2, 0.99)[0]
        Rule(antecedent=0, consequent=1, support=2, antecedent_support=2)
    """
    # Not mlxtend: its fpgrowth densifies the one-hot table (`df.values`, even for a sparse
    # DataFrame), queries x frequent tags bytes. Measured on benchmarks/bench_normalize.py's
    # 300K-sample pool (372,672 queries, 6,618 tags): 6.8 s and +1,246 MiB peak RSS, against
    # 0.2 s and +34 MiB here (same 97 rules); at 1M samples / 100K raw tags the dense table alone would be
    # ~20 GiB. With one item per side a rule needs only pair counts, which a sparse
    # co-occurrence product gives exactly, in memory linear in the pairs that occur.
    # tests/normalization/test_normalization.py checks the rules equal mlxtend's on random data.
    from scipy import sparse  # late: `import instag_hf` needs no [normalize] extra

    counts = np.bincount(items, minlength=n_items).astype(np.int64)
    # Items below the support threshold are in no frequent pair.
    keep = counts[items] >= min_support
    if not keep.any():
        return []
    _, rows = np.unique(queries[keep], return_inverse=True)
    table = sparse.csr_matrix(
        (np.ones(int(keep.sum()), dtype=np.int32), (rows.ravel(), items[keep])),
        shape=(int(rows.max()) + 1, n_items),
    )
    # The pair counts of a few antecedents at a time, filtered at once: the whole product
    # holds every pair that co-occurs, which at 10M queries (~50K tags) took gigabytes
    # for the few hundred rules kept.
    by_item = table.T.tocsr()
    block = max(1, _PAIR_BUDGET // max(n_items, 1))
    rules = []
    for start in range(0, n_items, block):
        pairs = (by_item[start : start + block] @ table).tocoo()
        a, b, both = pairs.row.astype(np.int64) + start, pairs.col.astype(np.int64), pairs.data.astype(np.int64)
        # A float pre-filter with slack, then the exact decision on integer counts for the few left.
        near = (a != b) & (both >= min_support) & (both >= (float(min_confidence) - 1e-9) * counts[a])
        rules += [
            Rule(antecedent=int(x), consequent=int(y), support=int(n), antecedent_support=int(counts[x]))
            for x, y, n in zip(a[near], b[near], both[near])
        ]
    threshold = exact_fraction(min_confidence)
    rules = sorted((r for r in rules if r.confidence >= threshold), key=lambda r: (r.antecedent, r.consequent))
    logger.info("Association: %d rules over %d frequent tags", len(rules), int((counts >= min_support).sum()))
    return rules


def merge_targets(rules: list[Rule], counts: np.ndarray, names: list[str]) -> np.ndarray:
    """Where every item ends up after merging along ``rules`` (see the module docstring).

    Args:
        rules: Rules from :func:`mine_rules`.
        counts: Support (queries holding it) of every item id.
        names: Display name of every item id, for tie-breaking.

    Returns:
        Final item id of every item id (itself when it does not merge).

    Example:
        >>> merge_targets([Rule(0, 1, 50, 50)], np.array([50, 80]), ["a", "b"]).tolist()
        [1, 1]
    """
    n_items = len(counts)
    best: dict[int, tuple] = {}
    for rule in rules:
        b = rule.consequent
        # Largest wins: support, then confidence, then the alphabetically first name.
        rank = (int(counts[b]), rule.confidence, _Reversed(names[b]))
        if rule.antecedent not in best or rank > best[rule.antecedent][0]:
            best[rule.antecedent] = (rank, b)
    parent = np.arange(n_items)
    for a, (_, b) in best.items():
        parent[a] = b

    # Each item has at most one parent, so every component holds at most one cycle: find it,
    # make its strongest member the root, then every item follows parents to a root.
    state = np.zeros(n_items, dtype=np.int8)  # 0 unseen, 1 on the current path, 2 done
    for start in sorted(best):
        path = []
        node = start
        while state[node] == 0:
            state[node] = 1
            path.append(node)
            node = int(parent[node])
        if state[node] == 1:  # walked into the current path: node lies on a new cycle
            cycle = path[path.index(node) :]
            root = min(cycle, key=lambda i: (-int(counts[i]), names[i]))
            parent[root] = root
        for visited in path:
            state[visited] = 2

    final = np.arange(n_items)
    for item in range(n_items):
        node = item
        while parent[node] != node:
            node = int(parent[node])
        final[item] = node
    return final


class _Reversed:
    """Orders strings backwards, so a max() over ranks picks the alphabetically first name."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __lt__(self, other: _Reversed) -> bool:
        return self.value > other.value

    def __gt__(self, other: _Reversed) -> bool:
        return self.value < other.value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Reversed) and self.value == other.value
