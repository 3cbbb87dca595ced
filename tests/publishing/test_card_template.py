"""Your own card template: dataset_cards/ holds the copy to start from, build_card and the CLI take it."""

from __future__ import annotations

import importlib.resources

import pytest
from huggingface_hub import DatasetCard

import instag_hf
from instag_hf.errors import CardError
from instag_hf.publishing.card import build_card
from tests.conftest import REPO_ROOT
from tests.publishing.test_cards import DATE, GOLDEN, TAGGER, tagged_pool
from tests.test_cli import QUICK, assert_ok, assert_one_line_error, invoke, invoke_run, make_rows, write_jsonl

USER_COPY = REPO_ROOT / "dataset_cards" / "instag_subset.md.jinja"


def packaged_template() -> str:
    return (
        importlib.resources.files("instag_hf.publishing.templates")
        .joinpath("instag_subset.md.jinja")
        .read_text(encoding="utf-8")
    )


def card_of(template=None):
    pool, normalizer = tagged_pool()
    subset = instag_hf.sample(pool, n=4, seed=7)
    return build_card(
        subset, pool=pool, normalizer=normalizer, tagger=TAGGER, source="org/sft-pool",
        source_revision="9f8e7d", repo_id="alice/curated", date=DATE, template=template,
    )  # fmt: skip


def test_the_user_copy_is_the_packaged_template():
    assert USER_COPY.read_text(encoding="utf-8") == packaged_template(), (
        "dataset_cards/instag_subset.md.jinja differs from instag_hf/publishing/templates/: copy the packaged one over"
    )


def test_the_copy_renders_the_golden_card():
    assert str(card_of(USER_COPY)) == GOLDEN.read_text(encoding="utf-8")


def test_an_edited_copy_renders_its_own_text_under_the_same_header(tmp_path):
    mine = tmp_path / "mine.md.jinja"
    mine.write_text(
        packaged_template().replace(
            "## What InsTag is", "Curated by the data team, reviewed weekly.\n\n## What InsTag is"
        ),
        encoding="utf-8",
    )
    card = card_of(mine)
    assert "Curated by the data team, reviewed weekly." in str(card)
    parsed = DatasetCard(str(card))  # the Hub reads the header: where the data files are
    assert parsed.data.to_dict()["configs"] == card_of().data.to_dict()["configs"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("---\n{{ card_data }}\n---\n{{ nope }}\n", "'nope' is undefined. A template can use audit, card_data"),
        ("---\n{{ card_data }}\n---\n{% if %}\n", "line 4"),
        ("# {{ title }}\n", "must start with the YAML header"),
    ],
)
def test_a_broken_template_is_a_card_error_that_says_what(tmp_path, text, message):
    path = tmp_path / "broken.md.jinja"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CardError, match=message) as caught:
        card_of(path)
    assert str(path) in str(caught.value)


def test_a_missing_template_fails_before_any_work(tmp_path):
    with pytest.raises(CardError, match="Cannot read the card template .*dataset_cards/instag_subset.md.jinja"):
        build_card(None, template=tmp_path / "nowhere.jinja")  # type: ignore[arg-type]


def test_the_cli_takes_a_card_template(tgi, tmp_path):
    mine = tmp_path / "mine.md.jinja"
    mine.write_text(
        packaged_template().replace("## What InsTag is", "Team note.\n\n## What InsTag is"), encoding="utf-8"
    )
    pool = write_jsonl(tmp_path / "pool.jsonl", make_rows(20))
    run = invoke_run(pool, "--endpoint", tgi.url, "-n", 4, *QUICK, "--card-template", mine,
                     cache=tmp_path / "req", out=tmp_path / "run")  # fmt: skip
    assert_ok(run)
    assert "Team note." in (tmp_path / "run" / "README.md").read_text(encoding="utf-8")

    assert_ok(invoke("card", tmp_path / "run", "--card-template", mine, "-o", tmp_path / "card"))
    assert "Team note." in (tmp_path / "card" / "README.md").read_text(encoding="utf-8")

    broken = tmp_path / "broken.md.jinja"
    broken.write_text("# {{ title }}\n", encoding="utf-8")
    result = invoke("card", tmp_path / "run", "--card-template", broken, "-o", tmp_path / "card2")
    assert_one_line_error(result, "must start with the YAML header")
    assert not (tmp_path / "card2").exists()
