"""The `instag` CLI through click's CliRunner, against the TGI-protocol server and the Hub emulator."""

from __future__ import annotations

import json
import os
import random
import re
import shlex
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
from click.testing import CliRunner

from instag_hf import pipeline
from instag_hf.cli import main
from instag_hf.errors import ConfigurationError, NoEndpointError
from tests.conftest import REPO_ROOT
from tests.servers import _tgi_model

_WORDS = [word for words in _tgi_model.VOCABULARY.values() for word in words]


def make_rows(count: int, start: int = 0, seed: int = 0) -> list[dict[str, str]]:
    """Plain-prompt rows whose keywords give the fake model's tags a realistic spread."""
    rng = random.Random(seed)
    rows = [{"prompt": f"please {' '.join(rng.sample(_WORDS, 4))}"} for _ in range(start + count)]
    return [{"id": f"q{i}", "prompt": f"{i}: {row['prompt']}"} for i, row in enumerate(rows)][start:]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def invoke(*args: str) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


def invoke_run(*args: object, cache: Path, out: Path) -> object:
    """``instag run ARGS --cache-dir CACHE --output-dir OUT``: the chain into a folder, with its own request cache."""
    return invoke("run", *args, "--cache-dir", cache, "--output-dir", out)


def assert_ok(result) -> None:
    assert result.exit_code == 0, (result.output, result.exception)


_PROGRESS_BAR = re.compile(r"\[\d+:\d\d[<,\]]")  # tqdm's elapsed time, as datasets' loading bars show it


def assert_one_line_error(result, *needles: str) -> None:
    assert result.exit_code != 0, result.output
    assert not result.stdout.strip(), result.stdout
    lines = [line for line in result.output.splitlines() if line.strip() and not _PROGRESS_BAR.search(line)]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: "), lines
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in result.output


@pytest.fixture
def pool_file(tmp_path):
    return write_jsonl(tmp_path / "pool.jsonl", make_rows(40))


QUICK = ("--min-frequency", "2", "--no-semantic")


def test_run_to_output_dir(tgi, pool_file, tmp_path):
    out = tmp_path / "curated"
    result = invoke_run(
        "--dataset",
        pool_file,
        "--endpoint",
        tgi.url,
        "-n",
        8,
        "--seed",
        0,
        *QUICK,
        cache=tmp_path / "requests",
        out=out,
    )
    assert_ok(result)
    assert "pool: 40 rows" in result.output and "subset: 8 rows" in result.output
    assert {"README.md", "normalizer.json", "data", "plots"} <= {p.name for p in out.iterdir()}
    subset = datasets.load_dataset(str(out), split="train")
    assert len(subset) == 8
    assert {"prompt", "instag_raw_tags", "instag_error", "instag_tags"} <= set(subset.column_names)
    assert all(subset["instag_tags"])
    assert len(tgi.stats()["queries"]) == 40  # every query once
    # the card's reproduction command is one this CLI accepts, with the settings used
    command = next(line for line in (out / "README.md").read_text().splitlines() if line.startswith("instag run "))
    args = shlex.split(command)[2:]
    assert {"--min-frequency", "--no-semantic", "--seed"} <= set(args)
    main.commands["run"].make_context("run", args)


def test_run_push_to_hub_with_default_normalizer(tgi, hub_client, pool_file, tmp_path):
    """The default normalizer (semantic aggregation with the packaged embedding model included)."""
    repo = "alice/cli-run-push"
    result = invoke(
        "run",
        pool_file,
        "--endpoint",
        tgi.url,
        "-n",
        6,
        "--min-frequency",
        2,
        "--cache-dir",
        tmp_path / "requests",
        "--push-to",
        repo,
    )
    assert_ok(result)
    commits = hub_client.commits(repo)
    assert len(commits) == 2  # the initial commit, then one commit with everything
    files = hub_client.files(repo)
    assert {"README.md", "normalizer.json", "plots/top_tags.png"} <= set(files)
    assert any(name.startswith("data/train-") and name.endswith(".parquet") for name in files)
    assert commits[0]["id"] in result.output
    normalizer = json.loads(files["normalizer.json"])
    assert normalizer["parameters"]["semantic_aggregation"] is True
    assert normalizer["embedding_model"]
    assert len(datasets.load_dataset(repo, split="train")) == 6


def test_single_steps_chain_through_files(tgi, hub_client, pool_file, tmp_path):
    tagged, normalized, subset = tmp_path / "tagged", tmp_path / "normalized.parquet", tmp_path / "subset.jsonl"
    assert_ok(invoke("tag", "-d", pool_file, "--endpoint", tgi.url, "--cache-dir", tmp_path / "req", "-o", tagged))
    result = invoke("normalize", "-d", tagged, *QUICK, "--save-normalizer", tmp_path / "norm.json", "-o", normalized)
    assert_ok(result)
    assert "raw ->" in result.output
    result = invoke("analyze", "-d", normalized, "--top-k", 3, "--json", tmp_path / "stats.json")
    assert_ok(result)
    assert "diversity:" in result.output and "complexity:" in result.output
    assert json.loads((tmp_path / "stats.json").read_text())["rows"] == 40
    assert_ok(invoke("sample", "-d", normalized, "-n", 5, "--strategy", "instag", "--seed", 1, "-o", subset))
    assert len(subset.read_text().splitlines()) == 5
    result = invoke("analyze", subset, "--pool", normalized)
    assert_ok(result)
    assert "pool vocabulary" in result.output
    card_dir = tmp_path / "card"
    assert_ok(
        invoke("card", "-d", subset, "--pool", normalized, "--normalizer", tmp_path / "norm.json", "-o", card_dir)
    )
    assert "InsTag" in (card_dir / "README.md").read_text() and (card_dir / "plots").is_dir()
    # applying the saved normalizer again gives the same tags
    again = tmp_path / "again"
    assert_ok(invoke("normalize", tagged, "--normalizer", tmp_path / "norm.json", "-o", again))
    assert (
        datasets.load_from_disk(str(again))["instag_tags"]
        == datasets.load_dataset("parquet", data_files=str(normalized), split="train")["instag_tags"]
    )
    result = invoke(
        "push", subset, "--repo", "alice/cli-push", "--pool", normalized, "--normalizer", tmp_path / "norm.json"
    )
    assert_ok(result)
    assert "normalizer.json" in hub_client.files("alice/cli-push")


def test_run_reads_a_hub_dataset(tgi, hub_client, tmp_path):
    datasets.Dataset.from_list(make_rows(30, seed=3)).push_to_hub("alice/cli-source")
    out = tmp_path / "out"
    result = invoke_run(
        "-d",
        "alice/cli-source",
        "--split",
        "train",
        "--endpoint",
        tgi.url,
        "-n",
        5,
        *QUICK,
        cache=tmp_path / "req",
        out=out,
    )
    assert_ok(result)
    assert "pool: 30 rows" in result.output
    assert "alice/cli-source" in (out / "README.md").read_text()


@pytest.mark.parametrize(
    "make, needles",
    [
        (lambda tmp: "./no/such/pool.jsonl", ["No such file or folder", "pool.jsonl"]),
        (lambda tmp: str(write_bytes(tmp / "broken.jsonl", b'{"prompt": "a"}\n{not json\n')), ["Cannot read"]),
        (lambda tmp: str(write_bytes(tmp / "pool.txt", b"hello")), ["unknown file type"]),
        (lambda tmp: str(write_bytes(tmp / "empty.parquet", b"PAR1 not really")), ["Cannot read"]),
    ],
    ids=["missing-path", "unreadable-jsonl", "unknown-extension", "corrupt-parquet"],
)
def test_bad_dataset_path_is_one_line(tmp_path, make, needles):
    result = invoke("run", make(tmp_path), "--endpoint", "http://127.0.0.1:9", "-n", 1, "--output-dir", tmp_path / "o")
    assert_one_line_error(result, *needles)


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_unknown_hub_dataset_is_one_line(hub_client, tmp_path):
    result = invoke("tag", "alice/no-such-dataset", "--endpoint", "http://127.0.0.1:9", "-o", tmp_path / "o")
    assert_one_line_error(result, "alice/no-such-dataset", "neither a local file")


def test_unknown_split_is_one_line(pool_file, tmp_path):
    result = invoke("tag", pool_file, "--split", "test", "--endpoint", "http://127.0.0.1:9", "-o", tmp_path / "o")
    assert_one_line_error(result, "one split")


def test_no_endpoint_says_how_to_set_one(pool_file, tmp_path):
    result = invoke("run", pool_file, "-n", 2, "--cache-dir", tmp_path / "req", "--output-dir", tmp_path / "o")
    assert_one_line_error(result, "INSTAG_ENDPOINT")
    assert not (tmp_path / "o").exists()


def test_tiny_pool_normalizer_error_says_what_to_lower(tgi, pool_file, tmp_path):
    result = invoke_run(
        pool_file, "--endpoint", tgi.url, "-n", 2, "--no-semantic", cache=tmp_path / "req", out=tmp_path / "o"
    )  # min_frequency 20 on 40 rows
    assert_one_line_error(result, "min_frequency")


def test_sampling_more_rows_than_the_pool_is_one_line(tgi, pool_file, tmp_path):
    result = invoke_run(pool_file, "--endpoint", tgi.url, "-n", 500, *QUICK, cache=tmp_path / "req", out=tmp_path / "o")
    assert_one_line_error(result, "500")


def test_destination_is_required_once(pool_file, tmp_path):
    result = invoke("run", pool_file, "-n", 2)
    assert result.exit_code == 2 and "--push-to" in result.output
    result = invoke("tag", "-o", tmp_path / "o")
    assert result.exit_code == 2 and "--dataset" in result.output


def test_debug_shows_the_original_exception(pool_file, tmp_path):
    result = CliRunner().invoke(
        main,
        [
            "--debug",
            "run",
            str(pool_file),
            "-n",
            "2",
            "--cache-dir",
            str(tmp_path / "req"),
            "--output-dir",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code != 0
    assert isinstance(result.exception, NoEndpointError)


def test_an_endpoint_refusing_connections_from_the_start_is_one_line_in_bounded_time(pool_file, tmp_path):
    from instag_hf.local_llm import free_port

    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result = invoke("tag", pool_file, "--endpoint", closed, "--cache-dir", tmp_path / "req", "-o", tmp_path / "o")
    assert_one_line_error(result, closed, "does not answer")


# -- hardening (issue 11) ---------------------------------------------------------------------


@pytest.mark.parametrize("value", ["abc", "-5", "0"])
def test_a_bad_request_timeout_is_one_line_when_used_and_never_read_at_import(
    tgi, pool_file, tmp_path, monkeypatch, value
):
    env = {**os.environ, "INSTAG_REQUEST_TIMEOUT": value}
    for command in (["-c", "import instag_hf"], ["-m", "instag_hf.cli", "--help"]):
        done = subprocess.run(
            [sys.executable, *command], env=env, capture_output=True, text=True, cwd=REPO_ROOT, timeout=300, check=False
        )
        assert done.returncode == 0, done.stderr[-2000:]
    monkeypatch.setenv("INSTAG_REQUEST_TIMEOUT", value)
    result = invoke("tag", pool_file, "--endpoint", tgi.url, "--cache-dir", tmp_path / "req", "-o", tmp_path / "o")
    assert_one_line_error(result, "INSTAG_REQUEST_TIMEOUT", repr(value), "> 0")
    assert tgi.stats()["requests"] == 0


@pytest.mark.parametrize("value", ["127.0.0.1:8080", "ftp://127.0.0.1/tagger"])
def test_an_endpoint_that_is_not_http_is_refused_wherever_it_is_read(pool_file, tmp_path, monkeypatch, value):
    result = invoke("tag", pool_file, "--endpoint", value, "--cache-dir", tmp_path / "req", "-o", tmp_path / "o")
    assert_one_line_error(result, value, "not an http(s) URL", "http://host:port")
    monkeypatch.setenv("INSTAG_ENDPOINT", value)
    result = invoke("tag", pool_file, "--cache-dir", tmp_path / "req", "-o", tmp_path / "o")
    assert_one_line_error(result, "INSTAG_ENDPOINT", value, "not an http(s) URL", "http://host:port")


def normalized_folder(path: Path) -> Path:
    rows = [{"prompt": f"q{i}", "instag_tags": tags} for i, tags in enumerate([["a", "b"], ["a"], ["c"]])]
    datasets.Dataset.from_list(rows).save_to_disk(str(path))
    return path


def test_sampling_zero_rows_is_refused_up_front(tmp_path):
    result = invoke("sample", normalized_folder(tmp_path / "normalized"), "-n", 0, "-o", tmp_path / "x0")
    assert result.exit_code == 2 and "'-n'" in result.output and "0" in result.output
    assert not (tmp_path / "x0").exists()


def test_an_empty_dataset_written_to_a_folder_reads_back(tmp_path):
    from instag_hf import dataset_io

    empty = datasets.load_from_disk(str(normalized_folder(tmp_path / "normalized"))).select([])
    dataset_io.write_dataset(empty, tmp_path / "empty")
    back = dataset_io.load_source(str(tmp_path / "empty"))
    assert len(back) == 0 and back.features == empty.features


def test_the_tagging_bar_is_closed_when_tagging_ends(tgi, pool_file, tmp_path):
    # The bar's last line is its rate: it must cover tagging only, not the rest of the chain.
    result = invoke_run(pool_file, "--endpoint", tgi.url, "-n", 4, *QUICK, cache=tmp_path / "req", out=tmp_path / "o")
    assert_ok(result)
    err = result.stderr
    assert "InsTag tagging" in err and "InsTag normalizing" in err
    last_tagging, normalizing = err.rindex("InsTag tagging"), err.index("InsTag normalizing")
    assert last_tagging < normalizing
    final = err[last_tagging:normalizing]  # the final render, written when the bar closed
    assert "40 queries" in final and "in_flight=0" in final and "requests=40" in final


def test_the_card_names_the_model_that_tagged_the_rows(tgi, pool_file, tmp_path):
    tagged = tmp_path / "tagged"
    assert_ok(invoke("tag", pool_file, "--endpoint", tgi.url, "--cache-dir", tmp_path / "req", "-o", tagged))
    first_model = tgi.knobs()["model_id"]
    tgi.set_knobs(model_id="another-org/another-model")  # the server now serves another model
    assert_ok(invoke("normalize", tagged, *QUICK, "-o", tmp_path / "normalized"))
    assert_ok(invoke("sample", tmp_path / "normalized", "-n", 5, "--seed", 0, "-o", tmp_path / "subset"))
    assert_ok(invoke("card", tmp_path / "subset", "-o", tmp_path / "card"))
    line = tagger_line(tmp_path / "card" / "README.md")
    assert f"`{first_model}`" in line and "another-model" not in line  # from the rows, not the server

    tgi.reset()
    result = invoke_run(pool_file, "--endpoint", tgi.url, "-n", 5, *QUICK, cache=tmp_path / "req", out=tmp_path / "run")
    assert_ok(result)
    assert "tagging requests sent: 40" in result.output  # the new model tags again: nothing reused
    assert len(tgi.stats()["queries"]) == 40
    assert "`another-org/another-model`" in tagger_line(tmp_path / "run" / "README.md")


def tagger_line(card: Path) -> str:
    return next(line for line in card.read_text(encoding="utf-8").splitlines() if line.startswith("- **Tagger:**"))


@pytest.mark.parametrize("destination", [[], ["--push-to", "alice/x", "--output-dir", "out"]], ids=["neither", "both"])
def test_run_needs_exactly_one_destination_before_any_work(tgi, pool_file, tmp_path, destination):
    result = invoke("run", pool_file, "--endpoint", tgi.url, "-n", 2, "--cache-dir", tmp_path / "req", *destination)
    assert result.exit_code == 2 and "exactly one destination" in result.output
    assert tgi.stats()["requests"] == 0
    with pytest.raises(ConfigurationError, match="exactly one destination"):
        pipeline.publish(None, push_to=None, output_dir=None)  # type: ignore[arg-type]
