"""The chain's commands: one per step (``tag`` ... ``push``), and ``run`` for all of them.

Single steps read and write datasets on disk (``save_to_disk`` folders, or ``.parquet`` /
``.jsonl`` files), so they chain; each parses its options and calls one library function.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from instag_hf import dataset_io, pipeline
from instag_hf.cli.options import (
    AUDIT_ARGS,
    TAGGER_ARGS,
    Source,
    audit_options,
    audit_settings,
    card_template_option,
    dataset_options,
    flag,
    normalizer_options,
    normalizer_settings,
    output_option,
    sampling_options,
    split_kwargs,
    tagger,
    tagger_options,
)
from instag_hf.errors import ConfigurationError

__all__ = ["analyze", "card", "normalize", "push", "run", "sample", "tag"]

#: What ``--normalizer`` reads in ``normalize``, ``card`` and ``push``: a file ``TagNormalizer.save`` wrote.
_SAVED_NORMALIZER = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.command()
@dataset_options
@tagger_options
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="Where to write: a folder (save_to_disk), or a .parquet / .jsonl file (not with --dry-run).",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Count the requests the run would send (after the request cache) and their prompt tokens; "
    "send none, write nothing.",
)
def tag(source: Source, output: Path | None, dry_run: bool, **kwargs: Any) -> None:
    """Tag every user query with intention tags (adds instag_raw_tags, instag_error)."""
    if (output is None) != dry_run:
        raise click.UsageError("Give -o/--output to tag, or --dry-run to only count (not both).")
    chosen = tagger(**kwargs)
    ds = source.load()
    if dry_run:
        click.echo(chosen.plan(ds).describe())
        return
    assert output is not None  # checked above
    tagged = pipeline.tag_dataset(ds, chosen)
    dataset_io.write_dataset(tagged, output)
    failed = sum(1 for error in tagged["instag_error"] if error)
    s = chosen.stats
    click.echo(
        f"Tagged {len(tagged)} rows ({failed} with an instag_error; {s.requests} requests, "
        f"{s.cache_hits} answers from cache; {s.prompt_tokens} prompt tokens, "
        f"{s.generated_tokens} generated tokens) -> {output}"
    )


@click.command()
@dataset_options
@normalizer_options
@click.option(
    "--normalizer",
    "saved",
    type=_SAVED_NORMALIZER,
    default=None,
    help="Apply this saved normalizer instead of fitting one.",
)
@click.option(
    "--save-normalizer",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the fitted normalizer (JSON) here, for `instag card/push --normalizer`.",
)
@output_option
def normalize(source: Source, saved: Path | None, save_normalizer: Path | None, output: Path, **kwargs: Any) -> None:
    """Fit a TagNormalizer on a tagged dataset and add the normalized instag_tags."""
    from instag_hf.normalization.normalizer import TagNormalizer

    settings = normalizer_settings(kwargs)
    if saved is not None and settings:
        raise click.UsageError("--normalizer applies a saved normalizer as it is: drop the fitting options.")
    normalizer = TagNormalizer.load(saved) if saved else TagNormalizer(**settings)
    normalized = pipeline.normalize_dataset(source.load(), normalizer, fit=saved is None)
    dataset_io.write_dataset(normalized, output)
    if save_normalizer is not None:
        normalizer.save(save_normalizer)
    r = normalizer.report
    steps = (
        (
            f": {r.raw_tags} raw -> {r.after_frequency} frequency -> {r.after_rule} rule -> "
            f"{r.after_semantic} semantic -> {r.after_association} association"
        )
        if r
        else ""
    )
    click.echo(f"Normalized {len(normalized)} rows, {len(normalizer.vocabulary)} tags{steps} -> {output}")


@click.command()
@dataset_options
@click.option("--pool", default=None, help="The pool the dataset was sampled from, to measure coverage against.")
@click.option("--top-k", type=click.IntRange(min=0), default=20, show_default=True, help="Most common tags to list.")
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write every figure as JSON here.",
)
def analyze(source: Source, pool: str | None, top_k: int, json_path: Path | None) -> None:
    """Measure diversity (unique tags, coverage) and complexity (tags per row)."""
    from instag_hf.analysis.stats import analyze as measure

    stats = measure(source.load(), pool=dataset_io.load_source(pool) if pool else None, top_k=top_k)
    if json_path is not None:
        json_path.write_text(json.dumps(stats.to_dict(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    click.echo(f"rows: {stats.rows} ({stats.rows_without_tags} without tags)")
    click.echo(
        f"diversity: {stats.unique_tags} unique tags, coverage {stats.coverage:.1%} of "
        f"{stats.vocabulary_size} ({stats.vocabulary_source} vocabulary)"
    )
    click.echo(f"complexity: {stats.mean_tags:.2f} tags per row (median {stats.median_tags:g}, max {stats.max_tags})")
    for name, count in stats.top_tags:
        click.echo(f"{count:>8}  {name}")


@click.command()
@dataset_options
@sampling_options
@output_option
def sample(source: Source, output: Path, **kwargs: Any) -> None:
    """Select a complex and diverse subset of a normalized dataset."""
    from instag_hf.sampling.sampler import sample as select
    from instag_hf.sampling.sampler import selection_info

    subset = select(source.load(), **kwargs)
    dataset_io.write_dataset(subset, output)
    info = selection_info(subset)
    # sample() registers the subset's SelectionInfo under its fingerprint before returning it.
    assert info is not None
    click.echo(f"{info.describe()} -> {output}")


@click.command()
@dataset_options
@click.option("--pool", default=None, help="The normalized pool the subset was sampled from.")
@click.option(
    "--normalizer", type=_SAVED_NORMALIZER, default=None, help="The saved normalizer (its report goes into the card)."
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for README.md and the plots.",
)
@card_template_option
def card(source: Source, pool: str | None, normalizer: Path | None, output: Path, card_template: Path | None) -> None:
    """Write the dataset card (README.md with statistics) and its plots for a subset."""
    from instag_hf.normalization.normalizer import TagNormalizer

    written = pipeline.write_card(
        source.load(),
        output,
        pool=dataset_io.load_source(pool) if pool else None,
        normalizer=TagNormalizer.load(normalizer) if normalizer else None,
        template=card_template,
    )
    click.echo(f"Card written -> {written}")


@click.command()
@dataset_options
@click.option("--repo", required=True, help="Hub dataset repo to push to (created if missing).")
@click.option("--pool", default=None, help="The normalized pool, for the card's statistics.")
@click.option(
    "--normalizer",
    type=_SAVED_NORMALIZER,
    default=None,
    help="Saved normalizer to publish with the data (and describe in the card).",
)
@flag("--private", help="Create the repo private.")
@flag("--create-pr", help="Open a pull request instead of committing to main.")
@card_template_option
def push(
    source: Source,
    repo: str,
    pool: str | None,
    normalizer: Path | None,
    private: bool,
    create_pr: bool,
    card_template: Path | None,
) -> None:
    """Push a subset with its card, plots and normalizer to the Hub in one commit."""
    from instag_hf.normalization.normalizer import TagNormalizer
    from instag_hf.publishing.card import build_card
    from instag_hf.publishing.hub import push_to_hub

    subset = source.load()
    fitted = TagNormalizer.load(normalizer) if normalizer else None
    pool_ds = dataset_io.load_source(pool) if pool else None
    built = build_card(subset, pool=pool_ds, normalizer=fitted, repo_id=repo, template=card_template)
    info = push_to_hub(subset, repo, card=built, normalizer=fitted, private=private or None, create_pr=create_pr)
    click.echo(f"Pushed {len(subset)} rows -> {info.pr_url or info.commit_url}")


@click.command()
@dataset_options
@tagger_options
@normalizer_options
@sampling_options
@click.option("--push-to", "--repo-id", "push_to", default=None, help="Hub dataset repo to publish to.")
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Local folder to write to (same layout as the Hub repo).",
)
@flag("--private", help="With --push-to: create the repo private.")
@flag("--create-pr", help="With --push-to: open a pull request instead of committing.")
@card_template_option
@audit_options
def run(
    source: Source,
    push_to: str | None,
    output_dir: Path | None,
    private: bool,
    create_pr: bool,
    card_template: Path | None,
    **kwargs: Any,
) -> None:
    """The whole chain: tag, normalize, analyze, sample, then push or save with a card."""
    try:  # before any work: a run that cannot publish should not tag first
        pipeline.check_destination(push_to, output_dir)
    except ConfigurationError as error:
        raise click.UsageError(str(error)) from None
    audit = split_kwargs(kwargs, AUDIT_ARGS)
    tagger_args = split_kwargs(kwargs, TAGGER_ARGS)
    chosen = tagger(**tagger_args)
    normalizer = normalizer_settings(kwargs)
    result = pipeline.run_chain(
        source.load(), tagger=chosen, normalizer=normalizer, **audit_settings(audit, tagger_args), **kwargs
    )
    where = pipeline.publish(
        result,
        push_to=push_to,
        output_dir=output_dir,
        private=private or None,
        create_pr=create_pr,
        source=source.name,
        source_revision=source.revision,
        card_template=card_template,
    )
    click.echo(f"{result.summary()}\n-> {where}")
