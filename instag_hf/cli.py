"""The ``instag`` command: a thin shell over the library, one command per step of the chain.

    instag tag       -d pool.jsonl -o tagged          # + instag_raw_tags, instag_error
    instag normalize -d tagged -o normalized          # + instag_tags
    instag analyze   -d normalized
    instag sample    -d normalized -n 1000 -o subset
    instag card      -d subset --pool normalized -o README.md
    instag push      -d subset --pool normalized --repo me/curated
    instag run       -d pool.jsonl -n 1000 --output-dir curated     # all of the above
    instag compare   small-tagged large-tagged --json report.json   # agreement of two taggers
    instag refresh   --config refresh.yaml                          # for scheduled CI jobs

Single steps read and write datasets on disk (``save_to_disk`` folders, or ``.parquet`` /
``.jsonl`` files), so they chain. Errors are one line on stderr and exit 1 (``--debug``
shows the traceback); ``refresh`` documents its own exit codes.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import click

from instag_hf import dataset_io, pipeline
from instag_hf.agreement import DEFAULT_AUDIT_ROWS, DEFAULT_THRESHOLD
from instag_hf.errors import ConfigurationError, InstagError
from instag_hf.refresh import runner as refreshing
from instag_hf.sampling.sampler import STRATEGIES
from instag_hf.tagging.dialects import SERVER_KINDS
from instag_hf.tagging.prompts import MAX_NEW_TOKENS

#: ``instag refresh`` exit codes: every target updated or up to date / a target failed / bad config.
EXIT_FAILED, EXIT_BAD_CONFIG = 1, 2


class _Instag(click.Group):
    """Turns every error into one line and a non-zero exit, unless ``--debug`` is on."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as error:
            if ctx.params.get("debug"):
                raise
            message = str(error) if isinstance(error, InstagError) else f"{type(error).__name__}: {error}"
            hint = "" if isinstance(error, InstagError) else " (run `instag --debug ...` for the traceback)"
            raise click.ClickException(" ".join(message.split("\n")) + hint) from error


@click.group(cls=_Instag, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="instag_hf")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs of instag_hf.")
@click.option("-v", "--verbose", is_flag=True, help="Show what each step did (info logs of instag_hf).")
def main(debug: bool, verbose: bool) -> None:
    """InsTag for Hugging Face datasets: tag queries with an LLM, normalize the tags,
    analyze diversity and complexity, sample a complex and diverse subset, publish it.

    The tagging endpoint (TGI, vLLM, SGLang, llama.cpp or any OpenAI-compatible API) comes
    from --endpoint or INSTAG_ENDPOINT, or is Hugging Face's Inference Providers router
    (--provider); its key from INSTAG_API_KEY or --api-key-env NAME. Hub access uses
    HF_TOKEN / HF_ENDPOINT as usual.
    """
    if debug or verbose:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        library = logging.getLogger("instag_hf")
        library.addHandler(handler)
        library.setLevel(logging.DEBUG if debug else logging.INFO)


# ------------------------------------------------------------------ shared options


def _dataset_options(func: Any) -> Any:
    for option in reversed(
        [
            click.argument("source", required=False, metavar="[DATASET]"),
            click.option(
                "-d",
                "--dataset",
                default=None,
                help="Hub dataset id, local folder, or .json/.jsonl/.parquet/.csv file (or give it as DATASET).",
            ),
            click.option("--split", default=None, help="Split to read (default: train, or the only split)."),
            click.option("--revision", default=None, help="Branch, tag or commit of a Hub dataset."),
        ]
    ):
        func = option(func)
    return func


def _load(source: str | None, dataset: str | None, split: str | None, revision: str | None) -> Any:
    if (source is None) == (dataset is None):
        raise click.UsageError("Name the dataset once: as DATASET or with --dataset.")
    return dataset_io.load_source(source or dataset, split, revision)  # type: ignore[arg-type]


def _output_option(func: Any) -> Any:
    return click.option(
        "-o",
        "--output",
        required=True,
        type=click.Path(path_type=Path),
        help="Where to write: a folder (save_to_disk), or a .parquet / .jsonl file.",
    )(func)


def _tagger_options(func: Any) -> Any:
    for option in reversed(
        [
            click.option(
                "--endpoint", default=None, help="Tagging server URL(s), comma-separated (default: $INSTAG_ENDPOINT)."
            ),
            click.option(
                "--model", default=None, help="Model to ask, for a server that lists several (or with --provider)."
            ),
            click.option(
                "--server",
                "server_kind",
                type=click.Choice(SERVER_KINDS),
                default=None,
                help="Server kind, which decides the structured-output form (detected by default).",
            ),
            click.option(
                "--provider",
                default=None,
                help="Tag through Hugging Face Inference Providers: 'auto' or a provider name (needs --model).",
            ),
            click.option(
                "--api-key-env",
                default=None,
                metavar="NAME",
                help="Name of the environment variable that holds the endpoint's API key "
                "(default: INSTAG_API_KEY; the key itself never goes on the command line).",
            ),
            click.option(
                "--template",
                default="paper",
                show_default=True,
                help="Prompt: 'paper', 'instagger', or a template text containing {query}.",
            ),
            click.option(
                "--format",
                "row_format",
                type=click.Choice(["sharegpt", "messages", "alpaca", "prompt"]),
                default=None,
                help="Row format (detected from the columns by default).",
            ),
            click.option("--column", default=None, help="Column holding the queries (detected by default)."),
            click.option(
                "--max-new-tokens",
                type=click.IntRange(min=1),
                default=MAX_NEW_TOKENS,
                show_default=True,
                help="Generation budget per answer.",
            ),
            click.option(
                "--concurrency",
                type=click.IntRange(min=1),
                default=None,
                help="Requests in flight per endpoint (default: adaptive, within the server's limit).",
            ),
            click.option(
                "--cache-dir",
                type=click.Path(path_type=Path),
                default=None,
                help="Request cache folder (default: $INSTAG_CACHE_DIR or the datasets cache).",
            ),
            click.option("--no-cache", is_flag=True, help="Do not read or write the request cache."),
        ]
    ):
        func = option(func)
    return func


def _normalizer_options(func: Any) -> Any:
    for option in reversed(
        [
            click.option(
                "--min-frequency",
                type=click.IntRange(min=1),
                default=None,
                help="Queries a raw tag must occur in to be kept (paper: 20; use 1-3 for small pools).",
            ),
            click.option("--no-frequency-filter", is_flag=True, help="Skip the frequency filter."),
            click.option("--no-rule", is_flag=True, help="Skip rule aggregation (lowercase, punctuation, stemming)."),
            click.option("--no-semantic", is_flag=True, help="Skip semantic aggregation (no embedding model needed)."),
            click.option("--no-association", is_flag=True, help="Skip association aggregation (FP-Growth)."),
            click.option(
                "--embedding-model", default=None, help="Hub id or folder of the embedding model (semantic step)."
            ),
            click.option("--semantic-eps", type=float, default=None, help="DBSCAN cosine distance (paper: 0.05)."),
            click.option(
                "--association-min-support",
                type=click.IntRange(min=1),
                default=None,
                help="Minimum queries holding a rule's tags (paper: 40).",
            ),
        ]
    ):
        func = option(func)
    return func


def _sampling_options(func: Any) -> Any:
    for option in reversed(
        [
            # An empty subset has nothing to publish, and .jsonl/.parquet files of no rows do not read back.
            click.option("-n", "--n", "n", type=click.IntRange(min=1), required=True, help="Rows to select (>= 1)."),
            click.option(
                "--strategy",
                type=click.Choice(STRATEGIES),
                default="instag",
                show_default=True,
                help="instag: complexity first, then diversity (the paper's Algorithm 1).",
            ),
            click.option("--seed", type=click.IntRange(min=0), default=None, help="Seed of the tie-break shuffle."),
            click.option(
                "--target-coverage", type=float, default=None, help="Share of the pool's tags to cover, (0, 1]."
            ),
            click.option("--target-mean-tags", type=float, default=None, help="Mean tags per selected row to aim for."),
        ]
    ):
        func = option(func)
    return func


def _tagger(
    endpoint: str | None,
    model: str | None,
    server_kind: str | None,
    provider: str | None,
    api_key_env: str | None,
    template: str,
    row_format: str | None,
    column: str | None,
    max_new_tokens: int,
    concurrency: int | None,
    cache_dir: Path | None,
    no_cache: bool,
) -> Any:
    from instag_hf.tagging.tagger import Tagger

    cache: bool | Path = False if no_cache else (cache_dir or True)
    return Tagger(
        endpoint,
        model=model,
        server=server_kind,
        provider=provider,
        api_key_env=api_key_env,
        template=template,
        format=row_format,
        column=column,
        max_new_tokens=max_new_tokens,
        concurrency=concurrency,
        cache=cache,
    )


def _normalizer_settings(
    min_frequency: int | None,
    no_frequency_filter: bool,
    no_rule: bool,
    no_semantic: bool,
    no_association: bool,
    embedding_model: str | None,
    semantic_eps: float | None,
    association_min_support: int | None,
) -> dict[str, Any]:
    given = {
        "min_frequency": min_frequency,
        "frequency_filter": False if no_frequency_filter else None,
        "rule_aggregation": False if no_rule else None,
        "semantic_aggregation": False if no_semantic else None,
        "association_aggregation": False if no_association else None,
        "embedding_model": embedding_model,
        "semantic_eps": semantic_eps,
        "association_min_support": association_min_support,
    }
    return {name: value for name, value in given.items() if value is not None}


def _split_kwargs(kwargs: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    return {name: kwargs.pop(name) for name in names}


_TAGGER_ARGS = (
    "endpoint",
    "model",
    "server_kind",
    "provider",
    "api_key_env",
    "template",
    "row_format",
    "column",
    "max_new_tokens",
    "concurrency",
    "cache_dir",
    "no_cache",
)
_NORMALIZER_ARGS = (
    "min_frequency",
    "no_frequency_filter",
    "no_rule",
    "no_semantic",
    "no_association",
    "embedding_model",
    "semantic_eps",
    "association_min_support",
)


def _audit_options(func: Any) -> Any:
    for option in reversed(
        [
            click.option(
                "--audit-endpoint",
                default=None,
                help="Tag a random sample of the pool again with this (stronger) tagging server and put the "
                "agreement in the card.",
            ),
            click.option(
                "--audit-model", default=None, help="The model the audit endpoint must serve (checked first)."
            ),
            click.option(
                "--audit-rows",
                type=click.IntRange(min=1),
                default=DEFAULT_AUDIT_ROWS,
                show_default=True,
                help="Pool rows the audit samples.",
            ),
            click.option(
                "--audit-seed",
                type=click.IntRange(min=0),
                default=0,
                show_default=True,
                help="Seed of the audit's sample.",
            ),
        ]
    ):
        func = option(func)
    return func


_AUDIT_ARGS = ("audit_endpoint", "audit_model", "audit_rows", "audit_seed")


def _audit_settings(audit: dict[str, Any], tagger_args: dict[str, Any]) -> dict[str, Any]:
    if audit["audit_endpoint"] is None:
        if audit["audit_model"] is not None:
            raise click.UsageError("--audit-model needs --audit-endpoint (the server that serves it).")
        return {}
    # The audit asks its own server, for --audit-model when given (not the pool's --model,
    # --server or --provider), with the same prompt, row format, key variable and cache.
    audit_tagger = _tagger(
        **{
            **tagger_args,
            "endpoint": audit["audit_endpoint"],
            "concurrency": None,
            "model": audit["audit_model"],
            "server_kind": None,
            "provider": None,
        }
    )
    return {
        "audit_tagger": audit_tagger,
        "audit_rows": audit["audit_rows"],
        "audit_seed": audit["audit_seed"],
        "audit_model": audit["audit_model"],
    }


# ------------------------------------------------------------------ commands


@main.command()
@_dataset_options
@_tagger_options
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
def tag(
    source: str | None,
    dataset: str | None,
    split: str | None,
    revision: str | None,
    output: Path | None,
    dry_run: bool,
    **kwargs: Any,
) -> None:
    """Tag every user query with intention tags (adds instag_raw_tags, instag_error)."""
    if (output is None) != dry_run:
        raise click.UsageError("Give -o/--output to tag, or --dry-run to only count (not both).")
    tagger = _tagger(**kwargs)
    ds = _load(source, dataset, split, revision)
    if dry_run:
        click.echo(tagger.plan(ds).describe())
        return
    assert output is not None  # checked above
    tagged = pipeline.tag_dataset(ds, tagger)
    dataset_io.write_dataset(tagged, output)
    failed = sum(1 for error in tagged["instag_error"] if error)
    s = tagger.stats
    click.echo(
        f"Tagged {len(tagged)} rows ({failed} with an instag_error; {s.requests} requests, "
        f"{s.cache_hits} answers from cache; {s.prompt_tokens} prompt tokens, "
        f"{s.generated_tokens} generated tokens) -> {output}"
    )


@main.command()
@_dataset_options
@_normalizer_options
@click.option(
    "--normalizer",
    "saved",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Apply this saved normalizer instead of fitting one.",
)
@click.option(
    "--save-normalizer",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the fitted normalizer (JSON) here, for `instag card/push --normalizer`.",
)
@_output_option
def normalize(
    source: str | None,
    dataset: str | None,
    split: str | None,
    revision: str | None,
    saved: Path | None,
    save_normalizer: Path | None,
    output: Path,
    **kwargs: Any,
) -> None:
    """Fit a TagNormalizer on a tagged dataset and add the normalized instag_tags."""
    from instag_hf.normalization.normalizer import TagNormalizer

    settings = _normalizer_settings(**kwargs)
    if saved is not None and settings:
        raise click.UsageError("--normalizer applies a saved normalizer as it is: drop the fitting options.")
    normalizer = TagNormalizer.load(saved) if saved else TagNormalizer(**settings)
    normalized = pipeline.normalize_dataset(_load(source, dataset, split, revision), normalizer, fit=saved is None)
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


@main.command()
@_dataset_options
@click.option("--pool", default=None, help="The pool the dataset was sampled from, to measure coverage against.")
@click.option("--top-k", type=click.IntRange(min=0), default=20, show_default=True, help="Most common tags to list.")
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write every figure as JSON here.",
)
def analyze(
    source: str | None,
    dataset: str | None,
    split: str | None,
    revision: str | None,
    pool: str | None,
    top_k: int,
    json_path: Path | None,
) -> None:
    """Measure diversity (unique tags, coverage) and complexity (tags per row)."""
    from instag_hf.analysis.stats import analyze as measure

    stats = measure(
        _load(source, dataset, split, revision), pool=dataset_io.load_source(pool) if pool else None, top_k=top_k
    )
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


@main.command()
@_dataset_options
@_sampling_options
@_output_option
def sample(
    source: str | None, dataset: str | None, split: str | None, revision: str | None, output: Path, **kwargs: Any
) -> None:
    """Select a complex and diverse subset of a normalized dataset."""
    from instag_hf.sampling.sampler import sample as select
    from instag_hf.sampling.sampler import selection_info

    subset = select(_load(source, dataset, split, revision), **kwargs)
    dataset_io.write_dataset(subset, output)
    info = selection_info(subset)
    # sample() registers the subset's SelectionInfo under its fingerprint before returning it.
    assert info is not None
    click.echo(f"{info.describe()} -> {output}")


@main.command()
@_dataset_options
@click.option("--pool", default=None, help="The normalized pool the subset was sampled from.")
@click.option(
    "--normalizer",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="The saved normalizer (its report goes into the card).",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for README.md and the plots.",
)
def card(
    source: str | None,
    dataset: str | None,
    split: str | None,
    revision: str | None,
    pool: str | None,
    normalizer: Path | None,
    output: Path,
) -> None:
    """Write the dataset card (README.md with statistics) and its plots for a subset."""
    from instag_hf.normalization.normalizer import TagNormalizer

    written = pipeline.write_card(
        _load(source, dataset, split, revision),
        output,
        pool=dataset_io.load_source(pool) if pool else None,
        normalizer=TagNormalizer.load(normalizer) if normalizer else None,
    )
    click.echo(f"Card written -> {written}")


@main.command()
@_dataset_options
@click.option("--repo", required=True, help="Hub dataset repo to push to (created if missing).")
@click.option("--pool", default=None, help="The normalized pool, for the card's statistics.")
@click.option(
    "--normalizer",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Saved normalizer to publish with the data (and describe in the card).",
)
@click.option("--private", is_flag=True, help="Create the repo private.")
@click.option("--create-pr", is_flag=True, help="Open a pull request instead of committing to main.")
def push(
    source: str | None,
    dataset: str | None,
    split: str | None,
    revision: str | None,
    repo: str,
    pool: str | None,
    normalizer: Path | None,
    private: bool,
    create_pr: bool,
) -> None:
    """Push a subset with its card, plots and normalizer to the Hub in one commit."""
    from instag_hf.normalization.normalizer import TagNormalizer
    from instag_hf.publishing.card import build_card
    from instag_hf.publishing.hub import push_to_hub

    subset = _load(source, dataset, split, revision)
    fitted = TagNormalizer.load(normalizer) if normalizer else None
    built = build_card(subset, pool=dataset_io.load_source(pool) if pool else None, normalizer=fitted, repo_id=repo)
    info = push_to_hub(subset, repo, card=built, normalizer=fitted, private=private or None, create_pr=create_pr)
    click.echo(f"Pushed {len(subset)} rows -> {info.pr_url or info.commit_url}")


@main.command()
@_dataset_options
@_tagger_options
@_normalizer_options
@_sampling_options
@click.option("--push-to", "--repo-id", "push_to", default=None, help="Hub dataset repo to publish to.")
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Local folder to write to (same layout as the Hub repo).",
)
@click.option("--private", is_flag=True, help="With --push-to: create the repo private.")
@click.option("--create-pr", is_flag=True, help="With --push-to: open a pull request instead of committing.")
@_audit_options
def run(
    source: str | None,
    dataset: str | None,
    split: str | None,
    revision: str | None,
    push_to: str | None,
    output_dir: Path | None,
    private: bool,
    create_pr: bool,
    **kwargs: Any,
) -> None:
    """The whole chain: tag, normalize, analyze, sample, then push or save with a card."""
    try:  # before any work: a run that cannot publish should not tag first
        pipeline.check_destination(push_to, output_dir)
    except ConfigurationError as error:
        raise click.UsageError(str(error)) from None
    audit = _split_kwargs(kwargs, _AUDIT_ARGS)
    tagger_args = _split_kwargs(kwargs, _TAGGER_ARGS)
    tagger = _tagger(**tagger_args)
    normalizer = _normalizer_settings(**_split_kwargs(kwargs, _NORMALIZER_ARGS))
    result = pipeline.run_chain(
        _load(source, dataset, split, revision),
        tagger=tagger,
        normalizer=normalizer,
        **_audit_settings(audit, tagger_args),
        **kwargs,
    )
    where = pipeline.publish(
        result,
        push_to=push_to,
        output_dir=output_dir,
        private=private or None,
        create_pr=create_pr,
        source=source or dataset,
        source_revision=revision,
    )
    click.echo(f"{result.summary()}\n-> {where}")


@main.command()
@click.argument("dataset_a", metavar="A")
@click.argument("dataset_b", metavar="[B]", required=False)
@click.option("--split", default=None, help="Split to read from both datasets (default: train, or the only split).")
@click.option("--column-a", default=None, help="Tag column of A (default: instag_raw_tags, else instag_tags).")
@click.option("--column-b", default=None, help="Tag column of B (with B omitted: a second tag column of A).")
@click.option(
    "--mode",
    type=click.Choice(["all", "exact", "semantic"]),
    default="all",
    show_default=True,
    help="exact: raw strings and rule keys; semantic: embedding matches (loads the embedding model).",
)
@click.option(
    "--threshold",
    type=click.FloatRange(-1.0, 1.0),
    default=DEFAULT_THRESHOLD,
    show_default=True,
    help="Cosine similarity a semantic match must exceed.",
)
@click.option("--embedding-model", default=None, help="Hub id or folder of the embedding model (semantic matching).")
@click.option(
    "--format",
    "row_format",
    type=click.Choice(["sharegpt", "messages", "alpaca", "prompt"]),
    default=None,
    help="Row format of both datasets (detected from the columns by default).",
)
@click.option("--query-column", default=None, help="Column holding the queries (detected by default).")
@click.option(
    "--top-k",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    help="Most often missed and invented tags to report.",
)
@click.option(
    "--json",
    "json_path",
    is_flag=False,
    flag_value="-",
    default=None,
    metavar="[PATH]",
    help="Write every figure as JSON to PATH; --json alone prints the JSON instead of the table.",
)
def compare(
    dataset_a: str,
    dataset_b: str | None,
    split: str | None,
    column_a: str | None,
    column_b: str | None,
    mode: str,
    threshold: float,
    embedding_model: str | None,
    row_format: str | None,
    query_column: str | None,
    top_k: int,
    json_path: str | None,
) -> None:
    """Measure how well the tags of A (the candidate tagger) agree with those of B (the reference),
    aligning rows by their queries: exact and semantic precision, recall and F1, micro and macro,
    the tags A most often misses and invents, and the agreement per turn of multi-turn rows.
    """
    from instag_hf.agreement import compare as measure

    ds_a = dataset_io.load_source(dataset_a, split)
    ds_b = dataset_io.load_source(dataset_b, split) if dataset_b else None
    result = measure(
        ds_a,
        ds_b,
        column_a=column_a,
        column_b=column_b,
        mode=mode,
        threshold=threshold,
        embedding_model=embedding_model,
        format=row_format,
        query_column=query_column,
        top_k=top_k,
    )
    text = json.dumps(result.to_dict(), indent=1, ensure_ascii=False) + "\n"
    if json_path == "-":
        click.echo(text, nl=False)
        return
    if json_path is not None:
        Path(json_path).write_text(text, encoding="utf-8")
    click.echo(result.summary())


@main.command(name="refresh")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(path_type=Path),
    help="YAML file listing the targets (see the README for its format).",
)
@click.option("--target", "only", multiple=True, help="Refresh only this repo (repeatable).")
@click.option("--force", is_flag=True, help="Rebuild even when the source and settings are unchanged.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Say what would be rebuilt, and how many requests and prompt tokens that takes; tag and push nothing.",
)
@click.option(
    "--api-key-env",
    default=None,
    metavar="NAME",
    help="Name of the variable holding the endpoint's API key, for targets whose config names none "
    "(default: INSTAG_API_KEY).",
)
def refresh_command(
    config_path: Path, only: tuple[str, ...], force: bool, dry_run: bool, api_key_env: str | None
) -> None:
    """Rebuild Hub targets whose source changed, tagging only new queries (for CI).

    Exit codes: 0 every target updated, proposed or up to date; 1 a target failed (the
    others were still refreshed); 2 the config is invalid.
    """
    try:
        config = refreshing.load_config(config_path)
    except ConfigurationError as error:
        raise _BadConfig(str(error)) from error
    try:
        outcomes = refreshing.refresh(config, only=only or None, force=force, dry_run=dry_run, api_key_env=api_key_env)
    except ConfigurationError as error:  # an unknown --target or a bad --api-key-env
        raise _BadConfig(str(error)) from error
    for outcome in outcomes:
        click.echo(outcome.line())
    failed = sum(o.failed for o in outcomes)
    click.echo(f"{len(outcomes)} target(s): {len(outcomes) - failed} ok, {failed} failed")
    if failed:
        click.get_current_context().exit(EXIT_FAILED)


class _BadConfig(click.ClickException):
    """An invalid refresh config or ``--target``; its message is printed on one line."""

    # click types exit_code as a class variable, so each exit code gets its own subclass.
    exit_code = EXIT_BAD_CONFIG

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split("\n")))


if __name__ == "__main__":  # pragma: no cover
    main()
