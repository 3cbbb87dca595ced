"""Docs that cannot drift: every CLI command has help text and is shown in the README."""

from __future__ import annotations

import re

import pytest
import yaml
from click.testing import CliRunner

from instag_hf.cli import main
from tests.conftest import REPO_ROOT

COMMANDS = sorted(main.commands)
#: Every command, a group's subcommands as "group sub".
ALL_COMMANDS = COMMANDS + sorted(
    f"{name} {sub}" for name, group in main.commands.items() for sub in getattr(group, "commands", {})
)
README = REPO_ROOT / "README.md"


def test_the_cli_has_the_designed_commands():
    assert set(COMMANDS) == {
        "tag", "normalize", "analyze", "sample", "card", "push", "run", "refresh", "compare", "batch",
    }  # fmt: skip


@pytest.mark.parametrize("name", ALL_COMMANDS)
def test_every_command_has_help(name):
    command = main
    for part in name.split():
        command = command.commands[part]
    assert command.help and len(command.help.strip()) > 20, f"`instag {name}` has no help text"
    result = CliRunner().invoke(main, [*name.split(), "--help"])
    assert result.exit_code == 0, result.output
    assert " ".join(command.help.split()[:8]) in " ".join(result.output.split())  # help wraps lines
    undocumented = [p.name for p in command.params if isinstance(p, _Option) and not p.help]
    assert not undocumented, f"`instag {name}` options without help: {undocumented}"


_Option = type(main.params[0])


def test_every_command_appears_in_the_readme():
    text = README.read_text(encoding="utf-8") if README.exists() else ""
    missing = [name for name in ALL_COMMANDS if not re.search(rf"\binstag {name}\b", text)]
    assert not missing, f"README.md does not show these commands: {', '.join(f'instag {m}' for m in missing)}"


def test_refresh_config_keys_and_exit_codes_are_documented():
    from instag_hf.refresh.config import _SOURCE_KEYS, _TARGET_KEYS

    text = README.read_text(encoding="utf-8") if README.exists() else ""
    missing = sorted(key for key in _TARGET_KEYS | _SOURCE_KEYS if not re.search(rf"\b{key}:", text))
    assert not missing, f"README.md does not document these refresh config keys: {missing}"
    assert re.search(r"exit code", text, re.IGNORECASE), "README.md does not document refresh's exit codes"


def test_the_example_workflow_calls_the_ci_entry_point():
    workflow = yaml.safe_load((REPO_ROOT / "scripts" / "instag-refresh.yml").read_text(encoding="utf-8"))
    triggers = workflow.get("on") or workflow.get(True)  # YAML 1.1 reads a bare `on` as True
    assert triggers["schedule"][0]["cron"]
    steps = [step for job in workflow["jobs"].values() for step in job["steps"]]
    runs = " ".join(step.get("run", "") for step in steps)
    assert "scripts/refresh.py --config" in runs
    env = {k: v for step in steps for k, v in (step.get("env") or {}).items()}
    assert "secrets.HF_TOKEN" in env["HF_TOKEN"] and "secrets.INSTAG_ENDPOINT" in env["INSTAG_ENDPOINT"]
    assert "secrets.INSTAG_API_KEY" in env["INSTAG_API_KEY"]  # a protected endpoint works from CI


def test_the_endpoints_table_names_every_server_kind():
    from instag_hf.tagging.dialects import SERVER_KINDS

    text = README.read_text(encoding="utf-8")
    section = text.split("## Endpoints", 1)[1]
    table = section[section.index("| server kind") :].split("\n\n", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert {row.split("`")[1] for row in rows} == set(SERVER_KINDS)
    assert "Inference Providers" in table and "INSTAG_ROUTER_URL" in table
    assert all(row.count("|") == 5 for row in table.splitlines())  # kind, detection, form, authentication
