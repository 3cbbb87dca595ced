"""``instag compare``: how well one tagger's tags agree with another's (:func:`instag_hf.agreement.compare`)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from instag_hf import dataset_io
from instag_hf.agreement import DEFAULT_THRESHOLD
from instag_hf.cli.options import row_format

__all__ = ["compare_command"]


@click.command(name="compare")
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
@row_format("Row format of both datasets (detected from the columns by default).")
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
def compare_command(
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
