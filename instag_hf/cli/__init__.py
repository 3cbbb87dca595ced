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
    instag batch prepare|submit|status|download|collect             # tagging through batch files

The chain's commands are in :mod:`~instag_hf.cli.steps`, the options they share in
:mod:`~instag_hf.cli.options`; ``compare``, ``refresh`` and ``batch`` have a module each. Errors are
one line on stderr and exit 1 (``--debug`` shows the traceback); ``refresh`` documents its
own exit codes.
"""

from __future__ import annotations

import logging
from typing import Any

import click

from instag_hf.cli.batch import batch
from instag_hf.cli.compare import compare_command
from instag_hf.cli.refresh import EXIT_BAD_CONFIG, EXIT_FAILED, refresh_command
from instag_hf.cli.steps import analyze, card, normalize, push, run, sample, tag
from instag_hf.errors import InstagError

__all__ = ["EXIT_BAD_CONFIG", "EXIT_FAILED", "main"]


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


for _command in (tag, normalize, analyze, sample, card, push, run, compare_command, refresh_command, batch):
    main.add_command(_command)
