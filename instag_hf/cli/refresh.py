"""``instag refresh``: rebuild the Hub targets of a YAML config (:func:`instag_hf.refresh.refresh`), for CI.

Unlike the other commands it has exit codes of its own, which CI jobs read.
"""

from __future__ import annotations

from pathlib import Path

import click

from instag_hf.errors import ConfigurationError
from instag_hf.refresh import runner as refreshing

#: ``instag refresh`` exit codes: every target updated or up to date / a target failed / bad config.
EXIT_FAILED, EXIT_BAD_CONFIG = 1, 2

__all__ = ["EXIT_BAD_CONFIG", "EXIT_FAILED", "refresh_command"]


@click.command(name="refresh")
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
