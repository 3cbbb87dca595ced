"""Keep curated Hub datasets up to date with their sources, from a scheduled CI job.

``instag refresh --config refresh.yaml`` (or :func:`refresh`) goes through the targets of a
config file (format in :mod:`instag_hf.refresh.config`). For each target:

1. The source's current revision is resolved: the commit sha of a Hub dataset, a sha256
   of the bytes of a local file or folder.
2. The target repo's ``instag_state.json`` is read (from ``main``, and from its newest pull
   request when the target opens pull requests). When it records the same source revision
   and the same settings, the target is up to date: nothing is tagged or pushed.
3. Otherwise the source is loaded at that revision and its rows are keyed by their user
   queries. Rows whose key is in the target's ``instag_pool_tags.parquet`` (written by the
   previous run, with the same model and prompt) reuse those tags; only the others are
   sent to the tagging endpoint, so a run after adding 10% new rows sends about 10% of
   the requests, whatever the local request cache holds.
4. The chain runs on the whole pool (normalizer fitted again, subset sampled again) and
   the subset, card, normalizer, state and tag store go to the repo in one commit, or
   one pull request.

A dry run goes as far as step 3 without tagging: it reads the source and the stored tags
and says how many rows would be tagged, and how many requests and prompt tokens that takes
after the request cache (the endpoint is asked what it serves, nothing more).

Both files live at the root of the target repo, next to the data and the card, so the
state travels with what it describes and needs no storage of its own.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import pyarrow as pa

from instag_hf import env
from instag_hf.dataset_io import is_local, load_source, source_revision
from instag_hf.errors import ConfigurationError, HubError, InstagError
from instag_hf.hub_errors import (
    HUB_ERRORS,
    EntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
    hub_error,
)
from instag_hf.pipeline import publish, run_chain
from instag_hf.publishing.hub import hub_bars_follow_datasets
from instag_hf.refresh import tag_store
from instag_hf.refresh.config import RefreshConfig, TargetConfig, load_config
from instag_hf.tagging.auth import check_env_name
from instag_hf.tagging.settings import parse_endpoints
from instag_hf.tagging.tagger import Tagger

logger = logging.getLogger(__name__)

STATE_FILE = "instag_state.json"
TAGS_FILE = "instag_pool_tags.parquet"
_STATE_FORMAT = "instag_hf.refresh.runner"
_STATE_VERSION = 1

#: Outcome statuses, and whether a CI job should fail on them.
UPDATED, PR_OPENED, UP_TO_DATE, PR_PENDING, WOULD_UPDATE, FAILED = (
    "updated",
    "pr-opened",
    "up-to-date",
    "pr-pending",
    "would-update",
    "failed",
)

__all__ = ["STATE_FILE", "TAGS_FILE", "TargetOutcome", "load_config", "refresh", "refresh_target"]


@dataclass
class TargetOutcome:
    """What a refresh did to one target.

    Attributes:
        repo: The target repo.
        status: ``updated``, ``pr-opened``, ``up-to-date``, ``pr-pending`` (an open pull
            request already holds this build), ``would-update`` (dry run) or ``failed``.
        source_revision: The source revision the target now reflects (or would).
        rows: Rows in the source.
        rows_reused: Rows whose tags came from the target's tag store.
        rows_tagged: Rows sent to the tagger.
        requests: Requests sent to the tagging endpoint.
        prompt_tokens, generated_tokens: Tokens the endpoint reported for them.
        subset_rows: Rows in the published subset.
        url: Commit or pull request URL.
        message: Why it failed, or a note.
    """

    repo: str
    status: str
    source_revision: str | None = None
    rows: int = 0
    rows_reused: int = 0
    rows_tagged: int = 0
    requests: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    subset_rows: int = 0
    url: str | None = None
    message: str = ""

    @property
    def failed(self) -> bool:
        return self.status == FAILED

    def line(self) -> str:
        """One line for a CI log."""
        head = f"{self.repo}: {self.status}"
        if self.status == FAILED:
            return f"{head}: {self.message}"
        if self.status in (UPDATED, PR_OPENED):
            return (
                f"{head} from source {_short(self.source_revision)}: {self.rows} rows "
                f"({self.rows_tagged} new, {self.rows_reused} reused), {self.requests} requests sent "
                f"({self.prompt_tokens} prompt + {self.generated_tokens} generated tokens), "
                f"{self.subset_rows} rows selected -> {self.url}"
            )
        return f"{head} (source {_short(self.source_revision)}){': ' + self.message if self.message else ''}"


def refresh(
    config: RefreshConfig | str | os.PathLike[str],
    *,
    only: Sequence[str] | None = None,
    force: bool = False,
    dry_run: bool = False,
    api_key_env: str | None = None,
) -> list[TargetOutcome]:
    """Refresh every target of ``config``; a failing target does not stop the others.

    Args:
        config: A :class:`RefreshConfig` or the path of its YAML file.
        only: Repo ids to refresh (default: all targets).
        force: Rebuild even when the source and settings are unchanged.
        dry_run: Decide, but tag and push nothing.
        api_key_env: Name of the variable holding the endpoint's key, for targets whose
            config names none (``instag refresh --api-key-env NAME``).

    Returns:
        One :class:`TargetOutcome` per target, in config order. Whatever goes wrong inside
        one target (the Hub dropping a connection, a dead ``HF_ENDPOINT``, any error) is
        that target's ``failed`` outcome, naming the cause; the other targets still run.

    Raises:
        ConfigurationError: The config is invalid, ``only`` names an unknown repo, or the
            environment is (``INSTAG_REQUEST_TIMEOUT``, or an ``INSTAG_ENDPOINT`` that a
            target without ``endpoint`` would use is not an http(s) URL); nothing was done.

    Example:
        >>> for outcome in refresh("refresh.yaml"):  # doctest: +SKIP
        ...     print(outcome.line())
    """
    if not isinstance(config, RefreshConfig):
        config = load_config(config)
    check_env_name(api_key_env)
    targets = [
        t
        if t.tagger.get("api_key_env") or not api_key_env
        else replace(t, tagger={**t.tagger, "api_key_env": api_key_env})
        for t in config.targets
    ]
    if only:
        unknown = sorted(set(only) - {t.repo for t in targets})
        if unknown:
            raise ConfigurationError(f"--target {unknown} not in the config; it lists {[t.repo for t in targets]}")
        targets = [t for t in targets if t.repo in only]
    # The environment is part of the configuration: a bad value fails here, before any
    # target, rather than once per target.
    env.request_timeout()
    if any(t.endpoint is None for t in targets):
        parse_endpoints(env.endpoints_variable(), env.ENV_ENDPOINT)
    outcomes = []
    for target in targets:
        try:
            outcomes.append(refresh_target(target, force=force, dry_run=dry_run))
        except Exception as error:  # noqa: BLE001 -- whatever one target raises, the others still run
            logger.error("Refreshing %s failed: %s", target.repo, error, exc_info=not isinstance(error, InstagError))
            outcomes.append(TargetOutcome(target.repo, FAILED, message=_cause(error)))
    return outcomes


def _cause(error: Exception) -> str:
    """One line naming what went wrong; the type too when it is not one of ours."""
    text = str(error) if isinstance(error, InstagError) else f"{type(error).__name__}: {error}".rstrip(": ")
    return " ".join(text.split())


def refresh_target(target: TargetConfig, *, force: bool = False, dry_run: bool = False) -> TargetOutcome:
    """Refresh one target (see the module docstring for the steps).

    Raises:
        InstagError: Any step fails; nothing is pushed then.
    """
    src = target.source
    revision = source_revision(src.id, src.revision)
    wanted = {"source_revision": revision, "settings_hash": target.settings_hash()}
    states = _target_states(target.repo, pull_requests=target.create_pr)
    outcome = TargetOutcome(target.repo, UP_TO_DATE, source_revision=revision)
    for ref, state in states:
        if not force and all(state.get(k) == v for k, v in wanted.items()):
            outcome.status = UP_TO_DATE if ref == "main" else PR_PENDING
            outcome.message = "" if ref == "main" else f"already proposed in {ref}"
            return outcome
    is_hub = not is_local(src.id)
    ds = load_source(src.id, split=src.split, revision=revision if is_hub else None)
    tagger = Tagger.from_settings(target.tagger_settings())
    identity = _tagger_identity(tagger)
    store = tag_store.merge_stores(
        _read_store(target.repo, state["commit"]) for _, state in states if state.get("tagger") == identity
    )
    keys = tag_store.row_keys(ds, src.format, src.column)
    if dry_run:
        new_rows = tag_store.rows_to_tag(store, keys)
        plan = tagger.plan(ds.select(new_rows))
        outcome.status, outcome.rows = WOULD_UPDATE, len(ds)
        outcome.message = (
            f"dry run: would tag {len(new_rows)} of {len(ds)} rows ({plan.to_send} requests after the "
            f"request cache, ~{plan.prompt_tokens} prompt tokens); nothing tagged or pushed"
        )
        return outcome
    pool, reused, tagged = tag_store.tag_reusing(ds, tagger, store, keys)
    result = run_chain(
        pool,
        target.n,
        normalizer=target.normalizer,
        strategy=target.strategy,
        seed=target.seed,
        target_coverage=target.target_coverage,
        target_mean_tags=target.target_mean_tags,
    )
    new_state = {
        "format": _STATE_FORMAT,
        "format_version": _STATE_VERSION,
        **wanted,
        "settings": target.settings(),
        "tagger": identity,
        "pool_rows": len(pool),
        "subset_rows": len(result.subset),
    }
    files = {
        STATE_FILE: (json.dumps(new_state, indent=1, sort_keys=True) + "\n").encode("utf-8"),
        TAGS_FILE: tag_store.store_to_bytes(tag_store.build_store(pool, keys)),
    }
    result.tagger = tagger
    url = publish(
        result,
        push_to=target.repo,
        private=target.private or None,
        create_pr=target.create_pr,
        source=src.id,
        source_revision=revision if is_hub else None,
        extra_files=files,
        card_template=target.card_template,
    )
    outcome.status = PR_OPENED if target.create_pr else UPDATED
    outcome.rows, outcome.rows_reused, outcome.rows_tagged = len(pool), reused, tagged
    outcome.requests = tagger.stats.requests
    outcome.prompt_tokens, outcome.generated_tokens = tagger.stats.prompt_tokens, tagger.stats.generated_tokens
    outcome.subset_rows, outcome.url = len(result.subset), url
    outcome.message = "; ".join(result.notes)
    return outcome


def _tagger_identity(tagger: Tagger) -> dict[str, Any]:
    # What makes stored tags valid for this run: the model behind the endpoints and the
    # prompt, not the endpoints' addresses. Asked with the Tagger's own keys, so a
    # protected endpoint answers; with no endpoint configured, the error says how to set one.
    models = sorted({info.identity for info in tagger.servers()})
    identity = {"models": models, "template": tagger.template.sha256, "max_new_tokens": tagger.max_new_tokens}
    if tagger.answer != "paper":  # left out at its default: stored states from before it still match
        identity["answer"] = tagger.answer
    return identity


def _target_states(repo: str, *, pull_requests: bool) -> list[tuple[str, dict[str, Any]]]:
    """``(ref, state)`` of ``main`` and, when asked, of the newest pull request; each state
    gets the ``commit`` it was read at."""
    from huggingface_hub import HfApi

    api = HfApi()
    refs = ["main"]
    try:
        if pull_requests:
            prs = api.list_repo_refs(repo, repo_type="dataset", include_pull_requests=True).pull_requests or []
            newest = max(prs, key=lambda ref: int(ref.ref.rsplit("/", 1)[-1]), default=None)
            if newest is not None:
                refs.append(newest.ref)
        states = []
        for ref in refs:
            info = api.dataset_info(repo, revision=ref)
            # huggingface_hub types ``sha`` as optional; the state is pinned to it, never to a moving ref.
            if info.sha is None:
                raise HubError(f"Cannot read the refresh state of {repo!r}: the Hub gave no commit sha for {ref}.")
            if STATE_FILE in {s.rfilename for s in info.siblings or []}:
                state = json.loads(_download(repo, STATE_FILE, info.sha))
                if isinstance(state, dict) and state.get("format") == _STATE_FORMAT:
                    states.append((ref, {**state, "commit": info.sha}))
        return states
    except (RepositoryNotFoundError, RevisionNotFoundError):
        return []  # a new target: built from scratch
    except (*HUB_ERRORS, OSError, ValueError) as error:  # ValueError: a state file that is not JSON
        raise hub_error(error, f"read the refresh state of {repo!r}", repo_id=repo) from error


def _read_store(repo: str, commit: str) -> pa.Table:
    try:
        data = _download(repo, TAGS_FILE, commit)
    except HubError as error:
        if not isinstance(error.__cause__, EntryNotFoundError):
            raise
        logger.warning("%s@%s has a refresh state but no %s: every row is tagged again", repo, commit[:7], TAGS_FILE)
        return tag_store.empty_store()
    return tag_store.store_from_bytes(data, f"{TAGS_FILE} of {repo}@{commit[:7]}")


def _download(repo: str, filename: str, commit: str) -> bytes:
    from huggingface_hub import hf_hub_download

    try:
        with (
            hub_bars_follow_datasets(),
            open(hf_hub_download(repo, filename, repo_type="dataset", revision=commit), "rb") as handle,
        ):
            return handle.read()
    except (*HUB_ERRORS, OSError) as error:
        raise hub_error(error, f"download {filename} of {repo!r}", repo_id=repo) from error


def _short(revision: str | None) -> str:
    if not revision:
        return "?"
    return revision[:14] if revision.startswith("sha256:") else revision[:7]
