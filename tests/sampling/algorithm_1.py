"""Algorithm 1 of the paper as written, with Python sets: the reference the sampler is checked
against (``test_sampling.py``) and the baseline it is timed against (``benchmarks/bench_sampling.py``)."""

from __future__ import annotations


def reference(tag_sets: list[set], order: list[int], n: int) -> tuple[list[int], int]:
    """Algorithm 1 as written in the paper, with Python sets."""
    selected: list[int] = []
    chosen: set[int] = set()
    passes = 0
    while len(selected) < n:
        passes += 1
        covered: set = set()
        added = 0
        for row in order:
            if row in chosen:
                continue
            if not covered.issuperset(tag_sets[row]):
                selected.append(row)
                chosen.add(row)
                covered |= tag_sets[row]
                added += 1
                if len(selected) == n:
                    return selected, passes
        if added == 0:
            return selected, passes - 1
    return selected, passes


def plain_algorithm_1(tag_lists: list[list[str]], n: int) -> list[int]:
    """The whole plain path: sets from the tag lists, a stable sort by tag count, then :func:`reference`."""
    tag_sets = [set(tags) for tags in tag_lists]
    order = sorted(range(len(tag_sets)), key=lambda i: -len(tag_sets[i]))
    return reference(tag_sets, order, n)[0]
