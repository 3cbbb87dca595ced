"""The prompt that asks a model for a query's intention tags.

Two built-in templates:

* ``"paper"`` (default): the paper's ChatGPT prompt (InsTag, Table 4), byte-exact, grammar
  slips included, so results compare with the paper. It is a *user message* for a chat
  model (``kind="chat"``): send it through a chat API, or wrap it in the server's chat
  template before a raw ``/generate`` call.
* ``"instagger"``: the prompt InsTagger (``OFA-Sys/InsTagger``) was fine-tuned on, already
  laid out in FastChat's Vicuna v1.1 conversation format, so it is a complete raw prompt
  for ``/generate`` (``kind="raw"``). Vicuna v1.1 joins ``system + " " + "USER: " +
  message + " " + "ASSISTANT:"`` with no newlines; the only newline is the one inside the
  user message, before ``User query:``. The system line says "the human's questions" (not
  FastChat's "the user's questions") because that is the line InsTagger's users prompt it
  with.

    >>> get_template("paper").render("Fix my spelling").count("Fix my spelling")
    1
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

from instag_hf.errors import ConfigurationError

#: The literal placeholder a template holds exactly once.
PLACEHOLDER = "{query}"

#: InsTagger was run with at most 512 new tokens; long tag lists fit well inside that.
MAX_NEW_TOKENS = 512

PAPER_TEMPLATE = (
    "You are a tagging system that provides useful tags for instruction intentions to "
    "distinguish instructions for a helpful AI assistant. Below is an instruction:\n"
    "[begin]\n"
    "{query}\n"
    "[end]\n"
    'Please provide coarse-grained tags, such as "Spelling and Grammar Check" and "Cosplay", '
    "to identify main intentions of above instruction. Your answer should be a list including "
    "titles of tags and a brief explanation of each tag. Your response have to strictly follow "
    'this JSON format: [{"tag": str, "explanation": str}]. Please response in English.'
)

INSTAGGER_TEMPLATE = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant "
    "gives helpful, detailed, and polite answers to the human's questions."
    " USER: "
    "Please identify tags of user intentions in the following user query and provide an "
    'explanation for each tag. Please respond in the JSON format {"tag": str, "explanation": '
    "str}.\n"
    "User query: {query}"
    " ASSISTANT:"
)

#: JSON schema of a well-formed answer, for TGI's ``grammar`` / ``response_format``.
#: Shared by every caller: treat it as read-only.
TAGS_JSON_SCHEMA: dict[str, Any] = {
    "type": "array",
    "minItems": 1,
    "items": {
        "type": "object",
        "properties": {
            "tag": {"type": "string"},
            "explanation": {"type": "string"},
        },
        "required": ["tag", "explanation"],
        "additionalProperties": False,
    },
}

#: Answer forms: ``"paper"`` (the paper's ``[{"tag", "explanation"}]``) and ``"tags"`` (a
#: list of tag titles, no explanation: about half the generated tokens).
ANSWER_FORMS = ("paper", "tags")

#: JSON schema of a tags-only answer: a list of tag titles.
TAG_TITLES_JSON_SCHEMA: dict[str, Any] = {"type": "array", "minItems": 1, "items": {"type": "string"}}

# The answer-format sentences of the built-in templates, and their tags-only wording: the
# rest of each prompt stays byte-exact.
_TAGS_ONLY_WORDING = {
    "paper": (
        "Your answer should be a list including titles of tags and a brief explanation of each tag. "
        'Your response have to strictly follow this JSON format: [{"tag": str, "explanation": str}].',
        "Your answer should be a list including titles of tags. "
        "Your response have to strictly follow this JSON format: [str].",
    ),
    "instagger": (
        "in the following user query and provide an explanation for each tag. "
        'Please respond in the JSON format {"tag": str, "explanation": str}.',
        "in the following user query. Please respond in the JSON format [str].",
    ),
}

_KINDS = ("chat", "raw")


@dataclass(frozen=True)
class PromptTemplate:
    """A tagging prompt with one ``{query}`` placeholder.

    Args:
        name: Short name, shown in logs and dataset cards.
        text: The template; holds the literal ``{query}`` exactly once. Other braces
            (such as the JSON example) are left alone: this is not ``str.format``.
        kind: ``"chat"`` when the text is a user message for a chat model (the server's
            chat template wraps it), ``"raw"`` when it is already a complete prompt for a
            raw ``/generate`` call.

    Raises:
        ConfigurationError: ``text`` lacks ``{query}`` or holds it more than once, or
            ``kind`` is not ``"chat"`` / ``"raw"``.

    Example:
        >>> t = PromptTemplate("mine", 'Tag this: {query}\\nAnswer [{"tag": str}]')
        >>> t.render("hi")
        'Tag this: hi\\nAnswer [{"tag": str}]'
    """

    name: str
    text: str
    kind: Literal["chat", "raw"] = "chat"
    #: Hex sha256 of ``text``; computed once here so the object pickles (and hashes for
    #: ``Dataset.map``) the same whether or not it was read.
    sha256: str = field(init=False, repr=False, compare=False)
    _head: str = field(init=False, repr=False, compare=False)
    _tail: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigurationError(f"PromptTemplate needs a non-empty name, got {self.name!r}")
        if not isinstance(self.text, str):
            raise ConfigurationError(f"PromptTemplate text must be a string, got {type(self.text).__name__}")
        count = self.text.count(PLACEHOLDER)
        if count != 1:
            raise ConfigurationError(
                f"Prompt template {self.name!r} must contain {PLACEHOLDER} exactly once "
                f"(found {count}): put {PLACEHOLDER} where the user's query goes"
            )
        if self.kind not in _KINDS:
            raise ConfigurationError(
                f"PromptTemplate kind must be 'chat' or 'raw', got {self.kind!r}: 'chat' for a "
                "user message, 'raw' for a complete prompt"
            )
        head, _, tail = self.text.partition(PLACEHOLDER)
        object.__setattr__(self, "_head", head)
        object.__setattr__(self, "_tail", tail)
        object.__setattr__(self, "sha256", hashlib.sha256(self.text.encode("utf-8")).hexdigest())

    @property
    def is_raw(self) -> bool:
        """True when the text is a complete prompt for a raw ``/generate`` call."""
        return self.kind == "raw"

    def render(self, query: str) -> str:
        """The prompt for one query.

        Args:
            query: The user's turn, inserted verbatim.

        Returns:
            The template text with ``{query}`` replaced by ``query``.

        Example:
            >>> get_template("instagger").render("Hi").endswith("User query: Hi ASSISTANT:")
            True
        """
        return self._head + query + self._tail


PAPER = PromptTemplate("paper", PAPER_TEMPLATE, kind="chat")
INSTAGGER = PromptTemplate("instagger", INSTAGGER_TEMPLATE, kind="raw")
BUILTIN_TEMPLATES: dict[str, PromptTemplate] = {PAPER.name: PAPER, INSTAGGER.name: INSTAGGER}


def answer_json_schema(answer: str) -> dict[str, Any]:
    """The JSON schema an answer of form ``answer`` (:data:`ANSWER_FORMS`) must follow.

    Example:
        >>> answer_json_schema("tags")["items"]
        {'type': 'string'}
    """
    return TAG_TITLES_JSON_SCHEMA if answer == "tags" else TAGS_JSON_SCHEMA


def for_answer(template: PromptTemplate, answer: str) -> PromptTemplate:
    """The prompt actually sent for answer form ``answer``.

    ``"paper"`` is ``template`` itself. ``"tags"`` rewords a built-in template's answer format
    to a list of tag titles (``[str]``) and keeps the rest of it byte-exact; a custom template
    is sent as written (its text says what to answer; the JSON schema still asks for titles).

    Example:
        >>> for_answer(PAPER, "tags").text.endswith("JSON format: [str]. Please response in English.")
        True
    """
    wording = _TAGS_ONLY_WORDING.get(template.name) if answer == "tags" else None
    if wording is None or wording[0] not in template.text:
        return template
    return PromptTemplate(template.name, template.text.replace(*wording), kind=template.kind)


def get_template(spec: str | PromptTemplate = "paper") -> PromptTemplate:
    """Resolve a template name, a custom template text, or a template.

    Args:
        spec: ``"paper"`` (default), ``"instagger"``, a custom template text containing
            ``{query}`` (a ``"chat"`` template named ``"custom"``; build a
            :class:`PromptTemplate` yourself for a raw one), or a :class:`PromptTemplate`.

    Returns:
        The :class:`PromptTemplate`.

    Raises:
        ConfigurationError: ``spec`` is none of the above.

    Example:
        >>> get_template("instagger").kind
        'raw'
        >>> get_template("Tags for: {query}").name
        'custom'
    """
    if isinstance(spec, PromptTemplate):
        return spec
    if not isinstance(spec, str):
        raise ConfigurationError(
            f"prompt must be a template name, a template text or a PromptTemplate, got {type(spec).__name__}"
        )
    builtin = BUILTIN_TEMPLATES.get(spec.strip().lower())
    if builtin is not None:
        return builtin
    if PLACEHOLDER in spec:
        return PromptTemplate("custom", spec)
    raise ConfigurationError(
        f"Unknown prompt template {spec[:80]!r}: use 'paper', 'instagger', or a template text "
        f"containing {PLACEHOLDER} where the query goes"
    )


__all__ = [
    "ANSWER_FORMS",
    "BUILTIN_TEMPLATES",
    "INSTAGGER",
    "INSTAGGER_TEMPLATE",
    "MAX_NEW_TOKENS",
    "PAPER",
    "PAPER_TEMPLATE",
    "PLACEHOLDER",
    "TAGS_JSON_SCHEMA",
    "TAG_TITLES_JSON_SCHEMA",
    "PromptTemplate",
    "answer_json_schema",
    "for_answer",
    "get_template",
]
