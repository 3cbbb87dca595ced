"""Publishing a curated subset: to a Hub dataset repo in one commit, or to a local folder.

    info = instag_hf.push_to_hub(subset, "me/curated", card=card, normalizer=normalizer)
    instag_hf.save(subset, "out/curated", card=card, normalizer=normalizer)   # same layout

Both write the same files, at the same paths:

    README.md                             the card; its YAML merged with the `configs` and
                                          `dataset_info` that `datasets` reads and writes
    data/train-00000-of-00001.parquet     shards named as `Dataset.push_to_hub` names them
    normalizer.json                       the fitted TagNormalizer (when there is one)
    plots/top_tags.png, plots/tags_per_row.png

so ``load_dataset("me/curated")`` (or ``load_dataset("out/curated")``) reads the subset back.

Merging, not overwriting: an existing README keeps its YAML keys, its other configs and
the other splits of the ``default`` config; the card's own keys and this split replace
theirs, and the body is the card's. Shards of this split left from an earlier push are
deleted in the same commit.

Atomicity: everything goes into one ``HfApi.create_commit`` whose parent is the head the
README was read from. Parquet shards are uploaded to LFS storage before the commit, but no
ref moves unless the commit succeeds, so a failure leaves the repo as it was.

Pushing identical content again makes no commit: the Hub's preupload answer carries the
oid of each file already there, ``huggingface_hub`` drops the unchanged ones and, with
none left, returns the current head without committing. The bytes are reproducible for
that: parquet written by ``datasets``, PNGs without timestamps, the normalizer's canonical
JSON, and a README whose only time-dependent value is the card's date (inject ``date=``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import huggingface_hub
from datasets import Dataset, DatasetInfo, SplitDict, SplitInfo
from datasets import config as datasets_config
from datasets.info import DatasetInfosDict
from datasets.utils.metadata import MetadataConfigs
from datasets.utils.py_utils import convert_file_size_to_int
from huggingface_hub import CommitInfo, CommitOperationAdd, CommitOperationDelete, DatasetCard, DatasetCardData, HfApi
from huggingface_hub.errors import HfHubHTTPError, HFValidationError
from huggingface_hub.hf_api import RepoFile

from instag_hf._version import __version__
from instag_hf.dataset_io import TransportError, scrub_secrets, unreachable_hub
from instag_hf.errors import CardError, HubError, OutputError
from instag_hf.publishing.card import DATA_DIR, NORMALIZER_FILENAME, build_card, data_split

if TYPE_CHECKING:
    from instag_hf.normalization.normalizer import TagNormalizer

logger = logging.getLogger(__name__)

README = "README.md"
CONFIG_NAME = "default"

__all__ = ["TransportError", "hub_bars_follow_datasets", "push_to_hub", "save", "unreachable_hub"]


@dataclass
class _Layout:
    """Files staged under ``root`` (paths relative to it) and shards to delete."""

    root: Path
    files: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)


def push_to_hub(
    subset: Dataset,
    repo_id: str,
    card: DatasetCard | None = None,
    normalizer: TagNormalizer | None = None,
    private: bool | None = None,
    token: str | bool | None = None,
    create_pr: bool = False,
    commit_message: str | None = None,
    *,
    max_shard_size: int | str | None = None,
    extra_files: Mapping[str, bytes] | None = None,
) -> CommitInfo:
    """Push the subset, its card, the normalizer and the plots to a Hub dataset repo in one commit.

    Args:
        subset: The rows to publish.
        repo_id: ``"user/name"`` (a ``datasets/`` prefix or a dataset URL is accepted).
        card: The card, usually from :func:`instag_hf.build_card`; built without a pool when
            ``None``. An :class:`~instag_hf.publishing.card.InstagCard` brings its plots and normalizer.
        normalizer: The fitted normalizer, saved as ``normalizer.json``.
        private: Visibility of the repo when it is created (an existing repo keeps its own).
        token: Hub token; ``None`` lets ``huggingface_hub`` find one (``HF_TOKEN``, login).
        create_pr: Open a pull request (``refs/pr/N``) instead of committing to ``main``.
        commit_message: Title of the commit.
        max_shard_size: Largest parquet shard, as in ``Dataset.push_to_hub`` (default 500MB).
        extra_files: More files for the same commit, repo path -> bytes (a refresh's state,
            say); they may not replace the data, the card, the normalizer or the plots.

    Returns:
        The ``huggingface_hub.CommitInfo``; when nothing changed, that of the current head
        (no commit is made).

    Raises:
        HubError: The Hub refused or failed (bad token, no write access, a repo id of
            another type, server down, commit rejected); nothing was committed.
        CardError: ``card`` and ``normalizer`` describe different normalizers.

    Example:
        >>> info = instag_hf.push_to_hub(subset, "me/curated", card=card)  # doctest: +SKIP
        >>> info.oid  # doctest: +SKIP
        '3f1c...'
    """
    repo_id = _dataset_repo_id(repo_id)
    card, normalizer = _complete(subset, card, normalizer)
    api = HfApi(token=token, library_name="instag_hf", library_version=_version())
    # Whatever token ends up in the request must not end up in a message.
    secrets = [token] if isinstance(token, str) else [huggingface_hub.get_token() or ""]
    try:
        with hub_bars_follow_datasets():
            info, head = _commit(api, repo_id, subset, card, normalizer, private, create_pr,
                                 commit_message or _default_message(subset), max_shard_size, extra_files)  # fmt: skip
    except (HfHubHTTPError, TransportError, HFValidationError) as error:
        failure = _hub_error(error, repo_id, api.endpoint, secrets)
    else:
        if info.oid == head and not create_pr:
            logger.info("Nothing changed in %s: no commit was made (head %s)", repo_id, head)
        return info
    # Raised here, outside the except block, so the client's exception (whose request
    # carries the Authorization header) is neither the cause nor the context.
    raise failure


def _commit(
    api: HfApi,
    repo_id: str,
    subset: Dataset,
    card: DatasetCard,
    normalizer: TagNormalizer | None,
    private: bool | None,
    create_pr: bool,
    commit_message: str,
    max_shard_size: int | str | None,
    extra_files: Mapping[str, bytes] | None,
) -> tuple[CommitInfo, str | None]:
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    head = api.repo_info(repo_id, repo_type="dataset").sha
    tree = api.list_repo_tree(repo_id, repo_type="dataset", revision=head, recursive=True)
    existing = {entry.path: entry.size for entry in tree if isinstance(entry, RepoFile)}
    readme = None
    where = f"{README} of {repo_id}"
    if README in existing:
        path = api.hf_hub_download(repo_id, README, repo_type="dataset", revision=head)
        readme = _load_readme(path, where)
    with tempfile.TemporaryDirectory(prefix="instag-push-") as staging:
        layout = _stage(
            subset, card, normalizer, Path(staging), readme, existing, max_shard_size, extra_files, readme_name=where
        )
        operations: list[CommitOperationAdd | CommitOperationDelete] = [
            CommitOperationAdd(p, str(layout.root / p)) for p in layout.files
        ]
        operations += [CommitOperationDelete(p) for p in layout.stale]
        logger.info("Pushing %d files (%d stale shards deleted) to dataset %s", len(layout.files),
                    len(layout.stale), repo_id)  # fmt: skip
        # parent_commit: the README was merged as of `head`; a commit made since then is a 412.
        info = api.create_commit(repo_id, operations, commit_message=commit_message, repo_type="dataset",
                                 create_pr=create_pr, parent_commit=head)  # fmt: skip
    return info, head


def save(
    subset: Dataset,
    folder: str | os.PathLike[str],
    card: DatasetCard | None = None,
    normalizer: TagNormalizer | None = None,
    *,
    max_shard_size: int | str | None = None,
    extra_files: Mapping[str, bytes] | None = None,
) -> Path:
    """Write the subset, its card, the normalizer and the plots to a folder, as the Hub repo would get them.

    Args:
        subset: The rows to write.
        folder: Target folder, created if missing; an existing README there is merged.
        card: The card; built without a pool when ``None``.
        normalizer: The fitted normalizer, saved as ``normalizer.json``.
        max_shard_size: Largest parquet shard (default 500MB).
        extra_files: More files, path -> bytes, as for :func:`push_to_hub`.

    Returns:
        The folder, which ``datasets.load_dataset(str(folder))`` reads.

    Raises:
        OutputError: The folder cannot be written (an ``OSError``; it used to be a HubError).
        CardError: ``card`` and ``normalizer`` describe different normalizers.

    Example:
        >>> instag_hf.save(subset, "out/curated", card=card)  # doctest: +SKIP
        PosixPath('out/curated')
    """
    root = Path(folder)
    card, normalizer = _complete(subset, card, normalizer)
    try:
        root.mkdir(parents=True, exist_ok=True)
        where = f"{README} in {str(root)!r}"
        readme = _load_readme(root / README, where) if (root / README).is_file() else None
        existing = {
            p.relative_to(root).as_posix(): p.stat().st_size for p in (root / DATA_DIR).glob("*") if p.is_file()
        }
        layout = _stage(
            subset, card, normalizer, root, readme, existing, max_shard_size, extra_files, readme_name=where
        )
        for path in layout.stale:
            (root / path).unlink()
    except OSError as error:
        raise OutputError(
            f"Cannot write the subset to {str(root)!r}: {error}. Check the path and its permissions."
        ) from None
    logger.info("Wrote %d files to %s", len(layout.files), root)
    return root


@contextlib.contextmanager
def hub_bars_follow_datasets() -> Iterator[None]:
    """Silence huggingface_hub's upload and download bars while ``datasets``' bars are off.

    ``HF_DATASETS_DISABLE_PROGRESS_BARS=1`` (or ``datasets.disable_progress_bars()``) is the
    one switch the README gives for quiet logs; huggingface_hub has a switch of its own,
    which is turned off for the block and on again afterwards (its upload bars have no
    group name, so only the global switch reaches them). ``HF_HUB_DISABLE_PROGRESS_BARS=0``
    still wins, and bars huggingface_hub already had off are left alone.
    """
    from datasets.utils.tqdm import are_progress_bars_disabled as datasets_quiet
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    if (not datasets_quiet() or are_progress_bars_disabled()
            or huggingface_hub.constants.HF_HUB_DISABLE_PROGRESS_BARS is False):  # fmt: skip
        yield
        return
    disable_progress_bars()
    try:
        yield
    finally:
        enable_progress_bars()


def _load_readme(path: str | Path, where: str) -> DatasetCard:
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


def _version() -> str:
    return __version__


def _default_message(subset: Dataset) -> str:
    return f"Upload {len(subset):,} rows selected with InsTag (instag_hf {_version()})"


def _complete(
    subset: Dataset, card: DatasetCard | None, normalizer: TagNormalizer | None
) -> tuple[DatasetCard, TagNormalizer | None]:
    if card is None:
        return build_card(subset, normalizer=normalizer), normalizer
    described = getattr(card, "normalizer", None)
    if normalizer is not None and described is not None and normalizer.content_hash != described.content_hash:
        raise CardError(
            "The card describes another normalizer than the one given (content hashes differ): build the card "
            "with the same normalizer, or leave normalizer=None to publish the card's."
        )
    return card, normalizer if normalizer is not None else described


def _dataset_repo_id(repo_id: str) -> str:
    text = str(repo_id).strip()
    for prefix in (huggingface_hub.constants.ENDPOINT + "/", "https://huggingface.co/", "hf://"):
        text = text.removeprefix(prefix)
    parts = text.strip("/").split("/")
    if len(parts) == 3 and parts[0] in ("models", "spaces"):
        raise HubError(
            f"{repo_id!r} names a {parts[0][:-1]} repo, but subsets are published as dataset repos: "
            f"pass a dataset repo id such as '{parts[1]}/{parts[2]}'.",
            repo_id=str(repo_id),
        )
    if len(parts) == 3 and parts[0] == "datasets":
        parts = parts[1:]
    try:
        huggingface_hub.utils.validate_repo_id("/".join(parts))
    except HFValidationError as error:
        raise HubError(f"{repo_id!r} is not a Hub repo id ({error}): write it as 'user/name'.") from None
    if len(parts) != 2:
        raise HubError(f"{repo_id!r} has no namespace: write it as 'user/name' (or 'org/name').", repo_id=str(repo_id))
    return "/".join(parts)


def _stage(
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
) -> _Layout:
    """Write every file of the layout under ``root``; list them and the shards they replace.

    Raises:
        HubError: The existing README (``readme_name`` says whose) has YAML that ``datasets``
            cannot read, or an extra file would replace part of the subset.
    """
    layout = _Layout(root)
    split = data_split(subset)
    nbytes = subset._estimate_nbytes()  # what Dataset.push_to_hub sizes its shards by
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
    merged.save(root / README)
    layout.files.append(README)
    if normalizer is not None:
        normalizer.save(root / NORMALIZER_FILENAME)
        layout.files.append(NORMALIZER_FILENAME)
    for path, image in sorted(getattr(card, "plots", {}).items()):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(image)
        layout.files.append(path)
    for path, data in sorted((extra_files or {}).items()):
        if path in layout.files or path.startswith(f"{DATA_DIR}/"):
            raise HubError(f"extra file {path!r} would replace part of the published subset: choose another path.")
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
        layout.files.append(path)
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


def _hub_error(error: Exception, repo_id: str, endpoint: str, secrets: list[str]) -> HubError:
    """A HubError saying what to do next, with no secret in its text."""
    if isinstance(error, HfHubHTTPError):
        status = error.response.status_code if error.response is not None else None
        detail = scrub_secrets(error.server_message or str(error).splitlines()[0], secrets)
        return HubError(_advice(status, repo_id, endpoint, detail), repo_id=repo_id, status=status)
    if isinstance(error, TransportError):
        return unreachable_hub(
            error,
            f"push to {repo_id}",
            secrets,
            then=f"then push again. Nothing was committed to {repo_id}.",
            repo_id=repo_id,
        )
    return HubError(f"Invalid Hub request for {repo_id!r}: {scrub_secrets(str(error), secrets)}", repo_id=repo_id)


def _advice(status: int | None, repo_id: str, endpoint: str, detail: str) -> str:
    namespace = repo_id.split("/")[0]
    unchanged = f"Nothing was committed; {repo_id} is unchanged."
    if status == 401:
        return (f"The Hub did not accept the token (401: {detail}). Log in with `hf auth login`, set HF_TOKEN, "
                f"or pass token=... with a write token. {unchanged}")  # fmt: skip
    if status == 403:
        return (f"The token may not write to {repo_id} (403: {detail}). Use a write token of '{namespace}' "
                f"or of a member of that organisation. {unchanged}")  # fmt: skip
    if status == 404:
        return (f"The Hub found no dataset repo {repo_id} that this token can see (404: {detail}). Check the "
                f"repo id and that it is a dataset repo, not a model or a Space. {unchanged}")  # fmt: skip
    if status in (409, 412):
        return (f"{repo_id} changed while pushing ({status}: {detail}); push again to merge with the new "
                f"head. {unchanged}")  # fmt: skip
    if status is not None and status >= 500:
        return (f"The Hub at {endpoint} failed ({status}: {detail}). Try again later; {unchanged[0].lower()}"
                f"{unchanged[1:]}")  # fmt: skip
    return f"The Hub rejected the push to {repo_id} ({status}: {detail}). {unchanged}"
