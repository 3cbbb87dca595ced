"""Vectorised row selection over :class:`~instag_hf.analysis.tagsets.TagSets` (numpy only).

The key fact behind :func:`covering_passes`: in one pass of InsTag's Algorithm 1, a row is
taken iff it has a tag that no earlier row of the pass has taken, and that holds iff the
row is the *first* row of the pass (among rows not yet selected) that carries some tag.
(If an earlier row of the pass carried tag ``t``, either it was taken and ``t`` is
covered, or it was skipped because ``t`` was already covered; covered tags only grow.)
The set of tags seen so far in a pass therefore equals the covered set, and a pass is a
"first occurrence per tag" (an ``np.minimum.at`` of pass positions over tag ids) whose
winners, sorted, are the rows the pass takes in the order it takes them (truncated at
``n``). Every function returns row ids (positions in the dataset), never booleans, and
keeps the order in which rows would be taken.
"""

from __future__ import annotations

import numpy as np

from instag_hf.analysis.tagsets import TagSets, list_offsets, row_ranges


def base_order(rows: int, rng: np.random.Generator | None) -> np.ndarray | None:
    """The tie-break of every later sort: a seeded permutation, or None for the original row order.

    None rather than ``arange(rows)``: the sorts then index ``key`` directly, which on 10M
    rows saves three 80 MB arrays (the range, ``key[order]`` and ``order[...]``).
    """
    return None if rng is None else rng.permutation(rows).astype(np.int64)


def rows_where(order: np.ndarray | None, mask: np.ndarray) -> np.ndarray:
    """Row ids where ``mask`` holds, in ``order`` (None: row order)."""
    return np.flatnonzero(mask) if order is None else order[mask[order]]


def sort_by(order: np.ndarray | None, key: np.ndarray, descending: bool = False) -> np.ndarray:
    """Row ids of ``order`` (None: all rows in row order) stably sorted by ``key`` of each row.

    Ascending, or with ``descending`` from the largest key down; ties keep their place in
    ``order``.
    """
    values = key if order is None else key[order]
    if values.size and np.issubdtype(values.dtype, np.integer) and int(values.max()) - int(values.min()) < 2**16:
        # numpy's stable sort is a linear-time radix sort for keys of 16 bits or less, one
        # pass per byte (tag counts are small: 10M rows sort in 0.12 s as uint8, 0.18 s as
        # uint16). The small key is written directly, without an int64 temporary.
        low, high = int(values.min()), int(values.max())
        small = np.empty(values.size, dtype=np.uint8 if high - low < 2**8 else np.uint16)
        if descending:
            np.subtract(high, values, out=small, casting="unsafe")
        else:
            np.subtract(values, low, out=small, casting="unsafe")
        values = small
    elif descending:
        values = -values
    positions = np.argsort(values, kind="stable")
    return positions if order is None else order[positions]


def gather(ts: TagSets, rows: np.ndarray) -> np.ndarray:
    """Tag ids of ``rows``, row after row."""
    return ts.tag_ids[row_ranges(ts.offsets, rows)]


#: Rows of pass order read at a time: a pass stops at the end of the block where it is
#: done, so smaller blocks read fewer rows past that point but pay numpy's per-call cost
#: more often (benchmark passes: 5.2 ms at 8K rows, 5.5 at 4K, 5.8 at 16K).
BLOCK_ROWS = 8_192


def covering_passes(ts: TagSets, order: np.ndarray, n: int, max_passes: int | None = None) -> tuple[np.ndarray, int]:
    """InsTag's Algorithm 1 over the rows of ``order``, taken in that order on every pass.

    Each pass takes, among the rows not selected yet, the first row of ``order`` carrying
    each tag (see the module docstring for why that is Algorithm 1's pass), in pass order,
    up to ``n`` rows in all.

    A pass first reads ``order`` a block at a time and stops as soon as it has its rows
    or has covered every tag (later rows cannot take anything then): on the benchmark
    pool (1M rows, 6.6K tags) every tag is covered within the first 64K rows of the
    complexity order. A pass still unfinished after an eighth of the order is run, as are
    all later ones, as one ``np.minimum.at`` over every occurrence in play (:class:`_Pass`),
    cheaper per occurrence than reading rows in pass order: n = 200K of that pool takes
    0.33 s so, 0.57 s reading blocks to the end.

    Args:
        ts: tag sets.
        order: distinct row ids in pass order; rows without tags are ignored.
        n: rows wanted.
        max_passes: stop after this many passes (``None``: until ``n`` or exhaustion).

    Returns:
        The taken row ids in selection order, and the number of passes run. Fewer than
        ``n`` rows come back only when every tagged row of ``order`` was taken (the next
        pass would add nothing) or ``max_passes`` was reached.
    """
    tagged = int(np.count_nonzero(ts.lengths if order.size == ts.rows else ts.lengths[order]))
    done = np.zeros(ts.rows, dtype=bool)
    full: _Pass | None = None
    selected: list[np.ndarray] = []
    count = passes = 0
    while count < min(n, tagged) and (max_passes is None or passes < max_passes):
        passes += 1
        taken = None if full else _block_pass(ts, order, done, n - count)
        if taken is None:
            full = full or _Pass(ts, order[~done[order]])
            taken = full.take(n - count)
        done[taken] = True
        selected.append(taken)
        count += taken.size
    picked = np.concatenate(selected) if selected else np.zeros(0, dtype=np.int64)
    return picked, passes


def _block_pass(ts: TagSets, order: np.ndarray, done: np.ndarray, wanted: int) -> np.ndarray | None:
    """Rows one pass takes (at most ``wanted``), or ``None`` past an eighth of ``order``."""
    vocab_size = len(ts.vocabulary)
    covered = np.zeros(vocab_size, dtype=bool)
    seen = 0
    taken: list[np.ndarray] = []
    for start in range(0, order.size, BLOCK_ROWS):
        if not wanted or seen == vocab_size:
            break
        if start * 8 > order.size:
            return None
        rows = order[start : start + BLOCK_ROWS]
        rows = rows[~done[rows]]
        tags = ts.tag_ids[row_ranges(ts.offsets, rows)]
        # First occurrence of each tag in the block (occurrences are in pass order), kept
        # for the tags the pass had not covered before it.
        first = np.full(vocab_size, tags.size, dtype=np.int64)
        np.minimum.at(first, tags, np.arange(tags.size))
        present = first < tags.size
        first = np.sort(first[present & ~covered])
        covered |= present
        seen += first.size
        winners = rows[np.unique(np.searchsorted(np.cumsum(ts.lengths[rows]), first, side="right"))][:wanted]
        taken.append(winners)
        wanted -= winners.size
    return np.concatenate(taken) if taken else np.zeros(0, dtype=np.int64)


class _Pass:
    """The occurrences in play, each keyed by its row's position in the pass order.

    Rows outside the pass order (and rows already selected) carry the key ``sentinel``,
    which loses every ``minimum``; occurrences are dropped for good only once most of them
    are out of play, so a pass costs one ``np.minimum.at`` over the occurrences left.
    """

    def __init__(self, ts: TagSets, order: np.ndarray) -> None:
        self.order, self.sentinel = order, len(order)
        dtype = np.int32 if len(order) < 2**31 - 1 else np.int64
        self.position: np.ndarray = np.full(ts.rows, self.sentinel, dtype=dtype)
        self.position[order] = np.arange(len(order), dtype=dtype)
        self.vocab_size = len(ts.vocabulary)
        self.rows = np.arange(ts.rows, dtype=np.int64)
        self.lengths, self.offsets, self.tags = ts.lengths, ts.offsets, ts.tag_ids
        self.key = np.repeat(self.position, self.lengths)
        self.live = int(self.lengths[order].sum())
        self._compact_if_sparse()

    def take(self, wanted: int) -> np.ndarray:
        """Rows the next pass takes (at most ``wanted``), taken out of play."""
        first = np.full(self.vocab_size, self.sentinel, dtype=self.key.dtype)
        np.minimum.at(first, self.tags, self.key)
        rows = self.order[np.unique(first[first < self.sentinel])[:wanted]]
        self.position[rows] = self.sentinel
        occurrences = row_ranges(self.offsets, np.searchsorted(self.rows, rows))
        self.key[occurrences] = self.sentinel
        self.live -= occurrences.size
        self._compact_if_sparse()
        return rows

    def _compact_if_sparse(self) -> None:
        if self.live * 2 >= self.key.size:
            return
        keep_rows = self.position[self.rows] < self.sentinel
        keep = np.repeat(keep_rows, self.lengths)
        self.rows, self.lengths = self.rows[keep_rows], self.lengths[keep_rows]
        self.tags, self.key = self.tags[keep], self.key[keep]
        self.offsets = list_offsets(self.lengths)


def frequency_core_vocabulary(ts: TagSets, target_tags: int) -> tuple[np.ndarray, np.ndarray]:
    """The smallest frequency-ordered vocabulary whose in-vocabulary rows cover ``target_tags`` tags.

    Tags are ranked by the number of rows carrying them (descending, ties by tag name). A
    row is "inside" the first ``k`` tags when all its tags rank below ``k``; a tag can be
    covered inside them iff some inside row carries it, i.e. iff the smallest "highest
    rank in the row" over the rows carrying it is below ``k``. That per-tag value, sorted,
    gives the smallest ``k`` directly.

    Args:
        ts: tag sets.
        target_tags: number of tags to cover (1..vocabulary size).

    Returns:
        A boolean mask over tag ids (the covered vocabulary, at least ``target_tags``
        tags; more when several tags become coverable at the same ``k``) and a boolean
        mask over rows (tagged rows whose tags all lie in it).
    """
    vocab_size = len(ts.vocabulary)
    frequency = np.bincount(ts.tag_ids, minlength=vocab_size)
    names = np.array(ts.vocabulary, dtype=object)
    by_rank = np.lexsort((names, -frequency))
    rank = np.empty(vocab_size, dtype=np.int64)
    rank[by_rank] = np.arange(vocab_size)
    lengths = ts.lengths
    tagged = lengths > 0
    row_max = np.full(ts.rows, vocab_size, dtype=np.int64)
    if ts.tag_ids.size:
        row_max[tagged] = np.maximum.reduceat(rank[ts.tag_ids], ts.offsets[:-1][tagged])
    reach = np.full(vocab_size, vocab_size, dtype=np.int64)
    np.minimum.at(reach, ts.tag_ids, np.repeat(row_max, lengths))
    k = int(np.sort(reach)[target_tags - 1]) + 1
    return reach < k, tagged & (row_max < k)


def steer_to_mean(lengths: np.ndarray, rows: int, total: float) -> np.ndarray:
    """Pick ``rows`` positions of ``lengths`` whose values sum as close to ``total`` as possible.

    Greedy over the histogram of ``lengths``: with ``r`` rows and ``s`` tags still to
    place, the target per row is ``t = s / r``; take rows from the two available counts
    around ``t`` (the nearest below and above) in the proportion that hits ``s`` exactly,
    and when one of them runs out take all of it and re-aim. Each step exhausts a count
    or finishes, so it runs in O(distinct counts). Within a count, positions are taken in
    ascending order (callers pass rows in original or seeded order).

    Args:
        lengths: tag counts of the candidate rows, in preference order.
        rows: how many to pick (at most ``len(lengths)``).
        total: the sum of tag counts wanted.

    Returns:
        Picked positions into ``lengths``, ascending.
    """
    by_length = np.argsort(lengths, kind="stable")
    values, starts, available = np.unique(lengths[by_length], return_index=True, return_counts=True)
    taken = np.zeros(len(values), dtype=np.int64)
    r, s = rows, float(total)
    while r > 0:
        open_ = available - taken > 0
        if not open_.any():
            break
        target = s / r
        below = np.flatnonzero(open_ & (values <= target))
        above = np.flatnonzero(open_ & (values >= target))
        lo = below[-1] if below.size else None
        hi = above[0] if above.size else None
        if lo is None or hi is None or lo == hi:
            i = lo if hi is None else hi
            x = min(r, int(available[i] - taken[i]))
        else:
            x_hi = int(np.clip(round((s - values[lo] * r) / (values[hi] - values[lo])), 0, r))
            if x_hi > available[hi] - taken[hi]:
                i, x = hi, available[hi] - taken[hi]
            elif r - x_hi > available[lo] - taken[lo]:
                i, x = lo, available[lo] - taken[lo]
            else:
                taken[hi] += x_hi
                taken[lo] += r - x_hi
                break
        taken[i] += x
        r -= int(x)
        s -= float(values[i]) * int(x)
    parts = [by_length[starts[i] : starts[i] + taken[i]] for i in range(len(values)) if taken[i]]
    return np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)
