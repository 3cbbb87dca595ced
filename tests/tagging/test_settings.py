"""A Tagger's settings are one frozen object that init, pickling, the fingerprint and the client read."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import datasets
import pytest
from click.testing import CliRunner
from datasets.fingerprint import Hasher

from instag_hf import Tagger
from instag_hf.cli import main
from instag_hf.cli.options import TAGGER_ARGS
from instag_hf.errors import ConfigurationError
from instag_hf.refresh.config import TAGGER_KEYS
from instag_hf.tagging.prompts import PromptTemplate
from instag_hf.tagging.settings import SETTINGS, TaggerSettings, parse_endpoints, public_name, setting

QUERIES = {"prompt": [f"Explain topic number {i} in detail" for i in range(8)]}


def test_settings_are_frozen_and_the_taggers_views_read_only():
    tagger = Tagger("http://127.0.0.1:9", model="m", max_new_tokens=64)
    with pytest.raises(dataclasses.FrozenInstanceError):
        tagger.settings.max_new_tokens = 1  # type: ignore[misc]
    with pytest.raises(AttributeError):
        tagger.max_new_tokens = 1
    assert (tagger.model, tagger.max_new_tokens) == ("m", 64)


def test_settings_normalise_what_tagger_accepts(tmp_path):
    settings = TaggerSettings(
        endpoints="http://a:1/v1/, http://b:2", template="instagger", cache=tmp_path, fail_fast_seconds=3
    )
    assert settings.endpoints == ("http://a:1", "http://b:2")
    assert isinstance(settings.template, PromptTemplate) and settings.template.name == "instagger"
    assert settings.cache == str(tmp_path) and isinstance(settings.cache, str)
    assert settings.fail_fast_seconds == 3.0 and isinstance(settings.fail_fast_seconds, float)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"endpoints": "tgi-host:8080"}, "is not an http"),
        ({"endpoints": "http://user:key@host:1"}, "must not carry credentials"),
        ({"max_new_tokens": 0}, "max_new_tokens must be >= 1"),
        ({"concurrency": 0}, "concurrency must be >= 1"),
        ({"parse_retries": -1}, "parse_retries must be >= 0"),
        ({"long_queries": "drop"}, "long_queries must be 'truncate' or 'error'"),
        ({"fail_fast_seconds": -1}, "fail_fast_seconds must be >= 0"),
        ({"timeout": 0}, "REQUEST_TIMEOUT|timeout"),
        ({"format": "csv"}, "Unknown format"),
        ({"server": "triton"}, "Unknown server kind"),
        ({"provider": "auto"}, "provider needs a model"),
        ({"api_key_env": "sk-live-123"}, "NAME of an environment variable"),
        ({"connector": "not callable"}, "connector must be a callable"),
    ],
)
def test_settings_reject_bad_values_when_built(values, message):
    with pytest.raises(ConfigurationError, match=message):
        TaggerSettings(**values)
    # Tagger builds the same object, so it rejects the same values with the same words.
    arguments = {"endpoint" if k == "endpoints" else k: v for k, v in values.items()}
    with pytest.raises(ConfigurationError, match=message):
        Tagger(**arguments)


def test_a_key_is_never_a_setting():
    tagger = Tagger("http://127.0.0.1:9", api_key="sk-secret-value", headers={"X-Secret": "hush"})
    assert "sk-secret-value" not in repr(tagger.settings) and "hush" not in repr(tagger.settings)
    assert b"sk-secret-value" not in pickle.dumps(tagger) and b"hush" not in pickle.dumps(tagger)
    with pytest.raises(ConfigurationError, match="Give the key once"):
        Tagger.from_settings(TaggerSettings(api_key_env="MY_KEY"), api_key="sk-secret-value")


def test_pickling_fingerprint_and_from_settings_share_the_settings(tgi, request_cache_dir):
    tagger = Tagger(tgi.url, template="instagger", max_new_tokens=64, concurrency=2, cache=request_cache_dir)
    assert pickle.loads(pickle.dumps(tagger)).settings == tagger.settings
    same = Tagger.from_settings(tagger.settings)
    assert Hasher.hash(same) == Hasher.hash(tagger)
    # A setting that decides the tags moves the fingerprint; so datasets never reuses the map.
    other = Tagger.from_settings(dataclasses.replace(tagger.settings, max_new_tokens=65))
    assert Hasher.hash(other) != Hasher.hash(tagger)
    assert set(tagger.settings.output_fields()) == {
        "model", "server", "provider", "template", "format", "column", "max_new_tokens", "parse_retries",
        "long_queries",
    }  # fmt: skip


def test_the_client_tags_with_the_settings(tgi, request_cache_dir):
    tgi.set_knobs(latency=0.05)
    settings = TaggerSettings(endpoints=tgi.url, concurrency=1, cache=False, template="paper")
    tagged = datasets.Dataset.from_dict(QUERIES).map(Tagger.from_settings(settings), batched=True)
    assert all(tagged["instag_raw_tags"]) and tgi.stats()["max_in_flight"] == 1
    assert tgi.stats()["routes"].get("/v1/chat/completions", 0) == 8  # a chat template

    tgi.reset()
    raw = dataclasses.replace(settings, concurrency=4, template="instagger")
    datasets.Dataset.from_dict(QUERIES).map(Tagger.from_settings(raw), batched=True)
    assert tgi.stats()["routes"].get("/generate", 0) == 8  # a raw template goes to /generate
    assert 1 < tgi.stats()["max_in_flight"] <= 4


def test_cache_setting_names_the_folder_answers_land_in(tgi, tmp_path):
    folder = Path(tmp_path) / "answers"
    tagger = Tagger.from_settings(TaggerSettings(endpoints=tgi.url, cache=folder))
    datasets.Dataset.from_dict(QUERIES).map(tagger, batched=True)
    assert folder.is_dir() and any(folder.iterdir())


# ------------------------------------------------------------------ each setting declared once


def test_every_setting_is_a_tagger_keyword_an_attribute_and_a_docstring_entry():
    tagger = Tagger(**{name: getattr(TaggerSettings(), field.name) for name, field in SETTINGS.items()})
    for name, field in SETTINGS.items():
        assert field.metadata["help"], f"{name} has no help"
        assert f"\n        {name}: " in Tagger.__doc__, f"{name} is not in Tagger's docstring"
        if name not in ("endpoint", "timeout"):  # Tagger's own views: the resolved values
            assert getattr(tagger, name) == getattr(tagger.settings, field.name)
    with pytest.raises(TypeError, match="Unknown tagger setting"):
        Tagger(no_such_setting=1)


def test_the_cli_options_and_the_refresh_keys_come_from_the_fields():
    help_text = CliRunner().invoke(main, ["tag", "--help"], terminal_width=200).output
    on_cli = [name for name, field in SETTINGS.items() if field.metadata["option"] is not None]
    assert set(on_cli) <= set(TAGGER_ARGS)
    for name in on_cli:
        assert f"--{name.replace('_', '-')}" in help_text
    in_config = [name for name, field in SETTINGS.items() if field.metadata["config"]]
    assert list(TAGGER_KEYS) == in_config


def test_a_new_setting_is_one_field(tmp_path):
    # What issue 20's `answer` needs: one field (at the end, so old fingerprints stay), and
    # Tagger(...), --help, the config keys and the settings hash follow. Built here as a
    # subclass so the test declares it exactly as settings.py would.
    @dataclasses.dataclass(frozen=True)
    class WithAnswer(TaggerSettings):
        answer: str = setting("paper", output=True, help="What the model answers.", option={}, config=True)

    answer = dataclasses.fields(WithAnswer)[-1]
    assert public_name(answer) == "answer" and answer.metadata["decides_output"]
    assert WithAnswer(answer="tags").output_fields()["answer"] == "tags"
    assert "answer" not in TaggerSettings().output_fields()


def test_one_endpoint_parser_for_every_way_in(monkeypatch):
    assert parse_endpoints(" http://a:1/v1/ ,, https://b ") == ("http://a:1", "https://b")
    with pytest.raises(ConfigurationError, match="INSTAG_ENDPOINT '127.0.0.1:8080' is not an http"):
        parse_endpoints("127.0.0.1:8080", "INSTAG_ENDPOINT")
    with pytest.raises(ConfigurationError, match="must not carry credentials"):
        parse_endpoints(["http://user:key@host:1"])
    monkeypatch.setenv("INSTAG_ENDPOINT", "http://c:3/v1")
    assert Tagger().endpoints == ("http://c:3",)
