"""The InsTag ``evaluate`` measurement, loaded the way users load it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import evaluate
import pytest
from datasets import Dataset

import instag_hf
from instag_hf.analysis.stats import MEASUREMENT_PATH


@pytest.fixture(scope="module")
def instag():
    return evaluate.load(MEASUREMENT_PATH)


def test_the_exported_path_holds_the_module_and_its_card():
    folder = Path(MEASUREMENT_PATH)
    assert (folder / "instag.py").is_file() and (folder / "README.md").is_file()


def test_compute(instag):
    assert instag.compute(tags=[["math", "coding"], ["math"], []], vocabulary_size=4) == {
        "diversity": 2,
        "coverage": 0.5,
        "complexity": 1.0,
    }
    assert instag.compute(tags=[["a", "a", "b"]]) == {"diversity": 2, "coverage": None, "complexity": 2.0}
    assert instag.compute(tags=[], vocabulary_size=0) == {"diversity": 0, "coverage": 0.0, "complexity": 0.0}


def test_batches_accumulate(instag):
    instag.add_batch(tags=[["x"]])
    instag.add_batch(tags=[["y", "x"]])
    assert instag.compute(vocabulary_size=2) == {"diversity": 2, "coverage": 1.0, "complexity": 1.5}


def test_agrees_with_analyze(instag):
    ds = Dataset.from_dict({"instag_tags": [["a", "b"], [], ["c"], ["a", "b", "d"]]})
    stats = instag_hf.analyze(ds, vocabulary=["a", "b", "c", "d", "e"])
    result = instag.compute(tags=ds["instag_tags"], vocabulary_size=stats.vocabulary_size)
    assert result == {"diversity": stats.unique_tags, "coverage": stats.coverage, "complexity": stats.mean_tags}


def test_loads_offline_from_the_file_and_the_folder(tmp_path):
    # A fresh process with the Hub unreachable: evaluate must resolve the local path itself.
    env = {**os.environ, "HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1"}
    script = (
        "import evaluate, json, instag_hf.analysis.stats as a\n"
        "out = [evaluate.load(p).compute(tags=[['a', 'b']], vocabulary_size=4) "
        "for p in (a.MEASUREMENT_PATH, a.MEASUREMENT_PATH + '/instag.py')]\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=Path(instag_hf.__file__).parents[1],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    expected = {"diversity": 2, "coverage": 0.5, "complexity": 2.0}
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [expected, expected]
