"""The dataset card: YAML, statistics, provenance, plots, the golden card, and untrusted tags.

Golden card: tests/publishing/golden/instag_card.md is the card of a fixed input. After an intended
change to the template or the card's content, regenerate it and review the diff:

    INSTAG_UPDATE_GOLDEN=1 .venv/bin/pytest tests/publishing/test_cards.py -k golden

Rendering is checked with markdown-it-py (CommonMark + GFM tables), which comes with
`rich` (transformers -> typer -> rich).
"""

from __future__ import annotations

import datetime as dt
import html
import os
import re
import unicodedata
from pathlib import Path

import pytest
import yaml
from datasets import Dataset, Features, List, Value
from markdown_it import MarkdownIt

import instag_hf
from instag_hf.errors import CardError
from instag_hf.normalization.normalizer import TagNormalizer
from instag_hf.publishing.card import InstagCard, build_card, markdown_text, size_category
from instag_hf.publishing.plots import TAGS_PER_ROW_PLOT, TOP_TAGS_PLOT, render_plots

GOLDEN = Path(__file__).parent / "golden" / "instag_card.md"
DATE = dt.date(2024, 5, 1)
TAGGER = {
    "kind": "tgi",
    "model": "OFA-Sys/InsTagger",
    "model_sha": "0123abcd",
    "template": "paper",
    "template_sha256": "5f" * 32,
}
TAGS = [
    ["math", "algebra", "proof"],
    ["math", "code"],
    ["code", "python", "debugging"],
    ["writing"],
    ["writing", "poetry"],
    [],
    ["math"],
    ["python", "code", "testing", "debugging"],
]
FEATURES = Features(
    {
        "instruction": Value("string"),
        "instag_raw_tags": List({"turn": Value("int32"), "tag": Value("string"), "explanation": Value("string")}),
        "instag_error": Value("string"),
    }
)


def tagged_pool() -> tuple[Dataset, TagNormalizer]:
    """A small tagged pool, normalized by a fast normalizer (no embedding model)."""
    raw = [[{"turn": 0, "tag": tag, "explanation": f"asks about {tag}"} for tag in tags] for tags in TAGS]
    ds = Dataset.from_dict(
        {"instruction": [f"question {i}" for i in range(len(TAGS))], "instag_raw_tags": raw,
         "instag_error": [None] * len(TAGS)},
        features=FEATURES,
    )  # fmt: skip
    normalizer = TagNormalizer(min_frequency=1, semantic_aggregation=False).fit(ds)
    return ds.map(normalizer, batched=True), normalizer


def golden_card() -> InstagCard:
    pool, normalizer = tagged_pool()
    subset = instag_hf.sample(pool, n=4, seed=7)
    return build_card(
        subset, pool=pool, normalizer=normalizer, tagger=TAGGER, source="org/sft-pool",
        source_revision="9f8e7d", repo_id="alice/curated", date=DATE,
    )  # fmt: skip


def test_precomputed_subset_stats_give_the_same_card():
    # run_chain measures the subset against the pool once; publish hands that to build_card.
    pool, normalizer = tagged_pool()
    subset = instag_hf.sample(pool, n=4, seed=7)
    stats = instag_hf.analyze(subset, pool=instag_hf.analyze(pool))
    card = build_card(
        subset, pool=pool, normalizer=normalizer, tagger=TAGGER, source="org/sft-pool",
        source_revision="9f8e7d", repo_id="alice/curated", date=DATE, stats=stats,
    )  # fmt: skip
    assert str(card) == GOLDEN.read_text(encoding="utf-8")


def yaml_header(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text[4 : text.index("\n---\n")])


def test_golden_card():
    card = golden_card()
    text = str(card)
    if os.environ.get("INSTAG_UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text, encoding="utf-8", newline="\n")
    assert text == GOLDEN.read_text(encoding="utf-8"), "card changed: see the module docstring to regenerate"


def test_yaml_header_is_what_the_hub_and_datasets_need():
    card = golden_card()
    data = card.data.to_dict()
    assert yaml_header(str(card)) == data  # the header parses back to exactly the card data
    assert "instag" in data["tags"] and data["task_categories"] == ["text-generation"]
    assert data["size_categories"] == ["n<1K"] and data["pretty_name"] == "org/sft-pool (InsTag subset)"
    assert data["configs"] == [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}]
    assert "license" not in data  # unknown: left out rather than guessed
    assert isinstance(card, InstagCard) and card.normalizer is not None


def test_body_holds_statistics_provenance_and_reproduction():
    card = golden_card()
    text = str(card)
    for expected in [
        "https://arxiv.org/abs/2308.07074",
        "| Rows | 8 | 4 |",
        "`org/sft-pool` at revision `9f8e7d`",
        "`tgi` server running `OFA-Sys/InsTagger` (revision `0123abcd`), prompt template `paper`",
        f"content hash `{card.normalizer.content_hash}`",
        "strategy `instag`, 4 of 8 rows (requested 4), seed `7`",
        f"`instag_hf` `{instag_hf.__version__}` on 2024-05-01",
        "subset = instag_hf.sample(pool, n=4, strategy='instag', seed=7)",
        (
            "instag run org/sft-pool --revision 9f8e7d --split train --template paper --n 4 --strategy instag --seed 7 "
            "--min-frequency 1 --no-semantic --push-to alice/curated"
        ),
        "![Top tags of the subset against the pool](plots/top_tags.png)",
        "![Tags per row of the subset against the pool](plots/tags_per_row.png)",
        "| After rule aggregation |",
        "| semantic_aggregation | no |",
    ]:
        assert expected in text, expected
    assert sorted(card.plots) == [TAGS_PER_ROW_PLOT, TOP_TAGS_PLOT]


def test_card_without_pool_uses_the_selection_record_and_says_what_is_unknown():
    pool, _ = tagged_pool()
    subset = instag_hf.sample(pool, n=3, seed=1)
    text = str(build_card(subset, date=DATE, plots=False))
    assert "| Rows | 8 | 3 |" in text  # pool figures from selection_info(subset)
    assert "| Median tags per row | n/a |" in text
    assert "**Tagger:** not recorded" in text and "**Normalizer:** not recorded" in text
    assert "![" not in text

    bare = Dataset.from_dict({"instag_tags": [["a"], ["a", "b"]]})
    text = str(build_card(bare, date=DATE, plots=False))
    assert "**Selection:** not recorded" in text and "| Rows | n/a | 2 |" in text


def test_license_and_errors():
    pool, _ = tagged_pool()
    assert build_card(pool, license="apache-2.0", plots=False).data.license == "apache-2.0"
    pool.info.license = "Free text licence: do what you like"
    assert build_card(pool, plots=False).data.license is None  # not a Hub licence id
    pool.info.license = "cc-by-4.0"
    assert build_card(pool, plots=False).data.license == "cc-by-4.0"
    with pytest.raises(CardError, match="ISO date"):
        build_card(pool, date="yesterday", plots=False)
    with pytest.raises(CardError, match="not fitted"):
        build_card(pool, normalizer=TagNormalizer(min_frequency=1), plots=False)
    with pytest.raises(CardError, match="tagger"):
        build_card(pool, tagger={"endpoint": "http://x"}, plots=False)


@pytest.mark.parametrize(
    ("rows", "category"), [(0, "n<1K"), (999, "n<1K"), (1000, "1K<n<10K"), (6000, "1K<n<10K"), (10**7, "10M<n<100M")]
)
def test_size_category(rows, category):
    assert size_category(rows) == category


def test_tagger_provenance_comes_from_the_server(tgi):
    pool, _ = tagged_pool()
    tagger = instag_hf.Tagger(tgi.url, template="instagger")
    text = str(build_card(pool, tagger=tagger, plots=False, date=DATE))
    assert f"`tgi` server running `instag-fake/tgi-tagger`, prompt template `instagger` (sha256 " \
           f"`{tagger.template.sha256}`)" in text  # fmt: skip
    assert "instag_hf.Tagger(template='instagger')" in text


def test_plots_are_deterministic_pngs_and_survive_mathtext_in_tags():
    pool, _ = tagged_pool()
    stats = instag_hf.analyze(instag_hf.sample(pool, n=4, seed=7), pool=pool)
    first, second = render_plots(stats), render_plots(stats)
    assert first == second and all(png.startswith(b"\x89PNG\r\n\x1a\n") for png in first.values())
    weird = Dataset.from_dict({"instag_tags": [["$\\frac{1$", "$x^2$", "a\nb", "\u202eevil"], ["$"]]})
    assert render_plots(instag_hf.analyze(weird))[TOP_TAGS_PLOT].startswith(b"\x89PNG")


# --------------------------------------------------------------------------- untrusted tags

NASTY = {
    "pipe": "left|right",
    "newline": "line one\nline two",
    "crlf_yaml_fence": "a\r\n---\r\nb",
    "yaml_fence": "---",
    "script": "<script>alert(1)</script>",
    "html_entity": "&lt;b&gt; &amp;",
    "backticks": "```python",
    "inline_code": "`rm -rf /`",
    "link": "[click](http://evil.example)",
    "image": "![x](http://evil.example/x.png)",
    "autolink": "<http://evil.example>",
    "bare_urls": "see http://evil.example or www.evil.example or me@evil.example",
    "emphasis": "**bold** _it_ ~~gone~~",
    "math": "$x^2$",
    "heading": "# heading",
    "backslash": "ends with \\",
    "bidi_override": "abc\u202edef",
    "yaml_in_tag": "key: value\n- item",
}
PLACEHOLDER = "placeholdertag"
RENDERER = MarkdownIt("commonmark").enable(["table", "strikethrough"])


def card_with_tag(tag: str) -> InstagCard:
    # The tag is on 3 rows, more than any other tag, so its position in the tables is fixed.
    ds = Dataset.from_dict({"instag_tags": [[tag, "x"], [tag, "y"], [tag], ["x"]]})
    return build_card(ds, tagger={**TAGGER, "model": "evil`model | x"}, date=DATE, plots=False)


def visible(tag: str) -> str:
    """What a reader must see: the tag on one line (line breaks and controls become spaces)."""
    text = "".join(" " if c != " " and unicodedata.category(c)[0] in "CZ" else c for c in tag)
    return " ".join(text.split())


@pytest.mark.parametrize("tag", NASTY.values(), ids=NASTY.keys())
def test_untrusted_tag_renders_as_its_literal_text_and_nothing_else(tag):
    card, benign = card_with_tag(tag), card_with_tag(PLACEHOLDER)
    text = str(card)
    # The YAML header parses to the same metadata as with a harmless tag.
    assert yaml_header(text) == yaml_header(str(benign)) == card.data.to_dict()
    # Rendered, the card is the harmless card with the tag's literal text in its cells:
    # same tables, rows and cells, no HTML, link, image, code, emphasis or heading added.
    rendered = RENDERER.render(card.text)
    as_html = html.escape(visible(tag), quote=False).replace('"', "&quot;")  # markdown-it's text escaping
    assert rendered == RENDERER.render(benign.text).replace(PLACEHOLDER, as_html)
    assert "<script" not in text


@pytest.mark.parametrize("tag", NASTY.values(), ids=NASTY.keys())
def test_escaped_tag_is_one_line_with_no_live_markdown(tag):
    escaped = markdown_text(tag)
    assert "\n" not in escaped and "\r" not in escaped
    live = re.sub(r"&(lt|gt|amp);", "", re.sub(r"\\.", "", escaped))  # what is left unescaped
    assert not set(live) & set("|`[]()<>*_$~!#:@&\\-")  # so no autolink ("http:", "www.", "@") either


def test_user_values_cannot_break_the_header_or_the_code_blocks():
    ds = Dataset.from_dict({"instag_tags": [["a"], ["b"]]})
    evil = "org/x\n```\n# pwned\n---\nevil: true"
    card = build_card(ds, source=evil, source_revision="r`1", pretty_name=evil, repo_id="a/b'\n```", date=DATE)
    data = yaml_header(str(card))
    assert data["pretty_name"] == evil and "evil" not in data  # a YAML string, not a key
    fences = [t for t in RENDERER.parse(card.text) if t.type == "fence"]
    assert [t.info for t in fences] == ["python", "bash"]  # no fence closed early, none opened
    rendered = RENDERER.render(card.text)
    assert rendered.count("<h1>") == 1 and "pwned</h" not in rendered and "<hr" not in rendered
    assert "<code>r`1</code>" in rendered  # a code span longer than the backtick run inside


def test_code_spans_hold_backticks_and_pipes_literally():
    rendered = RENDERER.render(card_with_tag("x").text)
    assert "<code>evil`model | x</code>" in rendered


@pytest.mark.parametrize("kind", ["jsonl", "parquet", "save_to_disk"])
def test_reproduction_loads_a_local_source_as_it_was_read(tmp_path, kind):
    import datasets

    pool, normalizer = tagged_pool()
    subset = instag_hf.sample(pool, n=4, seed=7)
    rows = Dataset.from_dict({"instruction": [f"question {i}" for i in range(len(TAGS))]})
    source = {
        "jsonl": tmp_path / "alpaca.jsonl",
        "parquet": tmp_path / "alpaca.parquet",
        "save_to_disk": tmp_path / "alpaca",
    }[kind]
    {
        "jsonl": lambda: rows.to_json(source, lines=True),
        "parquet": lambda: rows.to_parquet(source),
        "save_to_disk": lambda: rows.save_to_disk(source),
    }[kind]()
    card = build_card(subset, pool=pool, normalizer=normalizer, source=str(source), date=DATE)
    lines = card.text.splitlines()
    imports = next(line for line in lines if line.startswith("from datasets import"))
    load = next(line for line in lines if line.startswith("pool = load_"))
    namespace: dict = {}
    exec(imports, namespace)  # noqa: S102 -- the card's own snippet, built from a path we chose
    loaded = eval(load.split("=", 1)[1], namespace)  # noqa: S307
    assert loaded.to_list() == rows.to_list()
    assert isinstance(loaded, datasets.Dataset)


def test_yaml_says_the_annotations_are_machine_generated_and_names_a_hub_source(tmp_path):
    pool, normalizer = tagged_pool()
    subset = instag_hf.sample(pool, n=4, seed=7)
    hub = build_card(subset, pool=pool, normalizer=normalizer, source="org/sft-pool", date=DATE).data.to_dict()
    assert hub["annotations_creators"] == ["machine-generated"]
    assert hub["source_datasets"] == ["org/sft-pool"]
    (tmp_path / "pool.jsonl").write_text('{"instruction": "x"}\n', encoding="utf-8")
    local = build_card(subset, pool=pool, source=str(tmp_path / "pool.jsonl"), date=DATE).data.to_dict()
    assert local["annotations_creators"] == ["machine-generated"] and "source_datasets" not in local
