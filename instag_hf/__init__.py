"""instag_hf: InsTag open-set instruction tagging for Hugging Face datasets.

ds = ds.map(instag_hf.tag, batched=True)            # + instag_raw_tags, instag_error
normalizer = instag_hf.TagNormalizer().fit(ds)
ds = ds.map(normalizer, batched=True)                # + instag_tags
subset = instag_hf.sample(ds, n=6000)
instag_hf.push_to_hub(subset, "me/curated", card=instag_hf.build_card(subset, pool=ds))
instag_hf.compare(ds_small_tagger, ds_large_tagger).scores["semantic"].micro_f1
"""

from instag_hf import errors
from instag_hf._version import __version__
from instag_hf.agreement import compare
from instag_hf.analysis.stats import TagStats, analyze
from instag_hf.normalization.normalizer import TagNormalizer
from instag_hf.publishing.card import build_card
from instag_hf.publishing.hub import push_to_hub, save
from instag_hf.sampling.sampler import SelectionInfo, sample, selection_info
from instag_hf.tagging.tagger import Tagger, tag

__all__ = [
    "SelectionInfo",
    "TagNormalizer",
    "TagStats",
    "Tagger",
    "__version__",
    "analyze",
    "build_card",
    "compare",
    "errors",
    "push_to_hub",
    "sample",
    "save",
    "selection_info",
    "tag",
]
