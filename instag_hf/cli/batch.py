"""``instag batch``: tagging through OpenAI Batch files instead of an endpoint.

    instag batch prepare  pool.jsonl --model gpt-4o-mini -o requests.jsonl
    instag batch submit   requests.jsonl --endpoint https://api.openai.com
    instag batch status   requests.jsonl             # safe to run again, from a new session
    instag batch download requests.jsonl             # the output and error files
    instag batch collect  pool.jsonl --model gpt-4o-mini --results requests-00000.output.jsonl -o tagged

Each command parses its options and calls one function of :mod:`instag_hf.batching`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from instag_hf import dataset_io
from instag_hf.cli.options import Source, dataset_options, output_option, tagger, tagger_options

__all__ = ["batch"]


@click.group()
def batch() -> None:
    """Tag through batch files (OpenAI Batch API, Groq, Cerebras, vllm run-batch) at a fraction of the
    price: prepare the requests, run them, collect the results into the request cache and the dataset.

    The tagger options are those of `instag tag`; without --endpoint, --model names the model and
    --server the dialect (default openai: the json_schema response format).
    """


@batch.command()
@dataset_options
@tagger_options
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Name of the requests files: requests.jsonl writes requests-00000.jsonl, requests-00001.jsonl, ...",
)
def prepare(source: Source, output: Path, **kwargs: Any) -> None:
    """Write one OpenAI Batch request line per user query the request cache does not answer yet."""
    from instag_hf.batching import prepare_batch

    prepared = prepare_batch(source.load(), tagger(**kwargs), output)
    click.echo(prepared.describe())


@batch.command()
@dataset_options
@tagger_options
@click.option(
    "--results",
    "results",
    multiple=True,
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A results file (OpenAI output or error file, vllm run-batch output); repeat it, or list several.",
)
@click.argument("more_results", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@output_option
def collect(source: Source, results: tuple[Path, ...], more_results: tuple[Path, ...], output: Path,
            **kwargs: Any) -> None:  # fmt: skip
    """Put every batch answer into the request cache and write the tagged dataset, as `instag tag` would."""
    from instag_hf.batching import collect_batch

    tagged, report = collect_batch(source.load(), tagger(**kwargs), [*results, *more_results])
    dataset_io.write_dataset(tagged, output)
    click.echo(f"{report.describe()}\n-> {output}")
