"""Stage 5, publishing: the dataset card, its plots, and the Hub (or a local folder).

Open :mod:`~instag_hf.publishing.card` (``build_card``) and :mod:`~instag_hf.publishing.hub`
(``push_to_hub``, ``save``); the card's text is ``templates/instag_subset.md.jinja``, and
the files both write, at which paths, are :mod:`~instag_hf.publishing.layout`'s.
"""

from instag_hf.publishing.card import build_card
from instag_hf.publishing.hub import push_to_hub, save

__all__ = ["build_card", "push_to_hub", "save"]
