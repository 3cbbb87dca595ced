"""Publishing a curated subset: to a Hub dataset repo in one commit, or to a local folder.

    info = instag_hf.push_to_hub(subset, "me/curated", card=card, normalizer=normalizer)
    instag_hf.save(subset, "out/curated", card=card, normalizer=normalizer)   # same layout

Both write the same files at the same paths, the layout of :mod:`~instag_hf.publishing.layout`,
so ``load_dataset("me/curated")`` (or ``load_dataset("out/curated")``) reads the subset back;
an existing README is merged, not overwritten, and this split's stale shards are deleted
in the same commit.

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
from pathlib import Path
from typing import TYPE_CHECKING

import huggingface_hub
from datasets import Dataset
from huggingface_hub import CommitInfo, CommitOperationAdd, CommitOperationDelete, DatasetCard, HfApi
from huggingface_hub.errors import HFValidationError
from huggingface_hub.hf_api import RepoFile

from instag_hf._version import __version__
from instag_hf.errors import CardError, HubError, OutputError
from instag_hf.hub_errors import HUB_ERRORS, hub_error
from instag_hf.publishing.card import build_card
from instag_hf.publishing.layout import DATA_DIR, README, load_readme, stage

if TYPE_CHECKING:
    from instag_hf.normalization.normalizer import TagNormalizer

logger = logging.getLogger(__name__)

__all__ = ["hub_bars_follow_datasets", "push_to_hub", "save"]


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
    api = HfApi(token=token, library_name="instag_hf", library_version=__version__)
    # Whatever token ends up in the request must not end up in a message.
    secrets = [token] if isinstance(token, str) else [huggingface_hub.get_token() or ""]
    try:
        with hub_bars_follow_datasets():
            info, head = _commit(api, repo_id, subset, card, normalizer, private, create_pr,
                                 commit_message or _default_message(subset), max_shard_size, extra_files)  # fmt: skip
    except HUB_ERRORS as error:
        failure = hub_error(error, f"push to {repo_id}", repo_id=repo_id, secrets=secrets,
                            then=f"Nothing was committed; {repo_id} is unchanged.", writing=True)  # fmt: skip
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
        readme = load_readme(path, where)
    with tempfile.TemporaryDirectory(prefix="instag-push-") as staging:
        layout = stage(
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
        readme = load_readme(root / README, where) if (root / README).is_file() else None
        existing = {
            p.relative_to(root).as_posix(): p.stat().st_size for p in (root / DATA_DIR).glob("*") if p.is_file()
        }
        layout = stage(subset, card, normalizer, root, readme, existing, max_shard_size, extra_files, readme_name=where)
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


def _default_message(subset: Dataset) -> str:
    return f"Upload {len(subset):,} rows selected with InsTag (instag_hf {__version__})"


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
