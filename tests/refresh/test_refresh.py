"""`instag refresh`: rebuild Hub targets when their source changes, tagging new queries only."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import datasets
import pytest
import yaml
from click.testing import CliRunner

from instag_hf.cli import EXIT_BAD_CONFIG, EXIT_FAILED, main
from instag_hf.refresh.runner import STATE_FILE, TAGS_FILE
from tests.conftest import REPO_ROOT
from tests.servers.tgi_server import start_tgi_server
from tests.test_cli import assert_one_line_error, make_rows, write_jsonl

NORMALIZER = {"min_frequency": 2, "semantic_aggregation": False}


def write_config(path, targets, **defaults):
    path.write_text(yaml.safe_dump({"defaults": defaults, "targets": targets}, sort_keys=False), encoding="utf-8")
    return path


def refresh(config, *extra):
    return CliRunner().invoke(main, ["refresh", "--config", str(config), *map(str, extra)])


def prompts_sent(tgi) -> dict[str, int]:
    return tgi.stats()["queries"]


@pytest.fixture
def fresh_request_cache(tmp_path, monkeypatch):
    """Point the request cache at a new folder: reuse must come from the target, not the cache."""

    def renew(name: str) -> None:
        monkeypatch.setenv("INSTAG_CACHE_DIR", str(tmp_path / name))

    renew("requests-0")
    return renew


def test_refresh_tags_only_new_queries_and_skips_when_unchanged(tgi, hub_client, tmp_path, fresh_request_cache):
    source, target = "alice/refresh-src", "alice/refresh-out"
    rows = make_rows(40)
    datasets.Dataset.from_list(rows).push_to_hub(source)
    config = write_config(
        tmp_path / "refresh.yaml",
        [{"repo": target, "source": source}],
        n=8,
        seed=0,
        endpoint=tgi.url,
        normalizer=NORMALIZER,
    )

    result = refresh(config)
    assert result.exit_code == 0, result.output
    assert f"{target}: updated" in result.output and "40 new, 0 reused" in result.output
    assert len(prompts_sent(tgi)) == 40
    files = hub_client.files(target)
    assert {STATE_FILE, TAGS_FILE, "README.md", "normalizer.json"} <= set(files)
    state = json.loads(files[STATE_FILE])
    assert state["source_revision"] == hub_client.refs(source)["refs/heads/main"]
    assert state["pool_rows"] == 40

    # 10% new rows in the source; a fresh request cache, so only the target's stored tags can help
    new_rows = make_rows(4, start=40)
    datasets.Dataset.from_list(rows + new_rows).push_to_hub(source)
    tgi.reset()
    fresh_request_cache("requests-1")
    before = len(hub_client.commits(target))
    result = refresh(config)
    assert result.exit_code == 0, result.output
    assert "4 new, 40 reused" in result.output and "4 requests sent" in result.output
    assert len(hub_client.commits(target)) == before + 1  # data, card and state land together
    assert prompts_sent(tgi) == {row["prompt"]: 1 for row in new_rows}
    assert json.loads(hub_client.files(target)[STATE_FILE])["pool_rows"] == 44
    assert len(datasets.load_dataset(target, split="train")) == 8

    # nothing new: no request, no commit
    commits = hub_client.commits(target)
    tgi.reset()
    result = refresh(config)
    assert result.exit_code == 0, result.output
    assert f"{target}: up-to-date" in result.output
    assert hub_client.commits(target) == commits
    assert tgi.stats()["requests"] == 0


def test_changed_settings_rebuild_without_new_requests(tgi, hub_client, tmp_path, fresh_request_cache):
    source, target = "alice/refresh-settings-src", "alice/refresh-settings-out"
    datasets.Dataset.from_list(make_rows(30, seed=5)).push_to_hub(source)
    first = write_config(
        tmp_path / "a.yaml", [{"repo": target, "source": source, "n": 5}], endpoint=tgi.url, normalizer=NORMALIZER
    )
    assert refresh(first).exit_code == 0
    tgi.reset()
    fresh_request_cache("requests-1")
    second = write_config(
        tmp_path / "b.yaml", [{"repo": target, "source": source, "n": 7}], endpoint=tgi.url, normalizer=NORMALIZER
    )
    result = refresh(second)
    assert result.exit_code == 0, result.output
    assert "0 new, 30 reused" in result.output
    assert tgi.stats()["requests"] == 0
    assert len(datasets.load_dataset(target, split="train")) == 7


def test_a_card_template_is_used_and_editing_it_rebuilds_the_card(
    tgi, hub_client, tmp_path, fresh_request_cache, monkeypatch
):
    source, target = "alice/refresh-card-src", "alice/refresh-card-out"
    datasets.Dataset.from_list(make_rows(30, seed=7)).push_to_hub(source)
    monkeypatch.chdir(tmp_path)  # the path is relative to where the job runs
    packaged = (REPO_ROOT / "dataset_cards" / "instag_subset.md.jinja").read_text(encoding="utf-8")
    template = tmp_path / "card.md.jinja"
    template.write_text(packaged.replace("## What InsTag is", "Team note v1.\n\n## What InsTag is"), encoding="utf-8")
    config = write_config(
        tmp_path / "refresh.yaml",
        [{"repo": target, "source": source, "n": 5, "card_template": "card.md.jinja"}],
        endpoint=tgi.url,
        normalizer=NORMALIZER,
    )
    assert refresh(config).exit_code == 0
    assert "Team note v1." in _text(hub_client.files(target)["README.md"])
    assert "up-to-date" in refresh(config).output

    template.write_text(packaged.replace("## What InsTag is", "Team note v2.\n\n## What InsTag is"), encoding="utf-8")
    tgi.reset()
    result = refresh(config)
    assert result.exit_code == 0 and f"{target}: updated" in result.output, result.output
    readme = _text(hub_client.files(target)["README.md"])
    assert "Team note v2." in readme and "Team note v1." not in readme
    assert tgi.stats()["requests"] == 0  # the tags were kept: only the card changed


def _text(content: str | bytes) -> str:
    return content.decode("utf-8") if isinstance(content, bytes) else content


def test_refresh_opens_a_pull_request_once(tgi, hub_client, tmp_path, fresh_request_cache):
    source, target = "alice/refresh-pr-src", "alice/refresh-pr-out"
    datasets.Dataset.from_list(make_rows(30, seed=7)).push_to_hub(source)
    config = write_config(
        tmp_path / "refresh.yaml",
        [{"repo": target, "source": source, "create_pr": True}],
        n=5,
        endpoint=tgi.url,
        normalizer=NORMALIZER,
    )
    result = refresh(config)
    assert result.exit_code == 0, result.output
    assert f"{target}: pr-opened" in result.output and "/discussions/1" in result.output
    refs = hub_client.refs(target)
    assert "refs/pr/1" in refs
    assert STATE_FILE in hub_client.files(target, revision="refs/pr/1")
    assert STATE_FILE not in hub_client.files(target)  # main is left alone until the PR is merged

    result = refresh(config)
    assert result.exit_code == 0, result.output
    assert f"{target}: pr-pending" in result.output
    assert "refs/pr/2" not in hub_client.refs(target)


def test_local_source_file_is_hashed(tgi, hub_client, tmp_path, fresh_request_cache):
    pool = write_jsonl(tmp_path / "pool.jsonl", make_rows(25, seed=9))
    config = write_config(
        tmp_path / "refresh.yaml",
        [{"repo": "alice/refresh-local", "source": {"id": str(pool), "format": "prompt"}}],
        n=4,
        endpoint=tgi.url,
        normalizer=NORMALIZER,
    )
    assert refresh(config).exit_code == 0
    result = refresh(config, "--dry-run")
    assert result.exit_code == 0 and "up-to-date (source sha256:" in result.output
    write_jsonl(pool, make_rows(27, seed=9))
    result = refresh(config, "--dry-run")
    assert result.exit_code == 0 and "would-update" in result.output
    tgi.reset()
    result = refresh(config)
    assert result.exit_code == 0, result.output
    assert "2 new, 25 reused" in result.output


def test_a_failing_target_exits_1_and_the_others_still_run(tgi, hub_client, tmp_path, fresh_request_cache):
    pool = write_jsonl(tmp_path / "pool.jsonl", make_rows(20, seed=11))
    config = write_config(
        tmp_path / "refresh.yaml",
        [
            {"repo": "alice/refresh-dead", "source": str(pool), "endpoint": "http://127.0.0.1:9"},
            {"repo": "alice/refresh-alive", "source": str(pool)},
        ],
        n=3,
        endpoint=tgi.url,
        normalizer=NORMALIZER,
    )
    result = refresh(config)
    assert result.exit_code == EXIT_FAILED, result.output
    assert "alice/refresh-dead: failed: " in result.output and "does not answer" in result.output
    assert "alice/refresh-alive: updated" in result.output
    assert "1 ok, 1 failed" in result.output


@pytest.mark.parametrize(
    "content, needle",
    [
        (None, "Cannot read the refresh config"),
        ("targets: [", "not valid YAML"),
        ("targets: []", "no targets"),
        ("targets:\n  - {repo: alice/x, source: a/b, n: 3, colour: red}", "colour"),
        ("targets:\n  - {repo: alice/x, source: a/b, n: -1}", "n must be"),
        ("targets:\n  - {repo: alice/x, source: a/b}", "no 'n'"),
        ("targets:\n  - {repo: 'not a repo', source: a/b, n: 3}", "not a Hub repo id"),
        ("targets:\n  - {repo: alice/x, source: a/b, n: 3, normalizer: {min_frequency: 0}}", "min_frequency"),
        ("targets:\n  - {repo: alice/x, source: a/b, n: 3, strategy: best}", "strategy"),
        ("targets:\n  - {repo: alice/x, source: a/b, n: 3, card_template: nowhere.jinja}", "cannot be read"),
    ],
    ids=[
        "missing",
        "yaml",
        "empty",
        "unknown-key",
        "bad-n",
        "no-n",
        "bad-repo",
        "bad-normalizer",
        "bad-strategy",
        "no-card-template",
    ],  # fmt: skip
)
def test_bad_config_exits_2_with_one_line(tmp_path, content, needle):
    path = tmp_path / "refresh.yaml"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    result = refresh(path)
    assert result.exit_code == EXIT_BAD_CONFIG
    assert_one_line_error(result, needle)


def test_unknown_target_is_a_config_error(tmp_path):
    config = write_config(tmp_path / "refresh.yaml", [{"repo": "alice/x", "source": "a/b"}], n=3)
    result = refresh(config, "--target", "alice/y")
    assert result.exit_code == EXIT_BAD_CONFIG
    assert_one_line_error(result, "alice/y")


def test_ci_entry_point_runs_in_a_subprocess(tgi, hub, tmp_path):
    pool = write_jsonl(tmp_path / "pool.jsonl", make_rows(20, seed=13))
    config = write_config(
        tmp_path / "refresh.yaml", [{"repo": "alice/refresh-ci", "source": str(pool)}], n=3, normalizer=NORMALIZER
    )
    env = {
        **os.environ,
        **hub.env(tmp_path / "hf_home", token="hf_test_writer"),
        "INSTAG_ENDPOINT": tgi.url,
        "INSTAG_CACHE_DIR": str(tmp_path / "requests"),
        "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    }
    command = [sys.executable, str(REPO_ROOT / "scripts" / "refresh.py"), "--config", str(config)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stderr
    assert "alice/refresh-ci: updated" in done.stdout
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path, check=False)
    assert again.returncode == 0 and "alice/refresh-ci: up-to-date" in again.stdout


# -- hardening (issue 11): one target's failure, whatever it is, stays that target's ---------


def output_lines(result) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.strip()]


def test_a_dropped_hub_connection_fails_its_target_and_the_others_run(tgi, hub_client, tmp_path, fresh_request_cache):
    pool = write_jsonl(tmp_path / "pool.jsonl", make_rows(20, seed=17))
    config = write_config(
        tmp_path / "refresh.yaml",
        [
            {"repo": "alice/refresh-dropped", "source": str(pool)},
            {"repo": "alice/refresh-kept", "source": str(pool)},
        ],
        n=3,
        endpoint=tgi.url,
        normalizer=NORMALIZER,
    )
    hub_client.set_faults(drop="alice/refresh-dropped")  # the Hub closes target 1's connections
    result = refresh(config)
    assert result.exit_code == EXIT_FAILED, result.output
    lines = output_lines(result)
    failed = next(line for line in lines if line.startswith("alice/refresh-dropped: failed: "))
    assert "Cannot reach the Hub" in failed and hub_client.url in failed
    assert any(line.startswith("alice/refresh-kept: updated") for line in lines)
    assert lines[-1] == "2 target(s): 1 ok, 1 failed"


def test_a_dead_hub_endpoint_gives_every_target_its_own_failed_line(tgi, tmp_path, fresh_request_cache):
    from tests.servers.hub_emulator import client_environment

    pool = write_jsonl(tmp_path / "pool.jsonl", make_rows(10, seed=19))
    config = write_config(
        tmp_path / "refresh.yaml",
        [
            {"repo": "alice/refresh-nohub-1", "source": str(pool)},
            {"repo": "alice/refresh-nohub-2", "source": str(pool)},
        ],
        n=3,
        endpoint=tgi.url,
        normalizer=NORMALIZER,
    )
    with client_environment("http://127.0.0.1:9", tmp_path / "hf_home", token="hf_test_writer"):
        result = refresh(config)
    assert result.exit_code == EXIT_FAILED, result.output
    lines = output_lines(result)
    for repo in ("alice/refresh-nohub-1", "alice/refresh-nohub-2"):
        line = next(line for line in lines if line.startswith(f"{repo}: failed: "))
        assert "http://127.0.0.1:9" in line and "HF_ENDPOINT" in line
    assert lines[-1] == "2 target(s): 0 ok, 2 failed"


def test_a_corrupt_request_cache_does_not_stop_a_refresh(tgi, hub_client, tmp_path, fresh_request_cache, caplog):
    fresh_request_cache("broken-cache")
    (tmp_path / "broken-cache").mkdir()
    (tmp_path / "broken-cache" / "requests.sqlite3").write_bytes(b"not a database" * 100)
    pool = write_jsonl(tmp_path / "pool.jsonl", make_rows(12, seed=23))
    config = write_config(
        tmp_path / "refresh.yaml",
        [{"repo": "alice/refresh-broken-cache", "source": str(pool)}],
        n=3,
        endpoint=tgi.url,
        normalizer=NORMALIZER,
    )
    result = refresh(config)
    assert result.exit_code == 0, result.output
    assert "alice/refresh-broken-cache: updated" in result.output
    assert "moved it aside" in caplog.text


@pytest.mark.parametrize("endpoint", ["127.0.0.1:8080", "ftp://127.0.0.1/tagger"])
def test_an_endpoint_in_the_config_that_is_not_http_exits_2(tmp_path, endpoint):
    config = write_config(tmp_path / "refresh.yaml", [{"repo": "alice/x", "source": "a/b", "endpoint": endpoint}], n=3)
    result = refresh(config)
    assert result.exit_code == EXIT_BAD_CONFIG
    assert_one_line_error(result, "alice/x", endpoint, "not an http(s) URL")


@pytest.mark.parametrize(
    "variable, value",
    [
        ("INSTAG_ENDPOINT", "127.0.0.1:8080"),
        ("INSTAG_ENDPOINT", "ftp://127.0.0.1/tagger"),
        ("INSTAG_REQUEST_TIMEOUT", "abc"),
        ("INSTAG_REQUEST_TIMEOUT", "-1"),
    ],
)
def test_a_bad_environment_exits_2_before_any_work(tmp_path, monkeypatch, variable, value):
    config = write_config(tmp_path / "refresh.yaml", [{"repo": "alice/x", "source": "a/b"}], n=3)
    monkeypatch.setenv(variable, value)
    if variable != "INSTAG_ENDPOINT":
        monkeypatch.setenv("INSTAG_ENDPOINT", "http://127.0.0.1:9")
    result = refresh(config)
    assert result.exit_code == EXIT_BAD_CONFIG
    assert_one_line_error(result, variable, value)


def test_refresh_with_api_key_env_against_a_protected_server(
    hub_client, tmp_path, fresh_request_cache, monkeypatch, caplog
):
    key = "sk-refresh-secret-3141592653"
    monkeypatch.setenv("REFRESH_KEY", key)
    caplog.set_level(logging.DEBUG)
    with start_tgi_server(personality="openai", api_key=key, models=["org/small", "org/large"]) as server:
        pool = write_jsonl(tmp_path / "pool.jsonl", make_rows(20, seed=5))
        config = write_config(
            tmp_path / "refresh.yaml",
            [{"repo": "alice/refresh-guarded", "source": str(pool)}],
            n=4,
            endpoint=server.url,
            api_key_env="REFRESH_KEY",
            model="org/large",
            normalizer=NORMALIZER,
        )
        result = refresh(config)
        assert result.exit_code == 0, result.output
        assert "alice/refresh-guarded: updated" in result.output and "generated tokens)" in result.output
        stats = server.stats()
        assert stats["refused"] == 0 and stats["statuses"] == {"200": 20}
        card = hub_client.files("alice/refresh-guarded")["README.md"].decode()
        assert "**Tagging cost:** 20 queries" in card and "model `org/large` on server kind `vllm`" in card
        assert "instag_hf.Tagger(template='paper', model='org/large')" in card and " --model org/large " in card

        write_jsonl(pool, make_rows(22, seed=5))
        server.reset()
        result = refresh(config, "--dry-run")
        assert result.exit_code == 0, result.output
        assert (
            "would-update" in result.output
            and "would tag 2 of 22 rows (2 requests after the request cache" in result.output
        )
        assert server.stats()["requests"] == 0  # a dry run sends nothing

        # the variable can be named on the command line instead of in the config
        monkeypatch.setenv("OTHER_KEY", key)
        no_name = write_config(
            tmp_path / "no-name.yaml",
            [{"repo": "alice/refresh-guarded", "source": str(pool)}],
            n=4,
            endpoint=server.url,
            model="org/large",
            normalizer=NORMALIZER,
        )
        result = refresh(no_name, "--dry-run", "--api-key-env", "OTHER_KEY")
        assert result.exit_code == 0 and "would tag 2 of 22 rows" in result.output, result.output
        pasted = refresh(no_name, "--dry-run", "--api-key-env", key)  # the key itself, pasted by mistake
        assert pasted.exit_code == EXIT_BAD_CONFIG and "NAME of an environment variable" in pasted.output
        assert key not in pasted.output

        monkeypatch.delenv("REFRESH_KEY")  # the CI secret went missing: the target fails, saying which
        result = refresh(config)
        assert result.exit_code == EXIT_FAILED
        assert "alice/refresh-guarded: failed: The API key variable $REFRESH_KEY" in result.output
        assert server.stats()["requests"] == 0

    assert key not in result.output and key not in caplog.text
    assert not [
        p
        for p in (*tmp_path.rglob("*"), *hub_client.storage_dir.rglob("*"))
        if p.is_file() and key.encode() in p.read_bytes()
    ]


def test_refresh_through_inference_providers(hub_client, tmp_path, fresh_request_cache, monkeypatch):
    model = "meta-llama/Llama-3.1-8B-Instruct"
    # hub_client logged in as alice: the same token opens the (loopback) router
    with start_tgi_server(
        personality="openai", models=[model, "org/other"], owned_by="meta-llama", api_key="hf_test_writer"
    ) as router:
        monkeypatch.setenv("INSTAG_ROUTER_URL", router.url + "/v1")
        pool = write_jsonl(tmp_path / "pool.jsonl", make_rows(12, seed=6))
        config = write_config(
            tmp_path / "refresh.yaml",
            [{"repo": "alice/refresh-provider", "source": str(pool)}],
            n=3,
            provider="auto",
            model=model,
            normalizer=NORMALIZER,
        )
        result = refresh(config)
        assert result.exit_code == 0, result.output
        assert "alice/refresh-provider: updated" in result.output and "12 requests sent" in result.output
        assert all(set(counts) == {"auth"} for counts in router.stats()["hosts"].values())
        card = hub_client.files("alice/refresh-provider")["README.md"].decode()
        assert f"model `{model}` on server kind `openai`" in card and "--provider auto" in card
