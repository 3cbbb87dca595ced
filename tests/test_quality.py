"""The code checks a reviewer would run, run by the suite so CI enforces them.

``ruff check`` (lint), ``ruff format --check`` (one formatting, no style diffs in review) and
``mypy``. The tools come from the ``dev`` extra, which ``make install`` and ``.ci/run``
install; a missing tool fails the test rather than skipping it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYTHON_TREES = ["instag_hf", "tests", "benchmarks", "scripts", "setup.py"]


def _tool(name: str) -> str:
    # The venv's own copy first: a system ruff of another version formats differently.
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    assert found, f"{name} is not installed: run `make install` (it installs the dev extra)"
    return found


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["ruff", "check", *PYTHON_TREES], id="ruff-check"),
        pytest.param(["ruff", "format", "--check", *PYTHON_TREES], id="ruff-format"),
        pytest.param(["mypy", "instag_hf", "--ignore-missing-imports"], id="mypy"),
    ],
)
def test_code_passes_the_checks(command: list[str]) -> None:
    result = _run(_tool(command[0]), *command[1:])
    assert result.returncode == 0, f"`{' '.join(command)}` failed:\n{result.stdout}{result.stderr}"
