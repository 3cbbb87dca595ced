"""PNG charts for the dataset card: the top tags and the tags-per-row histogram, pool vs subset.

    plots = render_plots(subset_stats)        # {"plots/top_tags.png": b"\\x89PNG...", ...}

Figures are drawn on matplotlib's Agg canvas directly (``Figure`` + ``FigureCanvasAgg``),
never through ``pyplot``: no display is needed, no global backend is switched, and
nothing is left open between calls. The PNG bytes are deterministic for a given input and
matplotlib version (no timestamp, no software tag), so pushing the same subset twice
uploads nothing new.
"""

from __future__ import annotations

import io
import logging
import unicodedata
import warnings

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from instag_hf.analysis.stats import TagStats

logger = logging.getLogger(__name__)

#: Paths of the plots, relative to the card (and to the repo root on the Hub).
TOP_TAGS_PLOT = "plots/top_tags.png"
TAGS_PER_ROW_PLOT = "plots/tags_per_row.png"

#: Longest tag label drawn in full; longer ones are cut (labels only, never the data).
MAX_LABEL_CHARS = 40

_SUBSET_COLOR = "#d1495b"
_POOL_COLOR = "#8d99ae"

__all__ = ["TAGS_PER_ROW_PLOT", "TOP_TAGS_PLOT", "render_plots"]


def render_plots(stats: TagStats, *, top_k: int | None = None, dpi: int = 100) -> dict[str, bytes]:
    """Draw the card's plots from the subset's statistics (and its pool's, when nested).

    Args:
        stats: :func:`instag_hf.analyze` of the subset; with ``pool=`` given to
            ``analyze``, the pool is drawn beside the subset.
        top_k: Tags in the bar chart; defaults to ``stats.top_k``.
        dpi: Resolution of the PNG files.

    Returns:
        ``{path: png_bytes}`` keyed by :data:`TOP_TAGS_PLOT` and :data:`TAGS_PER_ROW_PLOT`.

    Example:
        >>> plots = render_plots(instag_hf.analyze(subset, pool=pool))  # doctest: +SKIP
        >>> sorted(plots)  # doctest: +SKIP
        ['plots/tags_per_row.png', 'plots/top_tags.png']
    """
    with warnings.catch_warnings():
        # Tags in scripts the bundled font lacks draw as boxes; one warning per glyph is noise.
        warnings.filterwarnings("ignore", message=r".*[Gg]lyph .* missing from.*")
        return {
            TOP_TAGS_PLOT: _png(_top_tags_figure(stats, stats.top_k if top_k is None else top_k), dpi),
            TAGS_PER_ROW_PLOT: _png(_tags_per_row_figure(stats), dpi),
        }


def plot_label(tag: str) -> str:
    """A tag made safe as a matplotlib label: one line, no mathtext, bounded length.

    Example:
        >>> plot_label("cost in $ and $x^2$")
        'cost in \\\\$ and \\\\$x^2\\\\$'
    """
    # An LLM wrote the tag: "$...$" would be parsed as mathtext (and can fail to parse).
    text = "".join(" " if unicodedata.category(c)[0] in "CZ" and c != " " else c for c in tag)
    text = " ".join(text.split())
    if len(text) > MAX_LABEL_CHARS:
        text = text[: MAX_LABEL_CHARS - 1] + "…"
    return text.replace("$", r"\$")  # matplotlib shows "\$" as "$" and never parses it as math


def _share(count: int, rows: int) -> float:
    return 100.0 * count / rows if rows else 0.0


def _top_tags_figure(stats: TagStats, top_k: int) -> Figure:
    top = stats.tag_counts[:top_k]
    pool = stats.pool
    pool_counts = dict(pool.tag_counts) if pool is not None else {}
    fig = Figure(figsize=(8, 1.2 + 0.32 * max(len(top), 1)), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(len(top))
    height = 0.4 if pool is not None else 0.7
    subset_shares = [_share(count, stats.rows) for _, count in top]
    ax.barh(y - (height / 2 if pool is not None else 0), subset_shares, height, color=_SUBSET_COLOR, label="subset")
    if pool is not None:
        pool_shares = [_share(pool_counts.get(tag, 0), pool.rows) for tag, _ in top]
        ax.barh(y + height / 2, pool_shares, height, color=_POOL_COLOR, label="pool")
        ax.legend(loc="lower right")
    ax.set_yticks(y, [plot_label(tag) for tag, _ in top])
    ax.invert_yaxis()  # most common on top
    ax.set_xlabel("rows carrying the tag (%)")
    ax.set_title(f"Top {len(top)} tags of the subset")
    if not top:
        ax.text(0.5, 0.5, "no tags", ha="center", va="center", transform=ax.transAxes)
    return fig


def _tags_per_row_figure(stats: TagStats) -> Figure:
    pool = stats.pool
    highest = max([stats.max_tags] + ([pool.max_tags] if pool is not None else []))
    counts = np.arange(highest + 1)
    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.add_subplot()
    width = 0.4 if pool is not None else 0.8
    subset_shares = [_share(stats.tags_per_row.get(int(k), 0), stats.rows) for k in counts]
    ax.bar(counts - (width / 2 if pool is not None else 0), subset_shares, width, color=_SUBSET_COLOR, label="subset")
    if pool is not None:
        pool_shares = [_share(pool.tags_per_row.get(int(k), 0), pool.rows) for k in counts]
        ax.bar(counts + width / 2, pool_shares, width, color=_POOL_COLOR, label="pool")
        ax.legend()
    ax.set_xticks(counts)
    ax.set_xlabel("tags per row (complexity)")
    ax.set_ylabel("rows (%)")
    ax.set_title("Tags per row")
    return fig


def _png(fig: Figure, dpi: int) -> bytes:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    # No "Software" entry: the bytes then depend on the picture only, not on who drew it.
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return buffer.getvalue()
