"""Keys: where they are read from, where they go (and where they never go), what a refusal
does, Hugging Face's inference hosts and Inference Providers router, and secrets kept out of
everything written."""

from __future__ import annotations

import functools
import logging
import pickle
from pathlib import Path

import datasets
import pytest
from click.testing import CliRunner
from datasets.fingerprint import Hasher

from instag_hf import Tagger
from instag_hf.cli import main
from instag_hf.errors import AuthenticationError, ConfigurationError
from instag_hf.tagging.auth import is_hf_inference_url
from instag_hf.tagging.dialects import OPENAI, TGI
from instag_hf.tagging.retry import RetryPolicy
from tests.servers._resolver import loopback_connector
from tests.servers.tgi_server import start_tgi_server
from tests.test_cli import assert_one_line_error

KEY = "sk-instag-test-7f3a9c2e51d84b06"
HUB_TOKEN = "hf_instagTestToken0123456789abcdef"
LLAMA = "meta-llama/Llama-3.1-8B-Instruct"
ENDPOINT_HOST = "my-tagger.endpoints.huggingface.cloud"
OTHER_HOST = "other-host.example"


def prompts(n: int, salt: str = "") -> datasets.Dataset:
    return datasets.Dataset.from_dict({"prompt": [f"{salt}Write a poem about the sea, take {i}" for i in range(n)]})


def one_line(error: BaseException) -> str:
    text = str(error)
    assert "\n" not in text
    return text


def files_holding(secret: str, *roots: Path) -> list[str]:
    """Every file under ``roots`` whose bytes contain ``secret``."""
    return [
        str(p) for root in roots for p in Path(root).rglob("*") if p.is_file() and secret.encode() in p.read_bytes()
    ]


@pytest.fixture
def guarded(openai_server):
    return openai_server(api_key=KEY)


def test_the_key_comes_from_python_instag_api_key_or_a_named_variable(guarded, request_cache_dir, monkeypatch):
    tagged = prompts(3, "a ").map(Tagger(guarded.url, api_key=KEY, cache=request_cache_dir).atag, batched=True)
    assert all(e is None for e in tagged["instag_error"])
    monkeypatch.setenv("INSTAG_API_KEY", KEY)
    tagged = prompts(3, "b ").map(Tagger(guarded.url, cache=request_cache_dir).atag, batched=True)
    assert all(e is None for e in tagged["instag_error"])
    monkeypatch.delenv("INSTAG_API_KEY")
    monkeypatch.setenv("VLLM_KEY", KEY)
    tagged = prompts(3, "c ").map(
        Tagger(guarded.url, api_key_env="VLLM_KEY", cache=request_cache_dir).atag, batched=True
    )
    assert all(e is None for e in tagged["instag_error"])
    stats = guarded.stats()
    assert stats["refused"] == 0 and stats["statuses"] == {"200": 9}


@pytest.mark.parametrize(
    ("how", "where"),
    [("python", "Tagger(api_key=...)"), ("env", "$INSTAG_API_KEY"), ("named", "$VLLM_KEY (named by api_key_env)")],
)
def test_a_key_refused_mid_run_stops_the_map_at_once_with_one_line(guarded, request_cache_dir, monkeypatch, how, where):
    kwargs = {"api_key": KEY} if how == "python" else {"api_key_env": "VLLM_KEY"} if how == "named" else {}
    monkeypatch.setenv("INSTAG_API_KEY" if how == "env" else "VLLM_KEY", KEY)
    tagger = Tagger(
        guarded.url,
        cache=request_cache_dir,
        retry=RetryPolicy(base_delay=0.01),
        concurrency=8,
        progress=False,
        **kwargs,
    )
    tagger.servers()  # detection passes...
    guarded.set_knobs(api_key="sk-rotated-by-the-admin")  # ...then the key is revoked
    with pytest.raises(AuthenticationError) as caught:
        prompts(500).map(tagger.atag, batched=True, batch_size=50)
    message = one_line(caught.value)
    assert message.startswith(f"Tagging endpoint {guarded.url} refused /v1/chat/completions with HTTP 401")
    assert f"read from {where}" in message and "Nothing was retried" in message
    assert isinstance(caught.value, PermissionError) and isinstance(caught.value, ConnectionError)
    stats = guarded.stats()
    assert tagger.stats.retries == 0 and max(stats["queries"].values()) == 1  # no query was asked twice
    # The first wave in flight, not 500 requests (plus the GET /v1/models of the map's
    # fingerprint, which asks what answers there and is refused too).
    assert stats["refused"] <= 8 + 1
    assert KEY not in message


@pytest.mark.parametrize("personality", ["openai", "tgi"])
def test_a_refusal_at_detection_sends_no_generation_request(personality):
    with start_tgi_server(personality=personality, api_key=KEY) as server:
        with pytest.raises(AuthenticationError) as caught:
            prompts(5).map(Tagger(server.url, cache=False).atag, batched=True)
        route = "/v1/models" if personality == "openai" else "/info"
        message = one_line(caught.value)
        assert f"{server.url} refused {route} with HTTP 401" in message
        assert "No key was sent: set INSTAG_API_KEY" in message and "--api-key-env NAME" in message
        assert server.stats()["requests"] == 0


def test_403_and_an_echoed_key_are_reported_without_the_key(guarded):
    guarded.set_knobs(refuse_status=403, echo_key=True)
    wrong = "sk-wrong-but-secret-5521"
    with pytest.raises(AuthenticationError) as caught:
        Tagger(guarded.url, api_key=wrong).servers()
    message = one_line(caught.value)
    assert "HTTP 403" in message and wrong not in message and "***" in message
    assert wrong.encode() not in pickle.dumps(caught.value)


def test_key_settings_are_checked_before_any_request(guarded, monkeypatch):
    monkeypatch.delenv("UNSET_KEY_VAR", raising=False)
    with pytest.raises(ConfigurationError, match=r"\$UNSET_KEY_VAR .* is not set"):
        Tagger(guarded.url, api_key_env="UNSET_KEY_VAR").servers()
    with pytest.raises(ConfigurationError, match="NAME of an environment variable") as caught:
        Tagger(guarded.url, api_key_env=KEY)  # the key itself, by mistake
    assert KEY not in str(caught.value)
    with pytest.raises(ConfigurationError, match="not both"):
        Tagger(guarded.url, api_key=KEY, api_key_env="VLLM_KEY")
    with pytest.raises(ConfigurationError, match="must not carry credentials"):
        Tagger(f"http://user:{KEY}@127.0.0.1:9")
    assert guarded.stats()["requests"] == 0


def test_keys_stay_out_of_pickles_fingerprints_reprs_and_logs(guarded, request_cache_dir, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    tagger = Tagger(guarded.url, api_key=KEY, cache=request_cache_dir)
    prompts(3).map(tagger.atag, batched=True)
    assert KEY.encode() not in pickle.dumps(tagger) and KEY not in repr(tagger) and KEY not in caplog.text
    # A key given in Python leaves no trace in the fingerprint: the same Tagger reading the key
    # from INSTAG_API_KEY hashes the same. (Without any key the server refuses to say what it
    # serves, and such a Tagger gets a fingerprint no map ever reuses.)
    monkeypatch.setenv("INSTAG_API_KEY", KEY)
    assert Hasher.hash(tagger) == Hasher.hash(Tagger(guarded.url, cache=request_cache_dir))
    monkeypatch.delenv("INSTAG_API_KEY")
    assert not files_holding(KEY, request_cache_dir)
    # the variable's name crosses to num_proc workers, and each reads the key itself
    monkeypatch.setenv("VLLM_KEY", KEY)
    named = Tagger(guarded.url, api_key_env="VLLM_KEY", cache=request_cache_dir, progress=False)
    tagged = prompts(8, "workers ").map(named, batched=True, batch_size=2, num_proc=2)
    assert all(e is None for e in tagged["instag_error"])
    # a key given in Python does not: the refusal the workers get says why
    with pytest.raises(AuthenticationError, match="never pickled, so num_proc workers do not have it"):
        prompts(8, "lost ").map(
            Tagger(guarded.url, api_key=KEY, cache=False, progress=False), batched=True, batch_size=2, num_proc=2
        )


def test_the_cli_reads_the_key_from_the_named_variable(guarded, tmp_path, monkeypatch):
    pool = tmp_path / "pool.jsonl"
    prompts(6).to_json(str(pool))
    monkeypatch.setenv("TAGGER_KEY", KEY)
    out, cache = tmp_path / "tagged", tmp_path / "requests"
    result = CliRunner().invoke(
        main,
        [
            "tag",
            str(pool),
            "--endpoint",
            guarded.url,
            "--api-key-env",
            "TAGGER_KEY",
            "--cache-dir",
            str(cache),
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Tagged 6 rows (0 with an instag_error" in result.output
    monkeypatch.setenv("TAGGER_KEY", "sk-a-wrong-key-0000")
    result = CliRunner().invoke(
        main,
        [
            "tag",
            str(pool),
            "--endpoint",
            guarded.url,
            "--api-key-env",
            "TAGGER_KEY",
            "--no-cache",
            "-o",
            str(tmp_path / "again"),
        ],
    )
    assert result.exit_code == 1
    assert_one_line_error(result, "HTTP 401", "$TAGGER_KEY")
    assert "sk-a-wrong-key-0000" not in result.output and KEY not in result.output
    assert not files_holding(KEY, tmp_path)


# -- Hugging Face's inference hosts ---------------------------------------------------------


def test_which_urls_count_as_hugging_face_inference_hosts():
    assert is_hf_inference_url("https://abc.us-east-1.aws.endpoints.huggingface.cloud", "https://router.huggingface.co")
    assert is_hf_inference_url("https://router.huggingface.co/v1", "https://router.huggingface.co")
    assert is_hf_inference_url("http://127.0.0.1:5000", "http://127.0.0.1:5000/v1")  # the router, moved for tests
    assert not is_hf_inference_url("http://abc.endpoints.huggingface.cloud", "https://router.huggingface.co")
    for other in (
        "https://endpoints.huggingface.cloud.evil.example",
        "https://huggingface.co",
        "https://evil.example/router.huggingface.co",
        "https://my-vllm.internal:8000",
    ):
        assert not is_hf_inference_url(other, "https://router.huggingface.co")


def test_the_hub_token_goes_to_an_inference_endpoint_and_to_no_other_host(tls_files, request_cache_dir, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
    cert = tls_files[0]
    names = (ENDPOINT_HOST, OTHER_HOST, "plain.endpoints.huggingface.cloud")
    connector = functools.partial(loopback_connector, names, cert)
    with (
        start_tgi_server(tls=tls_files, api_key=HUB_TOKEN) as endpoint,  # TGI behind an Inference Endpoint
        start_tgi_server(tls=tls_files, personality="openai") as other,
        start_tgi_server(personality="openai") as plain,
    ):
        hf_url = f"https://{ENDPOINT_HOST}:{endpoint.port}"
        tagger = Tagger(hf_url, connector=connector, cache=request_cache_dir, progress=False)
        tagged = prompts(5).map(tagger.atag, batched=True)
        assert all(e is None for e in tagged["instag_error"]) and tagger.servers()[0].kind == TGI
        assert endpoint.stats()["hosts"] == {f"{ENDPOINT_HOST}:{endpoint.port}": {"auth": 6}}  # /info + 5
        for server, url in (
            (other, f"https://{OTHER_HOST}:{other.port}"),
            (plain, f"http://plain.endpoints.huggingface.cloud:{plain.port}"),
        ):
            tagger = Tagger(url, connector=connector, cache=request_cache_dir, progress=False)
            tagged = prompts(5, "elsewhere ").map(tagger.atag, batched=True)
            assert all(e is None for e in tagged["instag_error"]) and tagger.servers()[0].kind == "vllm"
            hosts = server.stats()["hosts"]
            assert list(hosts) == [url.split("//", 1)[1]] and set(hosts[url.split("//", 1)[1]]) == {"no_auth"}
        assert not files_holding(HUB_TOKEN, request_cache_dir)


def test_an_inference_endpoint_without_a_token_says_how_to_log_in(tls_files, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with start_tgi_server(tls=tls_files, api_key=HUB_TOKEN) as endpoint:
        connector = functools.partial(loopback_connector, (ENDPOINT_HOST,), tls_files[0])
        with pytest.raises(
            AuthenticationError, match="no Hugging Face token was found; run `hf auth login` or set HF_TOKEN"
        ):
            Tagger(f"https://{ENDPOINT_HOST}:{endpoint.port}", connector=connector).servers()


# -- Inference Providers through the router ---------------------------------------------------


@pytest.fixture
def router(monkeypatch):
    models = [LLAMA] + [f"org-{i}/model-{i}" for i in range(30)]
    with start_tgi_server(personality="openai", models=models, owned_by="meta-llama", api_key=HUB_TOKEN) as server:
        monkeypatch.setenv("INSTAG_ROUTER_URL", server.url + "/v1")
        monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)
        yield server


@pytest.mark.parametrize("provider", ["auto", "together"])
def test_providers_tag_through_the_router_with_the_hub_token_and_its_429s_are_retried(
    router, request_cache_dir, provider
):
    router.set_knobs(fail_first_attempts=1, fail_first_fault="429", retry_after=0)
    tagger = Tagger(model=LLAMA, provider=provider, cache=request_cache_dir, progress=False)
    assert tagger.endpoints == (router.url,)
    tagged = prompts(12).map(tagger.atag, batched=True)
    assert all(e is None for e in tagged["instag_error"]) and all(tagged["instag_raw_tags"])
    stats = router.stats()
    assert stats["statuses"] == {"429": 12, "200": 12} and tagger.stats.retries == 12
    assert all(counts == {"auth": counts["auth"]} for counts in stats["hosts"].values())
    info = tagger.servers()[0]
    assert info.kind == OPENAI and info.model_id == (LLAMA if provider == "auto" else f"{LLAMA}:together")
    assert "provider=" in repr(tagger) and HUB_TOKEN not in repr(tagger)


def test_the_cli_tags_through_a_provider(router, tmp_path):
    pool = tmp_path / "pool.jsonl"
    prompts(4).to_json(str(pool))
    result = CliRunner().invoke(
        main,
        [
            "tag",
            str(pool),
            "--provider",
            "auto",
            "--model",
            LLAMA,
            "--cache-dir",
            str(tmp_path / "req"),
            "-o",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Tagged 4 rows (0 with an instag_error; 4 requests" in result.output
    assert not files_holding(HUB_TOKEN, tmp_path)


def test_provider_settings_are_checked_when_built():
    with pytest.raises(ConfigurationError, match="provider needs a model"):
        Tagger(provider="auto")
    with pytest.raises(ConfigurationError, match="drop the endpoint"):
        Tagger("http://127.0.0.1:9", model=LLAMA, provider="auto")
    with pytest.raises(ConfigurationError, match="already names a provider"):
        Tagger(model=f"{LLAMA}:fastest", provider="together")
