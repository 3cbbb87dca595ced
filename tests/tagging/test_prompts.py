import hashlib
import json
import pickle

import pytest

from instag_hf.errors import ConfigurationError
from instag_hf.tagging.prompts import (
    INSTAGGER_TEMPLATE,
    MAX_NEW_TOKENS,
    PAPER_TEMPLATE,
    TAGS_JSON_SCHEMA,
    PromptTemplate,
    get_template,
)

# Pinned so that any edit of the paper's wording (even fixing its grammar) is caught:
# results only compare with the paper's when the prompt is byte-identical.
PAPER_SHA256 = "e93d1662a427b2df99f319ff34fc7738ee95363dbf7fcb3e8a3c7cf70d497cdd"
INSTAGGER_SHA256 = "1e2c0cda9413e58c82b042fbc76d382e1a7b84fbdf3adc7f2d8fa3651f6d5a70"


def test_paper_template_bytes_are_pinned():
    assert hashlib.sha256(PAPER_TEMPLATE.encode("utf-8")).hexdigest() == PAPER_SHA256
    assert get_template("paper").sha256 == PAPER_SHA256
    assert PAPER_TEMPLATE.startswith("You are a tagging system that provides useful tags")
    assert "Below is an instruction:\n[begin]\n{query}\n[end]\nPlease provide" in PAPER_TEMPLATE
    # The paper's grammar slips are part of the prompt.
    assert "Your response have to strictly follow" in PAPER_TEMPLATE
    assert PAPER_TEMPLATE.endswith('this JSON format: [{"tag": str, "explanation": str}]. Please response in English.')
    assert PAPER_TEMPLATE.count("\n") == 4


def test_instagger_template_is_vicuna_v1_1():
    assert hashlib.sha256(INSTAGGER_TEMPLATE.encode("utf-8")).hexdigest() == INSTAGGER_SHA256
    rendered = get_template("instagger").render("Write a poem")
    system = (
        "A chat between a curious user and an artificial intelligence assistant. The assistant "
        "gives helpful, detailed, and polite answers to the human's questions."
    )
    message = (
        "Please identify tags of user intentions in the following user query and provide an "
        'explanation for each tag. Please respond in the JSON format {"tag": str, '
        '"explanation": str}.\nUser query: Write a poem'
    )
    # FastChat ADD_COLON_TWO: system + sep + "USER: " + message + sep + "ASSISTANT:", sep=" ".
    assert rendered == system + " " + "USER: " + message + " " + "ASSISTANT:"
    assert rendered.count("\n") == 1


def test_kinds_and_defaults():
    assert get_template().name == "paper"
    assert get_template("paper").kind == "chat" and not get_template("paper").is_raw
    assert get_template("instagger").kind == "raw" and get_template("instagger").is_raw
    assert get_template(" InsTagger ").name == "instagger"
    assert MAX_NEW_TOKENS == 512


def test_render_substitutes_only_the_placeholder():
    template = get_template("paper")
    query = 'Use {"tag": x} and {query} literally\nplease'
    rendered = template.render(query)
    assert rendered == PAPER_TEMPLATE.replace("{query}", query)
    assert '[{"tag": str, "explanation": str}]' in rendered


def test_custom_template_text():
    template = get_template('Tags for {query} as [{"tag": str}]')
    assert template.name == "custom" and template.kind == "chat"
    assert template.render("x") == 'Tags for x as [{"tag": str}]'
    assert template.sha256 == hashlib.sha256(template.text.encode()).hexdigest()
    same = PromptTemplate("mine", "Q: {query}", kind="raw")
    assert get_template(same) is same


@pytest.mark.parametrize("text", ["no placeholder", "{query} twice {query}", "{ query }"])
def test_placeholder_must_appear_once(text):
    with pytest.raises(ConfigurationError, match=r"\{query\} exactly once"):
        PromptTemplate("bad", text)


def test_bad_specs_say_what_to_use():
    with pytest.raises(ConfigurationError, match="'paper', 'instagger'"):
        get_template("vicuna")
    with pytest.raises(ConfigurationError):
        get_template(3)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="'chat' or 'raw'"):
        PromptTemplate("x", "{query}", kind="completion")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="name"):
        PromptTemplate("", "{query}")


def test_template_is_frozen_and_pickles_identically():
    template = get_template("paper")
    with pytest.raises(AttributeError):
        template.text = "{query}"  # type: ignore[misc]
    fresh = PromptTemplate("paper", PAPER_TEMPLATE)
    # Reading sha256 must not change what is pickled (Dataset.map hashes the pickle).
    before = pickle.dumps(fresh)
    _ = fresh.sha256
    assert pickle.dumps(fresh) == before
    assert pickle.loads(before) == fresh


def test_tags_json_schema_shape():
    assert json.loads(json.dumps(TAGS_JSON_SCHEMA)) == TAGS_JSON_SCHEMA
    assert TAGS_JSON_SCHEMA["type"] == "array"
    item = TAGS_JSON_SCHEMA["items"]
    assert item["type"] == "object"
    assert item["properties"] == {"tag": {"type": "string"}, "explanation": {"type": "string"}}
    assert sorted(item["required"]) == ["explanation", "tag"]
