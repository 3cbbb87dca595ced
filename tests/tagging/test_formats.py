import pytest
from datasets import Dataset

from instag_hf.errors import ConfigurationError, FormatError
from instag_hf.tagging.rows import RowFormat, RowQueries, detect_format, extract_queries


def batch_of(rows):
    """The batch shape Dataset.map(batched=True) hands over, built by datasets itself."""
    ds = Dataset.from_list(rows)
    return ds, ds[:]


# --- detection -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "columns, expected",
    [
        (["id", "conversations"], RowFormat("sharegpt", "conversations")),
        (["messages", "prompt"], RowFormat("messages", "messages")),
        (["conversations", "messages"], RowFormat("sharegpt", "conversations")),
        (["instruction", "input", "output"], RowFormat("alpaca", "instruction", "input")),
        (["instruction", "output"], RowFormat("alpaca", "instruction")),
        (["instruction", "prompt"], RowFormat("alpaca", "instruction")),
        (["text", "question", "query", "prompt"], RowFormat("prompt", "prompt")),
        (["text", "question", "query"], RowFormat("prompt", "query")),
        (["text", "question"], RowFormat("prompt", "question")),
        (["text", "label"], RowFormat("prompt", "text")),
    ],
)
def test_detection_precedence(columns, expected):
    assert detect_format(columns) == expected


def test_nothing_to_tag_names_the_columns_and_the_fix():
    with pytest.raises(FormatError) as caught:
        detect_format(["id", "foo"])
    message = str(caught.value)
    assert "['id', 'foo']" in message
    assert 'Tagger(column="' in message and "format=" in message


def test_format_override_uses_its_default_column():
    columns = ["conversations", "messages", "instruction", "input", "query"]
    assert detect_format(columns, format="messages") == RowFormat("messages", "messages")
    assert detect_format(columns, format="ALPACA") == RowFormat("alpaca", "instruction", "input")
    # format="prompt" takes the first plain prompt column present; instruction then
    # counts as a plain prompt (no input appended).
    assert detect_format(columns, format="prompt") == RowFormat("prompt", "instruction")
    assert detect_format(["query", "text"], format="prompt") == RowFormat("prompt", "query")
    with pytest.raises(FormatError, match="column"):
        detect_format(["id"], format="prompt")
    with pytest.raises(FormatError, match="'conversations' is not in the dataset"):
        detect_format(["messages"], format="sharegpt")


def test_column_override_infers_format_from_the_name():
    assert detect_format(["conversations", "body"], column="body") == RowFormat("prompt", "body")
    assert detect_format(["x", "messages"], column="messages") == RowFormat("messages", "messages")
    assert detect_format(["instruction", "input"], column="instruction") == RowFormat("alpaca", "instruction", "input")
    assert detect_format(["chat"], column="chat", format="sharegpt") == RowFormat("sharegpt", "chat")
    with pytest.raises(FormatError, match=r"'nope' is not in the dataset \(columns: \['a'\]\)"):
        detect_format(["a"], column="nope")


def test_unknown_format_lists_valid_ones():
    with pytest.raises(ConfigurationError, match="'sharegpt', 'messages', 'alpaca', 'prompt'"):
        detect_format(["conversations"], format="chatml")
    with pytest.raises(ConfigurationError):
        RowFormat("chatml", "x")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="alpaca"):
        RowFormat("prompt", "x", "input")


# --- extraction --------------------------------------------------------------------------


def test_sharegpt_system_turn_and_two_user_turns():
    ds, batch = batch_of(
        [
            {
                "id": "a",
                "conversations": [
                    {"from": "system", "value": "You are terse."},
                    {"from": "human", "value": "  What is 2+2? \n"},
                    {"from": "gpt", "value": "4"},
                    {"from": "human", "value": "And 3+3?"},
                    {"from": "chatgpt", "value": "6"},
                ],
            },
            {"id": "b", "conversations": [{"from": "user", "value": "Hi"}]},
        ]
    )
    fmt = detect_format(ds.column_names)
    assert extract_queries(batch, fmt) == [
        RowQueries([(0, "What is 2+2?"), (1, "And 3+3?")], None),
        RowQueries([(0, "Hi")], None),
    ]


def test_sharegpt_bad_turns_keep_true_indexes():
    ds, batch = batch_of(
        [
            {
                "conversations": [
                    {"from": "human", "value": "first"},
                    {"from": "gpt", "value": "ok"},
                    {"from": "human", "value": "   "},
                    {"from": "gpt", "value": "ok"},
                    {"from": "human", "value": None},
                    {"from": "gpt", "value": "ok"},
                    {"from": "human", "value": "fourth"},
                ]
            },
            {"conversations": [{"from": "system", "value": "s"}, {"from": "gpt", "value": "x"}]},
            {"conversations": []},
            {"conversations": None},
            {"conversations": [{"from": "human", "value": " "}]},
        ]
    )
    rows = extract_queries(batch, detect_format(ds.column_names))
    assert rows[0] == RowQueries([(0, "first"), (3, "fourth")], "turn 1: query is empty; turn 2: query is None")
    assert rows[1] == RowQueries([], "no user turn in conversations (roles seen: ['gpt', 'system'])")
    assert rows[2] == RowQueries([], "no user turn in conversations")
    assert rows[3] == RowQueries([], "conversations is None")
    # A single user turn reads like a prompt row: no turn number.
    assert rows[4] == RowQueries([], "query is empty")


def test_sharegpt_plain_python_oddities_never_raise():
    batch = {
        "conversations": [
            [None, {"from": "human", "value": 7}, {"from": ["odd"], "value": "x"}],
            "not a list",
            [{"role": "user", "content": "role/content keys work too"}],
        ]
    }
    rows = extract_queries(batch, RowFormat("sharegpt", "conversations"))
    assert rows[0] == RowQueries(
        [], "message 0 is not an object (got NoneType); turn 0: query is not a string (got int)"
    )
    assert rows[1] == RowQueries([], "conversations is not a list of turns (got str)")
    assert rows[2] == RowQueries([(0, "role/content keys work too")], None)


def test_messages_with_string_and_part_contents():
    ds, batch = batch_of(
        [
            {
                "messages": [
                    {"role": "system", "content": [{"type": "text", "text": "sys"}]},
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": " Describe"},
                            {"type": "image_url", "text": None},
                            {"type": "text", "text": "this picture "},
                        ],
                    },
                    {"role": "assistant", "content": [{"type": "text", "text": "a cat"}]},
                    {"role": "user", "content": [{"type": "image_url", "text": None}]},
                ]
            },
        ]
    )
    rows = extract_queries(batch, detect_format(ds.column_names))
    assert rows == [RowQueries([(0, "Describe\nthis picture")], "turn 1: query has no text part")]

    ds, batch = batch_of(
        [
            {
                "messages": [
                    {"role": "user", "content": "Hello"},
                    {"role": "assistant", "content": "Hi"},
                ]
            },
            {
                "messages": [
                    {"role": "assistant", "content": "Hi"},
                    {"role": "tool", "content": "x"},
                ]
            },
        ]
    )
    rows = extract_queries(batch, detect_format(ds.column_names))
    assert rows[0] == RowQueries([(0, "Hello")], None)
    assert rows[1].queries == [] and rows[1].problem.startswith("no user turn in messages")


def test_alpaca_appends_non_empty_input():
    ds, batch = batch_of(
        [
            {"instruction": "Translate", "input": "bonjour", "output": "hello"},
            {"instruction": " Summarize ", "input": "  ", "output": "x"},
            {"instruction": "Explain", "input": None, "output": "x"},
            {"instruction": "", "input": "", "output": "x"},
            {"instruction": None, "input": "orphan", "output": "x"},
        ]
    )
    fmt = detect_format(ds.column_names)
    assert fmt == RowFormat("alpaca", "instruction", "input")
    assert extract_queries(batch, fmt) == [
        RowQueries([(0, "Translate\n\nbonjour")], None),
        RowQueries([(0, "Summarize")], None),
        RowQueries([(0, "Explain")], None),
        RowQueries([], "query is empty"),
        RowQueries([], "query is None"),
    ]
    odd = extract_queries({"instruction": ["Do"], "input": [5]}, fmt)
    assert odd == [RowQueries([(0, "Do")], "input is not a string (got int): tagged the instruction alone")]


def test_alpaca_without_input_column():
    ds, batch = batch_of([{"instruction": "Do it", "output": "done"}])
    assert extract_queries(batch, detect_format(ds.column_names)) == [RowQueries([(0, "Do it")], None)]


def test_prompt_column_problems():
    ds, batch = batch_of([{"prompt": " ok "}, {"prompt": None}, {"prompt": "\n\t"}])
    assert extract_queries(batch, detect_format(ds.column_names)) == [
        RowQueries([(0, "ok")], None),
        RowQueries([], "query is None"),
        RowQueries([], "query is empty"),
    ]
    rows = extract_queries({"q": [3, ["a"]]}, RowFormat("prompt", "q"))
    assert rows[0] == RowQueries([], "query is not a string (got int)")
    assert rows[1].problem.startswith("query is not a string (got list)")
    assert "format='sharegpt'" in rows[1].problem


def test_missing_column_in_batch_raises_format_error():
    with pytest.raises(FormatError, match="'prompt' is not in the dataset"):
        extract_queries({"text": ["x"]}, RowFormat("prompt", "prompt"))


def test_works_as_a_real_batched_map():
    ds = Dataset.from_list([{"conversations": [{"from": "human", "value": "a"}, {"from": "human", "value": "b"}]}])
    fmt = detect_format(ds.column_names)

    def count(batch):
        return {"n": [len(row.queries) for row in extract_queries(batch, fmt)]}

    assert ds.map(count, batched=True)["n"] == [2]
