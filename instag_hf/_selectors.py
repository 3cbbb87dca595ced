"""Vectorised row selection over :class:`~instag_hf._tagsets.TagSets` (numpy only).

The key fact behind :func:`covering_passes`: in one pass of InsTag's Algorithm 1, a row is
taken iff it has a tag that no earlier row of the pass has taken, and that holds iff the
row is the *first* row of the pass (among rows not yet selected) that carries some tag.
(If an earlier row of the pass carried tag ``t``, either it was taken and ``t`` is
covered, or it was skipped because ``t`` was already covered; covered tags only grow.)
The set of tags seen so far in a pass therefore equals the covered set, and a pass is a
"first occurrence per tag" scan that numpy does in chunks, stopping as soon as enough rows
are taken. Every function returns row ids (positions in the dataset), never booleans, and
keeps the order in which rows would be taken.
"""

from __future__ import annotations

import numpy as np

from instag_hf._tagsets import TagSets

#: First chunk of a pass, in tag occurrences; chunks double up to _MAX_CHUNK so that a
#: small ``n`` stops after a few thousand occurrences and a large one pays little overhead.
_FIRST_CHUNK = 4_096
_MAX_CHUNK = 1 << 20


def base_order(rows: int, rng: np.random.Generator | None) -> np.ndarray:
    """Original row order, or a seeded permutation: the tie-break of every later sort."""
    return np.arange(rows, dtype=np.int64) if rng is None else rng.permutation(rows).astype(np.int64)


def sort_by(order: np.ndarray, key: np.ndarray) -> np.ndarray:
    """``order`` stably sorted by ``key[order]`` ascending (ties keep their place in ``order``)."""
    return order[np.argsort(key[order], kind="stable")]


def gather(ts: TagSets, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lengths and concatenated tag ids of ``rows``, in that order (a CSR row gather)."""
    lengths = ts.lengths[rows]
    total = int(lengths.sum())
    if total == 0:
        return lengths, np.zeros(0, dtype=ts.tag_ids.dtype)
    starts = np.zeros(len(rows), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    index = np.repeat(ts.offsets[rows] - starts, lengths) + np.arange(total, dtype=np.int64)
    return lengths, ts.tag_ids[index]


def _one_pass(lengths: np.ndarray, tags: np.ndarray, vocab_size: int, need: int) -> np.ndarray:
    """Positions (ascending) of the rows one pass takes, at most ``need`` of them."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    seen = np.zeros(vocab_size, dtype=bool)
    picked: list[np.ndarray] = []
    taken = 0
    row, chunk = 0, _FIRST_CHUNK
    while row < len(lengths) and taken < need:
        # Chunks end on row boundaries so that a row is never split across two chunks.
        end = max(int(np.searchsorted(offsets, offsets[row] + chunk, side="right")) - 1, row + 1)
        start_occ, end_occ = offsets[row], offsets[end]
        block = tags[start_occ:end_occ]
        fresh = np.flatnonzero(~seen[block])
        if fresh.size:
            fresh_tags = block[fresh]
            _, first = np.unique(fresh_tags, return_index=True)
            rows = np.unique(np.searchsorted(offsets, fresh[first] + start_occ, side="right") - 1)
            picked.append(rows)
            taken += rows.size
            seen[fresh_tags] = True
        row, chunk = end, min(chunk * 2, _MAX_CHUNK)
    if not picked:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate(picked)[:need]


def covering_passes(ts: TagSets, order: np.ndarray, n: int, max_passes: int | None = None) -> tuple[np.ndarray, int]:
    """InsTag's Algorithm 1 over the rows of ``order``, taken in that order on every pass.

    Args:
        ts: tag sets.
        order: row ids in pass order; rows without tags are ignored.
        n: rows wanted.
        max_passes: stop after this many passes (``None``: until ``n`` or exhaustion).

    Returns:
        The taken row ids in selection order, and the number of passes run. Fewer than
        ``n`` rows come back only when every tagged row of ``order`` was taken (the next
        pass would add nothing) or ``max_passes`` was reached.
    """
    remaining = order[ts.lengths[order] > 0]
    lengths, tags = gather(ts, remaining)
    selected: list[np.ndarray] = []
    count = passes = 0
    while count < n and remaining.size and (max_passes is None or passes < max_passes):
        passes += 1
        positions = _one_pass(lengths, tags, len(ts.vocabulary), n - count)
        selected.append(remaining[positions])
        count += positions.size
        keep = np.ones(remaining.size, dtype=bool)
        keep[positions] = False
        # Compacting after each pass makes the next one scan only rows still in play.
        tags = tags[np.repeat(keep, lengths)]
        remaining, lengths = remaining[keep], lengths[keep]
    picked = np.concatenate(selected) if selected else np.zeros(0, dtype=np.int64)
    return picked, passes


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
            x = min(r, available[i] - taken[i])
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
