"""Stage 1, tagging: every user query gets intention tags from an LLM endpoint.

Open :mod:`~instag_hf.tagging.tagger` first (``Tagger``, ``tag``). A row's path to its tags:
``tagger.Tagger.atag`` -> ``rows`` (which turns are queries) -> ``client`` (requests, retries,
cache, fail-fast) -> ``servers`` / ``dialects`` (what is sent where) -> ``parsing`` ->
``batch`` (the columns written back).
"""

from instag_hf.tagging.cache import RequestCache
from instag_hf.tagging.progress import TaggingStats
from instag_hf.tagging.retry import RetryPolicy
from instag_hf.tagging.settings import TaggerSettings
from instag_hf.tagging.tagger import Tagger, tag

__all__ = ["RequestCache", "RetryPolicy", "Tagger", "TaggerSettings", "TaggingStats", "tag"]
