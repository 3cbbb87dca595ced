"""Convert a GGUF model to a bf16 safetensors folder that vLLM can load.

Run by :mod:`instag_hf.local_vllm` with the vLLM venv's Python (which has transformers,
``gguf`` and ``accelerate``), never imported by instag_hf: it imports nothing of ours.

    python gguf_to_safetensors.py MODEL.gguf OUT_DIR

transformers de-quantizes the GGUF tensors as it reads them; the quantization config it
records is dropped before saving, or ``save_pretrained`` refuses ("not serializable"). The
folder is written beside OUT_DIR and renamed into place, so a killed conversion never
leaves a half-written model that a later run would take for a finished one.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def convert(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model.hf_quantizer = None  # type: ignore[assignment]  # what makes save_pretrained refuse
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    partial.rename(out)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python gguf_to_safetensors.py MODEL.gguf OUT_DIR")
    convert(Path(sys.argv[1]), Path(sys.argv[2]))
