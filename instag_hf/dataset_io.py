"""Where a dataset comes from and goes to: a Hub id, a ``save_to_disk`` folder, or a data file.

The CLI's ``--dataset`` and a refresh config's ``source`` accept any of:

- a data file: ``.json``, ``.jsonl``, ``.parquet`` or ``.csv`` (read with ``datasets``' own
  builders, one split called ``train``);
- a local folder: written by ``save_to_disk`` (a ``Dataset`` or a ``DatasetDict``), or a
  folder of data files that ``load_dataset(folder)`` understands;
- a Hub dataset id (``user/name``), read with ``load_dataset`` from ``HF_ENDPOINT``.

A local path wins over a Hub id of the same spelling.

    >>> ds = load_source("pool.jsonl")                      # doctest: +SKIP
    >>> source_revision("pool.jsonl")[:7]                   # doctest: +SKIP
    'file:3f2a9c1'
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, load_dataset, load_from_disk
from datasets.exceptions import DatasetGenerationError

from instag_hf.errors import ConfigurationError, HubError, OutputError
from instag_hf.hub_errors import HUB_ERRORS, first_line, hub_error, not_found

#: Data-file extension -> the ``datasets`` builder that reads it.
FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}
#: Extensions :func:`write_dataset` writes as one file; any other path becomes a folder.

__all__ = [
    "FILE_BUILDERS",
    "is_hub_id",
    "is_local",
    "is_saved_dataset",
    "load_source",
    "source_revision",
    "write_dataset",
]


def load_source(source: str, split: str | None = None, revision: str | None = None) -> Dataset:
    """Load one split of a dataset given as a data file, a local folder or a Hub id.

    Args:
        source: Path of a data file or folder, or a Hub dataset id.
        split: Split to read; ``None`` takes ``train``, or the only split there is.
        revision: Branch, tag or commit of a Hub dataset (ignored for local paths).

    Returns:
        A ``datasets.Dataset``.

    Raises:
        ConfigurationError: The path or id does not exist, cannot be read, or has no such split.
        HubError: The Hub could not be reached.

    Example:
        >>> load_source("alpaca.parquet").column_names  # doctest: +SKIP
        ['instruction', 'input', 'output']
    """
    path = Path(source).expanduser()
    if path.is_file():
        loaded = _read_file(path, split)
    elif path.is_dir():
        loaded = _read_folder(path, split)
    elif _looks_like_path(source):
        raise ConfigurationError(f"No such file or folder: {source!r}")
    else:
        loaded = _read_hub(source, split, revision)
    return _pick_split(loaded, split, source)


def is_local(source: str) -> bool:
    """True when ``source`` names an existing local file or folder (else it is a Hub id)."""
    return Path(source).expanduser().exists()


def is_hub_id(source: str) -> bool:
    """True when ``source`` reads as a Hub dataset id: no local path of that name, not path-like."""
    return not is_local(source) and not _looks_like_path(source)


def is_saved_dataset(source: str | os.PathLike[str]) -> bool:
    """True when ``source`` is a folder written by ``save_to_disk`` (read with ``load_from_disk``)."""
    path = Path(source).expanduser()
    return (path / "state.json").is_file() or (path / "dataset_dict.json").is_file()


def source_revision(source: str, revision: str | None = None) -> str:
    """What identifies the current content of ``source``, to tell whether it changed.

    A Hub dataset gives its commit sha (of ``revision``, default the main branch); a local
    file or folder gives ``sha256:`` of its bytes (file names included for a folder).

    Raises:
        ConfigurationError: The path or id does not exist.
        HubError: The Hub could not be reached.
    """
    if is_local(source):
        return "sha256:" + _content_hash(Path(source).expanduser())
    if _looks_like_path(source):
        raise ConfigurationError(f"No such file or folder: {source!r}")
    from huggingface_hub import HfApi

    try:
        sha = HfApi().dataset_info(source, revision=revision).sha
    except (*HUB_ERRORS, OSError) as error:
        raise hub_error(error, f"read the revision of {source!r}", repo_id=source, revision=revision) from error
    # huggingface_hub types ``sha`` as optional; without it a change could not be detected.
    if sha is None:
        raise HubError(f"Cannot read the revision of {source!r} from the Hub: the answer carried no commit sha.")
    return sha


def write_dataset(ds: Dataset, destination: str | os.PathLike[str]) -> Path:
    """Write ``ds`` so that :func:`load_source` reads it back unchanged.

    A path ending in ``.parquet``, ``.jsonl`` or ``.json`` (JSON Lines) becomes one file;
    any other path becomes a ``save_to_disk`` folder, which keeps the exact features.

    Raises:
        ConfigurationError: The extension is one that cannot hold the tag lists (.csv).
        OutputError: The destination cannot be written.
    """
    path = Path(destination).expanduser()
    try:
        if path.suffix == ".parquet":
            path.parent.mkdir(parents=True, exist_ok=True)
            ds.to_parquet(str(path))
        elif path.suffix in (".jsonl", ".json"):
            path.parent.mkdir(parents=True, exist_ok=True)
            ds.to_json(str(path), lines=True, force_ascii=False)
        elif path.suffix in FILE_BUILDERS:  # .csv cannot hold the list columns the chain adds
            raise ConfigurationError(
                f"Cannot write {str(path)!r}: write .parquet, .jsonl or a folder (CSV cannot hold tag lists)."
            )
        else:
            # With no rows, datasets writes no shard at all and cannot read the folder back.
            ds.save_to_disk(str(path), num_shards=1 if len(ds) == 0 else None)
    except OSError as error:
        raise OutputError(f"Cannot write {str(path)!r}: {_first_line(error)}", path=str(path)) from error
    return path


def _looks_like_path(source: str) -> bool:
    # "name" and "user/name" are Hub ids; "./x", "/x", "~/x", "x.jsonl" and "a/b/c" are paths.
    return source.startswith((".", "/", "~")) or Path(source).suffix.lower() in FILE_BUILDERS or source.count("/") > 1


def _read_file(path: Path, split: str | None) -> Dataset:
    builder = FILE_BUILDERS.get(path.suffix.lower())
    if builder is None:
        known = ", ".join(FILE_BUILDERS)
        raise ConfigurationError(f"Cannot read {str(path)!r}: unknown file type; use one of {known} or a folder.")
    if split not in (None, "train"):
        raise ConfigurationError(f"A single data file has one split, 'train'; got --split {split!r}.")
    try:
        return load_dataset(builder, data_files=str(path), split="train")
    except Exception as error:  # datasets raises many unrelated types for one unreadable file
        raise ConfigurationError(f"Cannot read {str(path)!r} as {builder}: {_first_line(error)}") from error


def _read_folder(path: Path, split: str | None) -> Dataset | DatasetDict:
    if is_saved_dataset(path):
        try:
            return load_from_disk(str(path))
        except Exception as error:  # a damaged save_to_disk folder
            raise ConfigurationError(f"Cannot read the saved dataset {str(path)!r}: {_first_line(error)}") from error
    try:
        return load_dataset(str(path), split=split)
    except ValueError as error:  # an unknown split is a ValueError too
        raise ConfigurationError(f"Cannot read {str(path)!r}: {_first_line(error)}") from error
    except Exception as error:
        raise ConfigurationError(f"Cannot read the folder {str(path)!r} as a dataset: {_first_line(error)}") from error


def _read_hub(repo_id: str, split: str | None, revision: str | None) -> Dataset | DatasetDict:
    from datasets.exceptions import DatasetNotFoundError

    try:
        return load_dataset(repo_id, split=split, revision=revision)
    except DatasetNotFoundError as error:
        raise ConfigurationError(not_found(repo_id)) from error
    except (*HUB_ERRORS, ConnectionError) as error:
        raise hub_error(error, f"load {repo_id!r} from the Hub", repo_id=repo_id, revision=revision) from error
    except ValueError as error:  # an unknown split
        raise ConfigurationError(f"Cannot load {repo_id!r}: {_first_line(error)}") from error


def _pick_split(loaded: Any, split: str | None, source: str) -> Dataset:
    if isinstance(loaded, Dataset):
        return loaded
    if not isinstance(loaded, DatasetDict):
        raise ConfigurationError(f"{source!r} did not load as a dataset (got {type(loaded).__name__}).")
    names = list(loaded)
    if split is None:
        if "train" in loaded or len(names) == 1:
            return loaded["train" if "train" in loaded else names[0]]
        raise ConfigurationError(f"{source!r} has splits {names}: choose one with --split.")
    if split not in loaded:
        raise ConfigurationError(f"{source!r} has no split {split!r}; its splits are {names}.")
    return loaded[split]


def _content_hash(path: Path) -> str:
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode("utf-8") + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _first_line(error: BaseException) -> str:
    # datasets wraps the reason ("JSON parse error ... in row 1") in a generic message.
    while isinstance(error, DatasetGenerationError) and error.__cause__ is not None:
        error = error.__cause__
    return first_line(error)
