"""No test result depends on the user's shell: a part of the suite run again with the
variables instag_hf, datasets, huggingface_hub and tqdm read set to hostile values.

``tests/conftest.py`` drops every ``INSTAG_*``, ``HF_*``, ``HUGGING_FACE_*``, ``TQDM_*`` (...)
variable before anything reads it and sets the suite's own; this test is what keeps that true
(``HF_DATASETS_DISABLE_PROGRESS_BARS=1`` once failed the progress-bar test below).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

#: What a user's shell may well hold; each would change a result if it reached the code.
HOSTILE = {
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TQDM_DISABLE": "1",
    "HF_TOKEN": "hf_from_the_users_shell",
    "HF_ENDPOINT": "http://127.0.0.1:9",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HOME": "/nonexistent/hf-home",
    "INSTAG_ENDPOINT": "http://127.0.0.1:9",
    "INSTAG_API_KEY": "key-from-the-users-shell",
    "INSTAG_CACHE": "0",
    "INSTAG_CACHE_DIR": "/nonexistent/instag-cache",
    "INSTAG_REQUEST_TIMEOUT": "abc",
    "INSTAG_EMBEDDING_MODEL": "org/not-a-model",
}
#: Tests that read progress bars, keys, endpoints, the request cache and the Hub.
PART = [
    "tests/tagging/test_cost.py",
    "tests/publishing/test_hub.py",
    "tests/test_cli.py::test_single_steps_chain_through_files",
    "tests/test_cli.py::test_no_endpoint_says_how_to_set_one",
]


@pytest.mark.timeout(900)
def test_a_part_of_the_suite_passes_with_hostile_variables_in_the_shell():
    environment = {**os.environ, **HOSTILE}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *PART],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-2000:]
    assert done.returncode == 0, done.stdout[-6000:]
    assert " passed" in summary and "skipped" not in summary and "deselected" not in summary, summary
