"""``instag batch``: tagging through OpenAI Batch files instead of an endpoint.

    instag batch prepare  pool.jsonl --model gpt-4o-mini -o requests.jsonl
    instag batch submit   requests.jsonl --endpoint https://api.openai.com
    instag batch status   requests.jsonl             # safe to run again, from a new session
    instag batch download requests.jsonl             # the output and error files
    instag batch collect  pool.jsonl --model gpt-4o-mini --results requests-00000.*.jsonl -o tagged

Each command parses its options and calls one function of :mod:`instag_hf.batching`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from instag_hf import dataset_io
from instag_hf.cli.options import Source, dataset_options, options, output_option, tagger, tagger_options

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


_requests_argument = click.argument("requests", type=click.Path(dir_okay=False, path_type=Path))
_api_options = options(
    click.option(
        "--endpoint",
        default=None,
        help="Batch API base URL, e.g. https://api.openai.com (default: the one the state file records, "
        "else $INSTAG_ENDPOINT).",
    ),
    click.option(
        "--api-key-env",
        default=None,
        metavar="NAME",
        help="Name of the environment variable that holds the API key (default: INSTAG_API_KEY).",
    ),
)


@batch.command()
@_requests_argument
@_api_options
def submit(requests: Path, endpoint: str | None, api_key_env: str | None) -> None:
    """Upload the requests files prepare wrote under REQUESTS and start one batch each (24h window).

    Files already submitted are skipped; the batch ids go into REQUESTS' state file
    (requests.batches.json), so `status` and `download` find them from any session.
    """
    from instag_hf.batching.api import submit_batches

    state = submit_batches(requests, endpoint=endpoint, api_key_env=api_key_env)
    click.echo(f"{state.describe()}\n-> {state.path}")


@batch.command()
@_requests_argument
@_api_options
def status(requests: Path, endpoint: str | None, api_key_env: str | None) -> None:
    """Show how each batch of REQUESTS is doing (request counts); safe to run again at any time."""
    from instag_hf.batching.api import batch_status

    click.echo(batch_status(requests, endpoint=endpoint, api_key_env=api_key_env).describe())


@batch.command()
@_requests_argument
@_api_options
def download(requests: Path, endpoint: str | None, api_key_env: str | None) -> None:
    """Download the output and error files of every finished batch of REQUESTS, for `collect`."""
    from instag_hf.batching.api import download_results

    state, files = download_results(requests, endpoint=endpoint, api_key_env=api_key_env)
    pending = [job for job in state.jobs if not job.final]
    click.echo(state.describe())
    if files:
        click.echo("Results (pass them to `instag batch collect --results`):\n" + "\n".join(str(f) for f in files))
    if pending:
        click.echo(f"{len(pending)} batch(es) not finished yet: run `instag batch download {requests}` again later.")
