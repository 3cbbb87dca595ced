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
from dataclasses import MISSING, Field, dataclass, fields
from pathlib import Path
from typing import Any

import click

from instag_hf import dataset_io
from instag_hf.agreement import DEFAULT_AUDIT_ROWS
from instag_hf.normalization.config import CLI_FLAGS
from instag_hf.sampling.sampler import STRATEGIES
from instag_hf.tagging.rows import FORMAT_NAMES
from instag_hf.tagging.settings import TaggerSettings, public_name, settings_from

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


def _setting_option(setting: Field[Any]) -> Decorator:
    """The click option of one TaggerSettings field, from what the field says about itself."""
    spec = dict(setting.metadata["option"])
    name = public_name(setting)
    kind = str(setting.type)
    extra: dict[str, Any] = {}
    if "choices" in spec:
        extra["type"] = click.Choice(spec["choices"])
    elif kind.startswith("int"):
        extra["type"] = click.IntRange(min=spec["minimum"]) if "minimum" in spec else int
    elif kind.startswith("float"):
        extra["type"] = float
    default = spec.get("default", None if setting.default is MISSING else setting.default)
    if default == ():
        default = None
    return click.option(
        "--" + name.replace("_", "-"),
        name,
        default=default,
        show_default=spec.get("show_default", default is not None),
        metavar=spec.get("metavar"),
        help=spec.get("help", setting.metadata["help"]),
        **extra,
    )


#: The TaggerSettings fields on the command line, in field order.
_TAGGER_OPTIONS = tuple(f for f in fields(TaggerSettings) if f.metadata["option"] is not None)

tagger_options = options(
    *(_setting_option(setting) for setting in _TAGGER_OPTIONS),
    # One setting, two switches: where the request cache is, or none at all.
    click.option(
        "--cache-dir",
        type=click.Path(path_type=Path),
        default=None,
        help="Request cache folder (default: $INSTAG_CACHE_DIR or the datasets cache).",
    ),
    flag("--no-cache", help="Do not read or write the request cache."),
)

#: The keyword arguments :data:`tagger_options` give a command.
TAGGER_ARGS = (*(public_name(f) for f in _TAGGER_OPTIONS), "cache_dir", "no_cache")


def tagger(**given: Any) -> Any:
    """The :class:`~instag_hf.Tagger` the tagger options (:data:`TAGGER_ARGS`) describe.

    Raises:
        ConfigurationError: A value the Tagger refuses.
    """
    from instag_hf.tagging.tagger import Tagger

    no_cache, cache_dir = given.pop("no_cache"), given.pop("cache_dir")
    cache: bool | Path = False if no_cache else (cache_dir or True)
    return Tagger.from_settings(settings_from({**given, "cache": cache}))


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
           "server": None, "provider": None}  # fmt: skip
    return {
        "audit_tagger": tagger(**{**tagger_args, **own}),
        "audit_rows": audit["audit_rows"],
        "audit_seed": audit["audit_seed"],
        "audit_model": audit["audit_model"],
    }


def split_kwargs(kwargs: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """Pop ``names`` out of a command's keyword arguments."""
    return {name: kwargs.pop(name) for name in names}
