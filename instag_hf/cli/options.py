"""The option blocks several ``instag`` commands share, and what each block builds.

A block is declared once and composed with :func:`options`: ``instag tag`` and ``instag run``
take the same tagger options, ``instag normalize`` and ``instag run`` the same normalizer
options (their flags are :data:`~instag_hf.normalization.config.CLI_FLAGS`, the table the
card's reproduction line is written from), and every single step reads its dataset the same
way (:class:`Source`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from instag_hf import dataset_io
from instag_hf.agreement import DEFAULT_AUDIT_ROWS
from instag_hf.normalization.config import CLI_FLAGS
from instag_hf.sampling.sampler import STRATEGIES
from instag_hf.tagging.dialects import SERVER_KINDS
from instag_hf.tagging.prompts import ANSWER_FORMS, MAX_NEW_TOKENS
from instag_hf.tagging.rows import FORMAT_NAMES

Decorator = Callable[[Any], Any]


def options(*decorators: Decorator) -> Decorator:
    """Compose click decorators into one; ``--help`` lists them in the order given."""

    def apply(func: Any) -> Any:
        for decorator in reversed(decorators):
            func = decorator(func)
        return func

    return apply


def flag(*decls: str, help: str) -> Decorator:
    """An on/off option, off unless given."""
    return click.option(*decls, is_flag=True, help=help)


def whole(*decls: str, minimum: int, default: int | None = None, help: str) -> Decorator:
    """A whole-number option of at least ``minimum``; ``--help`` shows a default that is not None."""
    shown: dict[str, Any] = {"show_default": True} if default is not None else {}
    return click.option(*decls, type=click.IntRange(min=minimum), default=default, help=help, **shown)


def row_format(help: str) -> Decorator:
    """``--format``: the row format, detected from the columns when not given."""
    return click.option("--format", "row_format", type=click.Choice(FORMAT_NAMES), default=None, help=help)


# ------------------------------------------------------------------ the dataset of a single step


@dataclass(frozen=True)
class Source:
    """The dataset a command was given, as ``DATASET`` or ``--dataset``, read when asked for."""

    given: str | None
    dataset: str | None
    split: str | None
    revision: str | None

    @property
    def name(self) -> str | None:
        """What the user named the dataset (for the card), ``None`` when not named."""
        return self.given or self.dataset

    def load(self) -> Any:
        """Read it (``datasets.Dataset``).

        Raises:
            click.UsageError: Named twice or not at all.
            InstagError: As :func:`~instag_hf.dataset_io.load_source`.
        """
        if (self.given is None) == (self.dataset is None):
            raise click.UsageError("Name the dataset once: as DATASET or with --dataset.")
        return dataset_io.load_source(self.given or self.dataset, self.split, self.revision)  # type: ignore[arg-type]


def dataset_options(func: Any) -> Any:
    """``[DATASET]``, ``-d/--dataset``, ``--split`` and ``--revision``, given to ``func`` as ``source=Source``."""

    @functools.wraps(func)
    def with_source(*args: Any, source: str | None, dataset: str | None, split: str | None,
                    revision: str | None, **kwargs: Any) -> Any:  # fmt: skip
        return func(*args, source=Source(source, dataset, split, revision), **kwargs)

    return options(
        click.argument("source", required=False, metavar="[DATASET]"),
        click.option(
            "-d",
            "--dataset",
            default=None,
            help="Hub dataset id, local folder, or .json/.jsonl/.parquet/.csv file (or give it as DATASET).",
        ),
        click.option("--split", default=None, help="Split to read (default: train, or the only split)."),
        click.option("--revision", default=None, help="Branch, tag or commit of a Hub dataset."),
    )(with_source)


output_option = click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="Where to write: a folder (save_to_disk), or a .parquet / .jsonl file.",
)

card_template_option = click.option(
    "--card-template",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A Jinja2 card template instead of the packaged one (start from a copy of "
    "dataset_cards/instag_subset.md.jinja).",
)


# ------------------------------------------------------------------ tagging

tagger_options = options(
    click.option(
        "--endpoint", default=None, help="Tagging server URL(s), comma-separated (default: $INSTAG_ENDPOINT)."
    ),
    click.option("--model", default=None, help="Model to ask, for a server that lists several (or with --provider)."),
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
    row_format("Row format (detected from the columns by default)."),
    click.option("--column", default=None, help="Column holding the queries (detected by default)."),
    whole("--max-new-tokens", minimum=1, default=MAX_NEW_TOKENS, help="Generation budget per answer."),
    click.option(
        "--answer",
        type=click.Choice(ANSWER_FORMS),
        default="paper",
        show_default=True,
        help="Answer form: 'paper' (tags with an explanation each) or 'tags' (tag titles only, "
        "about half the generated tokens).",
    ),
    whole(
        "--concurrency",
        minimum=1,
        help="Requests in flight per endpoint (default: adaptive, within the server's limit).",
    ),
    click.option(
        "--cache-dir",
        type=click.Path(path_type=Path),
        default=None,
        help="Request cache folder (default: $INSTAG_CACHE_DIR or the datasets cache).",
    ),
    flag("--no-cache", help="Do not read or write the request cache."),
)


def tagger(
    endpoint: str | None,
    model: str | None,
    server_kind: str | None,
    provider: str | None,
    api_key_env: str | None,
    template: str,
    row_format: str | None,
    column: str | None,
    max_new_tokens: int,
    answer: str,
    concurrency: int | None,
    cache_dir: Path | None,
    no_cache: bool,
) -> Any:
    """The :class:`~instag_hf.Tagger` the tagger options describe."""
    from instag_hf.tagging.tagger import Tagger

    cache: bool | Path = False if no_cache else (cache_dir or True)
    return Tagger(endpoint, model=model, server=server_kind, provider=provider, api_key_env=api_key_env,
                  template=template, format=row_format, column=column, max_new_tokens=max_new_tokens,
                  answer=answer, concurrency=concurrency, cache=cache)  # fmt: skip


TAGGER_ARGS = ("endpoint", "model", "server_kind", "provider", "api_key_env", "template", "row_format", "column",
               "max_new_tokens", "answer", "concurrency", "cache_dir", "no_cache")  # fmt: skip


# ------------------------------------------------------------------ normalizing

normalizer_options = options(
    whole(
        CLI_FLAGS["min_frequency"],
        minimum=1,
        help="Queries a raw tag must occur in to be kept (paper: 20; use 1-3 for small pools).",
    ),
    flag(CLI_FLAGS["frequency_filter"], help="Skip the frequency filter."),
    flag(CLI_FLAGS["rule_aggregation"], help="Skip rule aggregation (lowercase, punctuation, stemming)."),
    flag(CLI_FLAGS["semantic_aggregation"], help="Skip semantic aggregation (no embedding model needed)."),
    flag(CLI_FLAGS["association_aggregation"], help="Skip association aggregation (FP-Growth)."),
    click.option(
        CLI_FLAGS["embedding_model"], default=None, help="Hub id or folder of the embedding model (semantic step)."
    ),
    click.option(CLI_FLAGS["semantic_eps"], type=float, default=None, help="DBSCAN cosine distance (paper: 0.05)."),
    whole(CLI_FLAGS["association_min_support"], minimum=1, help="Minimum queries holding a rule's tags (paper: 40)."),
)


def normalizer_settings(given: dict[str, Any]) -> dict[str, Any]:
    """Pop the normalizer options out of ``given``; the ``TagNormalizer`` settings they set.

    A switch's ``--no-...`` flag turns its step off; an option left out keeps the default.
    """
    settings = {}
    for name, option in CLI_FLAGS.items():
        value = given.pop(option.lstrip("-").replace("-", "_"))
        if option.startswith("--no-"):
            value = False if value else None
        if value is not None:
            settings[name] = value
    return settings


# ------------------------------------------------------------------ sampling and auditing

sampling_options = options(
    # An empty subset has nothing to publish, and .jsonl/.parquet files of no rows do not read back.
    click.option("-n", "--n", "n", type=click.IntRange(min=1), required=True, help="Rows to select (>= 1)."),
    click.option(
        "--strategy",
        type=click.Choice(STRATEGIES),
        default="instag",
        show_default=True,
        help="instag: complexity first, then diversity (the paper's Algorithm 1).",
    ),
    whole("--seed", minimum=0, help="Seed of the tie-break shuffle."),
    click.option("--target-coverage", type=float, default=None, help="Share of the pool's tags to cover, (0, 1]."),
    click.option("--target-mean-tags", type=float, default=None, help="Mean tags per selected row to aim for."),
)

audit_options = options(
    click.option(
        "--audit-endpoint",
        default=None,
        help="Tag a random sample of the pool again with this (stronger) tagging server and put the "
        "agreement in the card.",
    ),
    click.option("--audit-model", default=None, help="The model the audit endpoint must serve (checked first)."),
    whole("--audit-rows", minimum=1, default=DEFAULT_AUDIT_ROWS, help="Pool rows the audit samples."),
    whole("--audit-seed", minimum=0, default=0, help="Seed of the audit's sample."),
)

AUDIT_ARGS = ("audit_endpoint", "audit_model", "audit_rows", "audit_seed")


def audit_settings(audit: dict[str, Any], tagger_args: dict[str, Any]) -> dict[str, Any]:
    """The audit keywords of :func:`~instag_hf.pipeline.run_chain` the audit options describe.

    Raises:
        click.UsageError: ``--audit-model`` without ``--audit-endpoint``.
    """
    if audit["audit_endpoint"] is None:
        if audit["audit_model"] is not None:
            raise click.UsageError("--audit-model needs --audit-endpoint (the server that serves it).")
        return {}
    # The audit asks its own server, for --audit-model when given (not the pool's --model,
    # --server or --provider), with the same prompt, row format, key variable and cache.
    own = {"endpoint": audit["audit_endpoint"], "concurrency": None, "model": audit["audit_model"],
           "server_kind": None, "provider": None}  # fmt: skip
    return {
        "audit_tagger": tagger(**{**tagger_args, **own}),
        "audit_rows": audit["audit_rows"],
        "audit_seed": audit["audit_seed"],
        "audit_model": audit["audit_model"],
    }


def split_kwargs(kwargs: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """Pop ``names`` out of a command's keyword arguments."""
    return {name: kwargs.pop(name) for name in names}
