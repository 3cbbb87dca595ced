"""Tag agreement between two taggers (exact and semantic tag F1), as an ``evaluate`` metric.

The figures are computed by ``instag_hf.agreement.matching`` (the normalizer's rule key, the
packaged embedding model, scipy's maximum bipartite matching), so this module needs
``instag_hf`` installed; it loads offline from the installed package
(``evaluate.load(instag_hf.agreement.METRIC_PATH)``) or from a copy of this folder.
"""

from __future__ import annotations

import datasets
import evaluate

from instag_hf.agreement.matching import DEFAULT_THRESHOLD, KINDS, TagMatcher

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
How well one tagger's open-set tags agree with a reference tagger's on the same queries, as
InsTag measured its distilled tagger against ChatGPT (exact-match tag F1 31.8%, semantic F1
73.4%). Exact matching compares tag strings as written (`exact_raw`) and after the rule key
of InsTag's normalization: lowercase, special characters to spaces, Porter stems (`exact`).
Semantic matching pairs each predicted tag with at most one reference tag whose embedding's
cosine similarity exceeds a threshold (0.8 by default), as a maximum bipartite matching per
row. Precision, recall and F1 are given micro-averaged (counts summed over rows) and
macro-averaged (mean of the per-row figures). A row where neither side has a tag is left out
(`*_empty_rows` counts them); a row where one side is empty scores 0.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `str`): the tags of the tagger under test, per query.
    references (`list` of `list` of `str`): the reference tags, per query, in the same order.
        A tag repeated within a row counts once; empty strings and nulls are not tags.
    mode (`str`): "all" (default), "exact" (`exact_raw` and `exact`) or "semantic".
    threshold (`float`): cosine similarity a semantic match must exceed (default 0.8).
    embedding_model (`str`, optional): Hub id or folder of the embedding model; default the
        packaged sentence-transformers/all-MiniLM-L6-v2 (or INSTAG_EMBEDDING_MODEL).
Returns:
    For each kind K scored (`exact_raw`, `exact`, `semantic`): `K_micro_precision`,
    `K_micro_recall`, `K_micro_f1`, `K_macro_precision`, `K_macro_recall`, `K_macro_f1`
    (floats in [0, 1]), `K_matched`, `K_predicted`, `K_referenced` (tag counts summed over
    rows), `K_rows` (rows scored) and `K_empty_rows` (rows with no tag on either side);
    with semantic scores also `semantic_threshold` and `embedding_model`.
Examples:
    >>> agreement = evaluate.load(instag_hf.agreement.METRIC_PATH)
    >>> result = agreement.compute(predictions=[["Email writing", "poetry"]],
    ...                            references=[["email-writing"]], mode="exact")
    >>> result["exact_raw_micro_f1"], result["exact_micro_precision"], result["exact_micro_recall"]
    (0.0, 0.5, 1.0)
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class InstagAgreement(evaluate.Metric):
    """Exact and semantic tag precision, recall and F1 between two taggers."""

    def _info(self) -> evaluate.MetricInfo:
        tags = datasets.Sequence(datasets.Value("string"))
        return evaluate.MetricInfo(
            module_type="metric",
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": tags, "references": tags}),
            reference_urls=["https://arxiv.org/abs/2308.07074"],
        )

    def _compute(
        self,
        predictions: list[list[str]],
        references: list[list[str]],
        mode: str = "all",
        threshold: float = DEFAULT_THRESHOLD,
        embedding_model: str | None = None,
    ) -> dict[str, float | int | str | None]:
        matcher = TagMatcher(mode=mode, threshold=threshold, embedding_model=embedding_model)
        scores = matcher.match(predictions, references).scores
        out: dict[str, float | int | str | None] = {}
        for kind in KINDS:
            if kind in scores:
                for name, value in scores[kind].to_dict().items():
                    if name != "kind":
                        out[f"{kind}_{name}"] = value
        if matcher.semantic:
            out["semantic_threshold"] = matcher.threshold
            out["embedding_model"] = matcher.resolved_model_id()
        return out
