import json
import random

import pytest

from instag_hf.tagging.parsing import MAX_TAG_CHARS, ParseResult, parse_tags

VALID = json.dumps(
    [
        {"tag": "Spelling and Grammar Check", "explanation": "fix the text"},
        {"tag": "Cosplay", "explanation": "role play a character"},
        {"tag": "Mathematics", "explanation": "solve 2+2"},
    ]
)
PAIRS = [
    ("Spelling and Grammar Check", "fix the text"),
    ("Cosplay", "role play a character"),
    ("Mathematics", "solve 2+2"),
]


def test_clean_answer():
    assert parse_tags(VALID) == ParseResult(PAIRS, None, None)


@pytest.mark.parametrize(
    "answer",
    [
        f"Sure! Here are the tags:\n{VALID}\nLet me know if you need more.",
        f"```json\n{VALID}\n```",
        f"Tags:\n```\n{VALID}\n```\n",
        json.dumps({"tags": json.loads(VALID)}),
        json.dumps({"result": {"Tags": json.loads(VALID)}}),
        json.dumps({"name": "Intentions", "items": json.loads(VALID)}),
        "\n".join(json.dumps(item) for item in json.loads(VALID)),
        ", ".join(json.dumps(item) for item in json.loads(VALID)),
    ],
    ids=[
        "prose",
        "fence",
        "bare-fence",
        "wrapper",
        "nested-wrapper",
        "titled-wrapper",
        "jsonl",
        "commas",
    ],
)
def test_recovered_without_warning(answer):
    assert parse_tags(answer) == ParseResult(PAIRS, None, None)


def test_single_object_is_kept_as_one_tag_and_said():
    # One object where a list was asked for: kept, like other repaired answers, with a note.
    result = parse_tags('Answer: {"tag": "Cosplay", "explanation": "role play"} done')
    assert result.tags == [("Cosplay", "role play")] and result.error is None
    assert result.warning == "answer was one object, not a list: kept it as one tag"


def test_lone_surrogates_and_nul_never_leave_the_parser():
    # Valid JSON whose strings are not valid text: \ud800 decodes to a lone surrogate,
    # which no UTF-8 writer (Arrow, SQLite, JSON files) accepts.
    answer = json.dumps(
        [
            {"tag": "Math", "explanation": "sums"},
            {"tag": "bad \ud800 tag", "explanation": "dropped with its tag"},
            {"tag": "nul\x00tag", "explanation": ""},
            {"tag": "Code", "explanation": "a NUL \x00 and \udfff in an explanation"},
        ]
    )
    assert "\\ud800" in answer  # escaped in the JSON text, as a model writes it
    result = parse_tags(answer)
    assert result.tags == [("Math", "sums"), ("Code", "a NUL \ufffd and \ufffd in an explanation")]
    assert result.warning == (
        "dropped 2 tags that are not valid text (lone surrogate or NUL); replaced invalid characters in 1 explanation"
    )
    for tag, explanation in result.tags:
        (tag + explanation).encode("utf-8")


def test_invalid_characters_in_the_answer_text_itself_are_replaced():
    # A server whose JSON body escapes a lone surrogate hands the client a str holding one;
    # a raw NUL inside a JSON string would even make the list undecodable.
    answer = '[{"tag": "Math\ud800", "explanation": "x"}, {"tag": "Code", "explanation": "y\x00z"}]'
    result = parse_tags(answer)
    assert result.tags == [("Code", "y\ufffdz")]
    assert result.warning == "dropped 1 tag that is not valid text (lone surrogate or NUL)"
    error = parse_tags("\ud800 no json \x00").error
    assert error.startswith("no JSON list of tags in the answer:")
    error.encode("utf-8")


def test_truncated_list_keeps_whole_items():
    cut = VALID[: VALID.index('"role play')]
    result = parse_tags("Here you go: " + cut)
    assert result.tags == PAIRS[:1]
    assert result.error is None
    assert "cut off" in result.warning and "1 whole item" in result.warning

    cut = VALID[: VALID.rindex("}")]  # the last object lacks only its closing brace
    result = parse_tags(cut)
    assert result.tags == PAIRS[:2]
    assert result.warning == "answer was cut off: kept the 2 whole items before the cut"


def test_truncated_object_sequence():
    lines = [json.dumps(item) for item in json.loads(VALID)]
    result = parse_tags("\n".join(lines)[:-10])
    assert result.tags == PAIRS[:2] and "cut off" in result.warning


def test_invalid_item_mid_list_keeps_the_items_before():
    result = parse_tags('[{"tag": "a", "explanation": "b"}, {tag: c}] and more ]')
    assert result.tags == [("a", "b")]
    assert "dropped the rest of the list after 1 item" in result.warning


def test_plain_strings_and_key_casings():
    assert parse_tags('["Math", "Logic"]').tags == [("Math", ""), ("Logic", "")]
    result = parse_tags(
        json.dumps(
            [
                {"Tag": "A", "Explanation": "x"},
                {"tags": "B", "description": "y"},
                {"TAG": "C", "explanation": 3},
                {"tag": "D", "explanation": {"why": [1, True]}},
                {"tag": "E", "explanation": None},
                {"tag": "F"},
            ]
        )
    )
    assert result == ParseResult(
        [("A", "x"), ("B", "y"), ("C", "3"), ("D", '{"why": [1, true]}'), ("E", ""), ("F", "")],
        None,
        None,
    )


def test_first_list_that_yields_tags_wins():
    answer = 'See [1] and [] then ["first"] and [{"tag": "second", "explanation": ""}]'
    assert parse_tags(answer) == ParseResult([("first", "")], None, None)


def test_cleaning_and_merging():
    answer = json.dumps(
        [
            {"tag": "  Code \n  Review ", "explanation": ""},
            {"tag": "code review", "explanation": "later explanation"},
            {"tag": "CODE REVIEW", "explanation": "ignored: one already kept"},
            {"tag": "   ", "explanation": "blank"},
            {"tag": "x" * (MAX_TAG_CHARS + 1), "explanation": "a sentence, not a tag"},
            {"tag": 5, "explanation": "not a string"},
            {"tag": "Debugging", "explanation": " spaced "},
        ]
    )
    result = parse_tags(answer)
    assert result.tags == [("Code Review", "later explanation"), ("Debugging", "spaced")]
    assert result.error is None
    assert result.warning == (
        f"dropped 1 item that is not a tag; dropped 1 blank tag; dropped 1 tag longer than {MAX_TAG_CHARS} characters"
    )


@pytest.mark.parametrize(
    "answer, start",
    [
        (None, "no answer"),
        ("", "empty answer: ''"),
        ("  \n ", "empty answer: '  \\n '"),
        (
            "Sure! Here are the tags you asked for.",
            "no JSON list of tags in the answer: 'Sure! Here",
        ),
        ("I think [this] is {odd}", "no JSON list of tags in the answer:"),
        ("[]", "no usable tag in the JSON of the answer: '[]'"),
        ('{"error": "cannot comply"}', "no usable tag in the JSON of the answer:"),
        ('[{"tag": "  "}]', "no usable tag in the JSON of the answer (dropped 1 blank tag):"),
        ('[{"tag": "a", "expl', "no JSON list of tags in the answer:"),
    ],
)
def test_errors_quote_the_answer(answer, start):
    result = parse_tags(answer)
    assert result.tags == [] and result.warning is None
    assert result.error.startswith(start)
    assert "\n" not in result.error


def test_error_excerpt_is_short_and_one_line():
    answer = "Sure!\n" + "blah " * 500
    error = parse_tags(answer).error
    assert error.startswith("no JSON list of tags in the answer: 'Sure!\\nblah")
    assert error.endswith("...'") and len(error) < 300 and "\n" not in error


def test_non_text_answer():
    assert parse_tags(42).error == "answer is not text (got int)"  # type: ignore[arg-type]


def _fuzz_inputs(rng: random.Random):
    answers = [
        VALID,
        f"```json\n{VALID}\n```",
        json.dumps({"tags": json.loads(VALID)}),
        "\n".join(json.dumps(item) for item in json.loads(VALID)),
        '["a", "b", {"Tag": "c", "description": [1, {"x": null}]}]',
    ]
    for _ in range(300):
        text = rng.choice(answers)
        i, j = sorted(rng.randrange(len(text) + 1) for _ in range(2))
        yield text[i:j]
        yield text[:j]
    for _ in range(200):
        yield bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))).decode("utf-8", errors="replace")
        yield "".join(rng.choice('[]{}",:\\ tagexplnio0-e\n') for _ in range(rng.randrange(1, 120)))
        yield "".join(
            rng.choice(['"\\ud800"', "\ud800", "\x00", '"\\u0000"', '"tag"', ":", "[", "{", "}", "]", ","])
            for _ in range(rng.randrange(1, 40))
        )
    for depth in (10, 999, 1000, 5000, 50000):
        yield "[" * depth
        yield "{" * depth
        yield "[" * depth + "]" * depth
        yield '{"tag":' * depth
        yield '[{"tags": ' * depth + '"x"' + "}]" * depth
        yield "[" * depth + '{"tag": "deep"}' + "]" * depth


def test_fuzz_never_raises():
    rng = random.Random(20240116)
    for text in _fuzz_inputs(rng):
        result = parse_tags(text)
        assert isinstance(result, ParseResult)
        assert (result.error is None) == bool(result.tags)
        assert result.warning is None or result.tags
        for tag, explanation in result.tags:
            assert isinstance(tag, str) and isinstance(explanation, str)
            assert tag == " ".join(tag.split()) and 0 < len(tag) <= MAX_TAG_CHARS
            (tag + explanation).encode("utf-8")  # always valid text
        for note in (result.error, result.warning):
            if note is not None:
                note.encode("utf-8")
