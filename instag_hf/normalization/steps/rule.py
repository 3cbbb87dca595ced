"""Rule aggregation keys: the paper's "lowercase, special characters to spaces, stem".

Two tags whose keys are equal are one tag. Keys are only used for grouping and look-ups;
people are shown a real spelling of the tag, never its stem.

    >>> rule_key("Mathematical Reasoning!")
    'mathemat reason'
    >>> rule_key("mathematics-reasoning")
    'mathemat reason'
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from instag_hf.extras import require

# Unicode-aware: letters and digits of any script are words, everything else (punctuation,
# symbols, underscore, whitespace) separates words. An ASCII-only class would erase tags
# written in other scripts.
_SEPARATORS = re.compile(r"[\W_]+", re.UNICODE)


def clean_text(tag: str) -> str:
    """Lowercase ``tag``, turn every special character into a space and collapse spaces.

    Args:
        tag: A tag as the tagger wrote it.

    Returns:
        The cleaned text, possibly empty when ``tag`` holds no letter or digit.

    Example:
        >>> clean_text("  Code_Generation (Python) ")
        'code generation python'
    """
    return _SEPARATORS.sub(" ", tag.lower()).strip()


@lru_cache(maxsize=1)
def _stemmer() -> Any:
    # Imported on first use: importing nltk takes most of a second, and `import instag_hf`
    # should not pay it. The Porter stemmer needs no NLTK data download and keeps no
    # per-call state, so one instance serves every call.
    require("normalize", "nltk", step="Rule aggregation (Porter stemming)")
    from nltk.stem.porter import PorterStemmer

    return PorterStemmer()


@lru_cache(maxsize=1 << 16)
def _stem(word: str) -> str:
    # Vocabularies repeat the same few thousand words across tens of thousands of tags.
    return _stemmer().stem(word)


def rule_key(tag: str) -> str:
    """The rule-aggregation key of ``tag``: :func:`clean_text`, then each word Porter-stemmed.

    Args:
        tag: A tag as the tagger wrote it.

    Returns:
        The key; empty when ``tag`` holds no letter or digit (such tags are dropped).

    Example:
        >>> rule_key("Generating code")
        'gener code'
    """
    return " ".join(_stem(word) for word in clean_text(tag).split())
