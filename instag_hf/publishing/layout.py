"""The files of a published subset, at the same paths in a Hub repo and in a local folder.

    README.md                             the card; its YAML merged with the `configs` and
                                          `dataset_info` that `datasets` reads and writes
    data/train-00000-of-00001.parquet     shards named as `Dataset.push_to_hub` names them
    normalizer.json                       the fitted TagNormalizer (when there is one)
    plots/top_tags.png, plots/tags_per_row.png

so ``load_dataset("me/curated")`` (or ``load_dataset("out/curated")``) reads the subset back.
:func:`stage` writes them all under one folder: the local folder itself for ``save``, a
staging folder that becomes one commit for ``push_to_hub``. ``instag card`` writes the card
and its plots alone, through the same :func:`write_card_files`.

Merging, not overwriting: an existing README keeps its YAML keys, its other configs and
the other splits of the ``default`` config; the card's own keys and this split replace
theirs, and the body is the card's. Shards of this split left from an earlier push are
listed as stale, to be deleted with the same write.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from datasets import Dataset, DatasetInfo, SplitDict, SplitInfo
from datasets import config as datasets_config
from huggingface_hub import DatasetCard, DatasetCardData

from instag_hf.datasets_internals import DatasetInfosDict, MetadataConfigs, convert_file_size_to_int, estimated_nbytes
from instag_hf.errors import HubError

if TYPE_CHECKING:
    from instag_hf.normalization.normalizer import TagNormalizer

README = "README.md"
CONFIG_NAME = "default"
#: Where the fitted normalizer goes, beside the card (locally and in the Hub repo).
NORMALIZER_FILENAME = "normalizer.json"
#: Folder of the parquet shards, as ``Dataset.push_to_hub`` names it for the default config.
DATA_DIR = "data"

__all__ = [
    "DATA_DIR",
    "NORMALIZER_FILENAME",
    "README",
    "Layout",
    "data_split",
    "load_readme",
    "stage",
    "write_card_files",
]


@dataclass
class Layout:
    """Files staged under ``root`` (paths relative to it) and shards to delete."""

    root: Path
    files: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)


def data_split(ds: Dataset) -> str:
    """The split name a dataset is written under, chosen as ``Dataset.push_to_hub`` does."""
    return str(ds.split) if ds.split is not None else "train"


def write_card_files(root: Path, card: DatasetCard, plots: Mapping[str, bytes] | None = None) -> list[str]:
    """Write ``card`` as ``root/README.md`` and ``plots`` (path -> PNG bytes) beside it.

    Args:
        root: The folder; created if missing.
        card: The card to write as it is.
        plots: The images it links to; ``None`` takes the card's own ``plots``, if any.

    Returns:
        The paths written, relative to ``root``: README first, then the plots in path order.

    Raises:
        OSError: A file cannot be written; the caller says what that means for it.
    """
    images = getattr(card, "plots", {}) if plots is None else plots
    # DatasetCard.save writes str(card) as UTF-8 with newlines untranslated: these bytes.
    return _write_files(root, {README: str(card).encode("utf-8"), **dict(sorted(images.items()))})


def _write_files(root: Path, files: Mapping[str, bytes]) -> list[str]:
    root.mkdir(parents=True, exist_ok=True)
    for path, data in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    return list(files)


def load_readme(path: str | Path, where: str) -> DatasetCard:
    """Read an existing README to merge the card into, failing now if merging would fail later.

    Raises:
        HubError: Its YAML has ``configs`` or ``dataset_info`` that ``datasets`` cannot read
            (``where`` names the README in the message).
    """
    import yaml

    try:
        readme = DatasetCard.load(path)
        # Read now what merging will read, so a bad README fails before anything is written.
        MetadataConfigs.from_dataset_card_data(readme.data)
        DatasetInfosDict.from_dataset_card_data(readme.data)
    except (ValueError, TypeError, KeyError, AttributeError, yaml.YAMLError) as error:
        raise _bad_readme(where, error) from error
    return readme


def _bad_readme(where: str, error: BaseException) -> HubError:
    detail = " ".join(str(error).split()) or type(error).__name__
    return HubError(
        f"The {where} has YAML metadata that datasets cannot read ({detail}): fix it (the 'configs' and "
        f"'dataset_info' keys are the ones datasets reads) or remove them, then publish again; nothing was written."
    )


def stage(
    subset: Dataset,
    card: DatasetCard,
    normalizer: TagNormalizer | None,
    root: Path,
    readme: DatasetCard | None,
    existing: dict[str, int],
    max_shard_size: int | str | None,
    extra_files: Mapping[str, bytes] | None = None,
    *,
    readme_name: str = README,
) -> Layout:
    """Write every file of the layout under ``root``; list them and the shards they replace.

    Args:
        subset: The rows, written as parquet shards.
        card: The card; merged into ``readme`` and written with its plots.
        normalizer: Saved as ``normalizer.json`` when given.
        root: The folder to write under.
        readme: The README already at the destination, or ``None``.
        existing: Files already at the destination, path -> size (for the stale shards).
        max_shard_size: Largest parquet shard (default: ``datasets``').
        extra_files: More files, path -> bytes; they may not replace any of the above.
        readme_name: Whose README ``readme`` is, for messages.

    Returns:
        The :class:`Layout`: files written (shards, README, plots, normalizer, extras) and
        stale shards.

    Raises:
        HubError: The existing README has YAML that ``datasets`` cannot read, or an extra
            file would replace part of the subset.
        OSError: A file cannot be written.
    """
    layout = Layout(root)
    split = data_split(subset)
    nbytes = estimated_nbytes(subset)  # what Dataset.push_to_hub sizes its shards by
    num_shards = int(nbytes / convert_file_size_to_int(max_shard_size or datasets_config.MAX_SHARD_SIZE)) + 1
    num_shards = min(num_shards, max(len(subset), 1))  # a shard holds at least one row
    (root / DATA_DIR).mkdir(parents=True, exist_ok=True)
    uploaded = 0
    for index in range(num_shards):
        path = f"{DATA_DIR}/{split}-{index:05d}-of-{num_shards:05d}.parquet"
        subset.shard(num_shards=num_shards, index=index, contiguous=True).to_parquet(str(root / path))
        uploaded += (root / path).stat().st_size
        layout.files.append(path)
    ours = f"{DATA_DIR}/{split}-"
    replaced = {p: size for p, size in existing.items() if p.startswith(ours) and p.endswith(".parquet")}
    layout.stale = sorted(set(replaced) - set(layout.files))
    split_info = SplitInfo(name=split, num_bytes=nbytes, num_examples=len(subset))
    try:
        merged = _merged_card(card, readme, subset, split_info, uploaded, sum(replaced.values()))
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        if readme is None:
            raise  # nothing of the user's was read: the fault is ours
        raise _bad_readme(readme_name, error) from error
    layout.files += write_card_files(root, merged, plots=getattr(card, "plots", {}))
    if normalizer is not None:
        normalizer.save(root / NORMALIZER_FILENAME)
        layout.files.append(NORMALIZER_FILENAME)
    extras = dict(sorted((extra_files or {}).items()))
    for path in extras:
        if path in layout.files or path.startswith(f"{DATA_DIR}/"):
            raise HubError(f"extra file {path!r} would replace part of the published subset: choose another path.")
    layout.files += _write_files(root, extras)
    return layout


def _merged_card(
    card: DatasetCard,
    readme: DatasetCard | None,
    subset: Dataset,
    split_info: SplitInfo,
    uploaded: int,
    deleted: int,
) -> DatasetCard:
    """The card with the YAML ``datasets`` needs, merged into an existing README's."""
    if readme is None:
        data = DatasetCardData()
    else:
        # A DatasetCard parses its YAML into DatasetCardData; RepoCard types it only as CardData.
        assert isinstance(readme.data, DatasetCardData)
        data = readme.data  # readme: loaded for this push only
    for key, value in card.data.to_dict().items():
        if key not in ("configs", "dataset_info"):
            data[key] = value
    configs = MetadataConfigs.from_dataset_card_data(data)
    files = {item["split"]: item["path"] for item in configs.get(CONFIG_NAME, {}).get("data_files", [])
             if isinstance(item, dict)}  # fmt: skip
    for item in MetadataConfigs.from_dataset_card_data(card.data).get(CONFIG_NAME, {}).get("data_files", []):
        files[item["split"]] = item["path"]
    files[split_info.name] = f"{DATA_DIR}/{split_info.name}-*"
    config = {**configs.get(CONFIG_NAME, {}), "data_files": [{"split": s, "path": p} for s, p in files.items()]}
    MetadataConfigs({CONFIG_NAME: config}).to_dataset_card_data(data)
    DatasetInfosDict({CONFIG_NAME: _dataset_info(data, subset, split_info, uploaded, deleted)}).to_dataset_card_data(
        data
    )
    merged = DatasetCard(card.content)  # a copy: the caller's card is left as it was
    merged.data = data
    return merged


def _dataset_info(
    data: DatasetCardData, subset: Dataset, split_info: SplitInfo, uploaded: int, deleted: int
) -> DatasetInfo:
    # As Dataset.push_to_hub does: other splits of the config are kept (they must share the
    # features), and the sizes are adjusted by what this push removed and added.
    previous = DatasetInfosDict.from_dataset_card_data(data).get(CONFIG_NAME)
    others = [
        s for s in (previous.splits.values() if previous and previous.splits else []) if s.name != split_info.name
    ]
    if others and previous.features != subset.features:
        raise HubError(
            f"The repo's split(s) {[s.name for s in others]} have other columns than this subset: publish to a "
            "new repo, or delete those splits first."
        )
    info = DatasetInfo(config_name=CONFIG_NAME, features=subset.features, splits=SplitDict())
    for split in [*others, split_info]:
        info.splits.add(split)
    download = (previous.download_size or 0) - deleted if others else 0
    info.download_size = download + uploaded
    info.dataset_size = sum(split.num_bytes or 0 for split in info.splits.values())
    info.size_in_bytes = info.download_size + info.dataset_size
    return info
