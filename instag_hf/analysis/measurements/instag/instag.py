"""InsTag diversity, coverage and complexity of tagged samples, as an ``evaluate`` measurement.

Self-contained (only ``evaluate`` and ``datasets``) so that it loads from this folder, from
an installed ``instag_hf`` (``evaluate.load(instag_hf.analysis.stats.MEASUREMENT_PATH)``) or from
a copy pushed to a Hub Space, without importing ``instag_hf``.
"""

from __future__ import annotations

import datasets
import evaluate

_CITATION = """\
@inproceedings{lu2024instag,
  title={#InsTag: Instruction Tagging for Analyzing Supervised Fine-tuning of Large Language Models},
  author={Lu, Keming and Yuan, Hongyi and Yuan, Zheng and Lin, Runji and Lin, Junyang and Tan, Chuanqi
          and Zhou, Chang and Zhou, Jingren},
  booktitle={The Twelfth International Conference on Learning Representations},
  year={2024}
}
"""

_DESCRIPTION = """\
InsTag measures an instruction dataset by the open-set tags of its samples: diversity is the
number of distinct tags the samples cover (as a rate, divided by the size of the whole tag
vocabulary), complexity is the mean number of tags per sample.
"""

_KWARGS_DESCRIPTION = """
Args:
    tags (`list` of `list` of `str`): the (normalized) tags of each sample. A tag repeated
        within one sample counts once.
    vocabulary_size (`int`, optional): size of the whole tag vocabulary (e.g. the pool's
        distinct tags); when given, `coverage` is reported.
Returns:
    diversity (`int`): distinct tags over all samples.
    coverage (`float` or `None`): diversity / vocabulary_size, `None` without vocabulary_size.
    complexity (`float`): mean number of distinct tags per sample (0.0 without samples).
Examples:
    >>> instag = evaluate.load("instag")  # or evaluate.load(instag_hf.analysis.stats.MEASUREMENT_PATH)
    >>> instag.compute(tags=[["math", "coding"], ["math"]], vocabulary_size=4)
    {'diversity': 2, 'coverage': 0.5, 'complexity': 1.5}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Instag(evaluate.Measurement):
    """InsTag diversity, coverage and complexity."""

    def _info(self) -> evaluate.MeasurementInfo:
        return evaluate.MeasurementInfo(
            module_type="measurement",
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"tags": datasets.Sequence(datasets.Value("string"))}),
            reference_urls=["https://arxiv.org/abs/2308.07074"],
        )

    def _compute(self, tags: list[list[str]], vocabulary_size: int | None = None) -> dict[str, float | int | None]:
        if vocabulary_size is not None and (isinstance(vocabulary_size, bool) or vocabulary_size < 0):
            raise ValueError(f"vocabulary_size must be a non-negative integer, got {vocabulary_size!r}")
        distinct: set[str] = set()
        total = 0
        for sample_tags in tags:
            # Samples are tag *sets* in InsTag; nulls are not tags.
            unique = {tag for tag in sample_tags or () if tag is not None}
            distinct |= unique
            total += len(unique)
        coverage = None
        if vocabulary_size is not None:
            coverage = len(distinct) / vocabulary_size if vocabulary_size else 0.0
        return {
            "diversity": len(distinct),
            "coverage": coverage,
            "complexity": total / len(tags) if tags else 0.0,
        }
