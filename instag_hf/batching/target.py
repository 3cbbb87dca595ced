"""What a batch asks, exactly as online tagging would ask it: the model, the request bodies,
the request-cache keys, and the ``custom_id`` that ties each result line back to them.

A batch has no server to detect. Its model is ``--model`` and its structured-output form
that of ``--server`` (default ``openai``: ``json_schema``); with ``--endpoint`` the server
there is asked instead (model, kind, input limit), as ``instag tag`` would. Either way the
identity in the cache key is the one online tagging of that server computes, so answers
collected from a batch are cache hits for ``instag tag`` afterwards.

``custom_id`` is ``instag-<digest>-<row>-<turn>-<key>``:

- ``digest``: 8 hex of sha256 over the model identity, the prompt and the generation
  parameters, so a line prepared with other settings is recognised as such, not as a
  query this dataset lacks;
- ``row``, ``turn``: where the query first appears (a query asked by several rows is sent
  once; every row holding it gets the answer), for people reading the files;
- ``key``: the first 32 hex (128 bits) of the request-cache key. ``collect`` recomputes
  the keys of the dataset's queries and matches on this, never on line order or on row
  numbers, so a results file of another dataset (or of an edited one) is told apart.

No manifest file is needed: each line says everything collect checks.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from instag_hf.errors import ConfigurationError
from instag_hf.tagging.cache import request_key
from instag_hf.tagging.client import _max_query_chars, first_params
from instag_hf.tagging.dialects import OPENAI, TGI, build_request, first_form
from instag_hf.tagging.prompts import PromptTemplate, answer_json_schema
from instag_hf.tagging.servers import ServerInfo

if TYPE_CHECKING:
    from instag_hf.tagging.tagger import Tagger

#: The only URL a tagging batch line asks (OpenAI's Batch API names the endpoint per batch).
CHAT_URL = "/v1/chat/completions"
_KEY_CHARS = 32
_CUSTOM_ID = re.compile(r"instag-([0-9a-f]{8})-(\d+)-(\d+)-([0-9a-f]{32})")


class CustomId(NamedTuple):
    """The parts of a ``custom_id`` written by :meth:`BatchTarget.custom_id`."""

    digest: str
    row: int
    turn: int
    key_prefix: str


def parse_custom_id(value: Any) -> CustomId | None:
    """The parts of a ``custom_id``, None when ``instag batch prepare`` did not write it.

    Example:
        >>> parse_custom_id("instag-0123abcd-7-0-" + "f" * 32).row
        7
    """
    match = _CUSTOM_ID.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        return None
    return CustomId(match.group(1), int(match.group(2)), int(match.group(3)), match.group(4))


@dataclass(frozen=True)
class BatchTarget:
    """The server a batch is for and how its requests are written.

    Attributes:
        info: The server (detected at ``--endpoint``, or described by ``--server``/``--model``).
        prompt: The prompt as sent (worded for the answer form).
        params: Generation parameters of a first ask (greedy, temperature 0), as online.
        schema: The answer's JSON schema.
        form: The structured-output form of the server kind.
        max_query_chars: Longest query the server takes (None when it says nothing).
    """

    info: ServerInfo
    prompt: PromptTemplate
    params: dict[str, Any]
    schema: dict[str, Any]
    form: str
    max_query_chars: int | None

    @classmethod
    def of(cls, tagger: Tagger) -> BatchTarget:
        """The target of ``tagger``'s settings.

        Raises:
            ConfigurationError: No ``--model`` and no ``--endpoint`` to ask, or a raw prompt
                for TGI (its ``/generate`` route is not in the batch file format).
            EndpointError: ``--endpoint`` was given and does not answer.
        """
        settings = tagger.settings
        if settings.endpoints:
            info = tagger.servers()[0]
        elif settings.model is None:
            raise ConfigurationError(
                "A batch file names its model: give --model (Tagger(model=...)), e.g. --model gpt-4o-mini, "
                "and --server for the server kind if it is not OpenAI's API (vllm, sglang, llamacpp, tgi); "
                "or --endpoint of a running server to ask what it serves"
            )
        else:
            info = ServerInfo(url="", kind=settings.server or OPENAI, model_id=str(settings.request_model))
        prompt = settings.prompt
        if prompt.is_raw and info.kind == TGI:
            raise ConfigurationError(
                f"The {prompt.name!r} template is a raw prompt for TGI's /generate, which batch files cannot ask: "
                "use a chat template (--template paper)"
            )
        return cls(
            info=info,
            prompt=prompt,
            params=first_params(settings.max_new_tokens, settings.answer),
            schema=answer_json_schema(settings.answer),
            form=first_form(info.kind),
            max_query_chars=_max_query_chars([info], prompt, settings.max_new_tokens),
        )

    @property
    def digest(self) -> str:
        """8 hex naming the settings every key of this target is made with."""
        text = json.dumps([self.info.identity, self.prompt.sha256, self.params], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]

    def key(self, query: str) -> str:
        """The request-cache key of ``query`` (the one online tagging uses)."""
        return request_key(self.info.identity, self.prompt.sha256, query, self.params)

    def custom_id(self, key: str, row: int, turn: int) -> str:
        return f"instag-{self.digest}-{row}-{turn}-{key[:_KEY_CHARS]}"

    def request_line(self, query: str, key: str, row: int, turn: int) -> dict[str, Any]:
        """One line of an OpenAI Batch requests file: ``{custom_id, method, url, body}``."""
        path, body = build_request(
            self.info.kind, self.info.model_id, self.prompt.render(query), self.prompt.is_raw,
            self.params, self.schema, self.form,
        )  # fmt: skip
        assert path == CHAT_URL  # only a raw TGI prompt goes elsewhere, refused in of()
        return {"custom_id": self.custom_id(key, row, turn), "method": "POST", "url": path, "body": body}

    def provenance(self, tagger: Tagger) -> dict[str, Any]:
        """What tagged the rows, as :func:`~instag_hf.sampling.provenance.record_tagging` takes it."""
        return {"kind": self.info.kind, "model": self.info.model_name, "model_sha": self.info.model_sha,
                "template": tagger.template.name, "template_sha256": tagger.template.sha256,
                "answer": tagger.answer}  # fmt: skip


def key_prefix(key: str) -> str:
    """The part of a request-cache key a ``custom_id`` carries."""
    return key[:_KEY_CHARS]
