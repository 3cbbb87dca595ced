"""Tag groups between normalization steps: merging them and naming the result.

Each step of the normalization turns a list of groups into fewer groups. A group is named
after one of its members (the most frequent one unless a step says otherwise, ties by
name), and groups are numbered in name order, so equal input always gives equal ids.

    >>> level = Level(np.arange(3), ["Python", "python", "Java"], np.array([9, 3, 5]))
    >>> merged, examples = level.merge(np.array([0, 0, 1]), occurrences)
    >>> merged.names
    ['Java', 'Python']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from instag_hf.normalization.occurrences import Occurrences, group_query_counts

# How many example merges a report keeps per step, and members per example.
_EXAMPLES = 5
_MEMBERS = 5


@dataclass(frozen=True)
class Level:
    """The vocabulary after one step.

    Args:
        group_of_tag: Group id of every raw tag id, ``-1`` when the tag was dropped.
        names: Display name of every group id.
        counts: Queries holding any member of each group.
    """

    group_of_tag: np.ndarray
    names: list[str]
    counts: np.ndarray

    def merge(
        self,
        labels: np.ndarray,
        occurrences: Occurrences,
        representatives: np.ndarray | None = None,
    ) -> tuple[Level, list[dict[str, Any]]]:
        """Merge groups with equal ``labels`` (``-1``: drop the group).

        Args:
            labels: A label per current group.
            occurrences: The fit data, to count queries of the merged groups.
            representatives: Optional group id whose name a label takes; by default the
                member with the most queries, ties by name.

        Returns:
            The merged level, and a few example merges for the report.
        """
        n = len(self.names)
        chosen: dict[int, int] = {}
        for group in range(n):
            label = int(labels[group])
            if label < 0:
                continue
            if representatives is not None:
                chosen[label] = int(representatives[group])
            elif label not in chosen or self._stronger(group, chosen[label]):
                chosen[label] = group
        # Number the new groups by name so ids do not depend on label values.
        ordered = sorted(chosen, key=lambda label: self.names[chosen[label]])
        new_id = {label: i for i, label in enumerate(ordered)}
        new_of_old = np.full(n + 1, -1, dtype=np.int64)  # slot n: dropped stays dropped
        for group in range(n):
            if labels[group] >= 0:
                new_of_old[group] = new_id[int(labels[group])]
        names = [self.names[chosen[label]] for label in ordered]
        group_of_tag = new_of_old[np.where(self.group_of_tag >= 0, self.group_of_tag, n)]
        counts = group_query_counts(occurrences, group_of_tag, len(names))
        merged = Level(group_of_tag=group_of_tag, names=names, counts=counts)
        return merged, self._examples(new_of_old[:n], merged)

    def _stronger(self, a: int, b: int) -> bool:
        return (-int(self.counts[a]), self.names[a]) < (-int(self.counts[b]), self.names[b])

    def _examples(self, new_of_old: np.ndarray, merged: Level) -> list[dict[str, Any]]:
        members: dict[int, list[int]] = {}
        for old, new in enumerate(new_of_old.tolist()):
            if new >= 0 and self.names[old] != merged.names[new]:
                members.setdefault(new, []).append(old)
        # The biggest merges first: they are what a reader wants to check.
        biggest = sorted(members, key=lambda g: (-len(members[g]), -int(merged.counts[g]), merged.names[g]))
        examples = []
        for group in biggest[:_EXAMPLES]:
            olds = sorted(members[group], key=lambda old: (-int(self.counts[old]), self.names[old]))
            examples.append({"into": merged.names[group], "merged": [self.names[old] for old in olds[:_MEMBERS]]})
        return examples
