"""The card's "Reproduce" section: the Python calls and the ``instag run`` line that rebuild the subset.

What it knows comes from the card's inputs: the source as it was read (a Hub id at its
revision, or a local file or folder), the tagger's prompt and model choice, the normalizer
settings that differ from the defaults (as ``TagNormalizer`` keywords and as the CLI flags of
:data:`~instag_hf.normalization.config.CLI_FLAGS`) and the sampling arguments of the
selection record.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from instag_hf.dataset_io import FILE_BUILDERS, is_hub_id, is_saved_dataset
from instag_hf.normalization.config import CLI_FLAGS
from instag_hf.publishing.markdown import Safe
from instag_hf.sampling.sampler import SelectionInfo
from instag_hf.tagging.prompts import BUILTIN_TEMPLATES

if TYPE_CHECKING:
    from instag_hf.normalization.normalizer import TagNormalizer

__all__ = ["reproduction"]


def reproduction(
    source: str | None,
    revision: str | None,
    split: str,
    repo_id: str | None,
    tagger: Mapping[str, Any] | None,
    normalizer: TagNormalizer | None,
    selection: SelectionInfo | None,
    column: str,
    tagger_object: Any | None = None,
) -> dict[str, Any]:
    """The template's ``repro`` context: what the snippet loads, calls and passes.

    Args:
        source, revision, split: The source dataset as it was read, and the subset's split.
        repo_id: Where the subset is pushed (a placeholder when ``None``).
        tagger: The card's tagger context (its ``template`` names the prompt).
        normalizer: The fitted normalizer, whose non-default settings are written.
        selection: The subset's selection record (``n``, strategy, seed, targets).
        column: The tag column, passed to ``sample`` when it is not the default.
        tagger_object: The Tagger itself, whose model, server and provider choice is written.

    Returns:
        The values the template's reproduction section renders.
    """
    template: str | None = "paper"  # what Tagger() uses when nothing says otherwise
    chosen: list[tuple[str, Any]] = []  # the model choice, which decides the tags as much as the prompt
    if tagger is not None:
        name = tagger.get("template")
        template = name if name in BUILTIN_TEMPLATES else None  # custom: its text is not in the card
    if tagger_object is not None:
        chosen = [(k, getattr(tagger_object, k)) for k in ("model", "server", "provider") if getattr(tagger_object, k)]
    if tagger is not None and tagger.get("answer") not in (None, "paper"):
        chosen.append(("answer", tagger["answer"]))  # the answer form decides the tags as much as the prompt
    settings: list[tuple[str, Any]] = []
    if normalizer is not None:
        defaults = type(normalizer.config)().to_dict()
        settings = [(Safe(k), v) for k, v in normalizer.config.to_dict().items() if defaults[k] != v]
    arguments: list[tuple[str, Any]] = []
    if selection is not None:
        arguments = [("n", selection.n_requested), ("strategy", selection.strategy), ("seed", selection.seed)]
        arguments += [(k, getattr(selection, k)) for k in ("target_coverage", "target_mean_tags")
                      if getattr(selection, k) is not None]  # fmt: skip
    options = [(f"--{k}", v) for k, v in chosen]
    options += [(f"--{k.replace('_', '-')}", v) for k, v in arguments if v is not None]
    options += [_cli_option(k, v) for k, v in settings if k in CLI_FLAGS]
    if column != "instag_tags":
        arguments.append(("tag_column", column))
    local = source is not None and not is_hub_id(source)
    return {
        "source": source or "<source dataset>",
        **_loader(source if local else None),
        "revision": None if local else revision,
        "split": split,
        "template": template,
        "tagger_arguments": [(Safe(k), v) for k, v in chosen],
        "repo_id": repo_id or "<user>/<dataset>",
        "normalizer_settings": settings,
        "sample_arguments": [(Safe(k), v) for k, v in arguments],
        "cli_options": [(Safe(flag), value) for flag, value in options],
    }


def _loader(local: str | None) -> dict[str, Any]:
    """How the reproduction snippet reads a local source the way it was read.

    A data file loads through its builder (``load_dataset('json', data_files=...)``), a
    ``save_to_disk`` folder through ``load_from_disk``; ``load_dataset(path)`` reads neither.
    """
    if not local:
        return {"builder": None, "from_disk": False, "from_disk_splits": False}
    path = Path(local).expanduser()
    return {
        "builder": None if path.is_dir() else FILE_BUILDERS.get(path.suffix.lower()),
        "from_disk": is_saved_dataset(path),
        "from_disk_splits": (path / "dataset_dict.json").is_file(),
    }


def _cli_option(name: str, value: Any) -> tuple[str, Any]:
    """The ``instag run`` flag of a setting: a switch's ``--no-...`` flag stands alone."""
    flag = CLI_FLAGS[name]
    return (flag, None) if flag.startswith("--no-") else (flag, value)
