"""Stage 6, refresh: rebuild Hub datasets from CI when their sources change.

Open :mod:`~instag_hf.refresh.runner` first (``refresh``, ``load_config``); ``config`` is the
YAML file, ``tag_store`` the tags kept on the Hub so unchanged rows are never tagged again.
"""

from instag_hf.refresh.config import load_config
from instag_hf.refresh.runner import refresh

__all__ = ["load_config", "refresh"]
