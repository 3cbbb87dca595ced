"""The fake tagging "model" behind the loopback TGI server: deterministic, no weights.

It finds the user query inside a tagging prompt, picks 1-5 intention tags for it from a
fixed vocabulary (keywords first, then stable hashes of the query's words), and writes
the answer an InsTag tagger would give: a JSON list of ``{"tag", "explanation"}``
objects -- or, when a fault is injected, the kind of mess real models produce.

Everything here is a pure function of its arguments (hashes are blake2b, never Python's
randomised ``hash``), so the same query gets the same answer in any process.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

# Tag -> words that make it the obvious choice. The order of the dict is the order of the
# vocabulary used for hash picks, so appending is fine and reordering changes answers.
VOCABULARY: dict[str, tuple[str, ...]] = {
    "code generation": ("code", "python", "function", "program", "script", "implement", "javascript"),
    "debugging": ("bug", "error", "fix", "debug", "exception", "traceback", "crash"),
    "code explanation": ("snippet", "regex", "algorithm", "pseudocode"),
    "code optimization": ("optimize", "faster", "performance", "efficient", "refactor"),
    "database query": ("sql", "query", "database", "table", "postgres", "mysql"),
    "web development": ("html", "css", "react", "website", "frontend", "django", "flask"),
    "shell command": ("bash", "shell", "linux", "terminal", "command"),
    "api usage": ("api", "endpoint", "request", "http", "library"),
    "machine learning": ("model", "training", "neural", "dataset", "learning", "pytorch"),
    "data analysis": ("data", "analysis", "analyze", "statistics", "csv", "chart", "pandas"),
    "math": ("math", "calculate", "equation", "solve", "integral", "derivative", "sum", "number"),
    "probability": ("probability", "chance", "random", "odds", "dice"),
    "logical reasoning": ("logic", "puzzle", "riddle", "deduce", "reasoning"),
    "problem solving": ("problem", "solution", "solve", "issue"),
    "translation": ("translate", "translation", "french", "spanish", "german", "chinese", "english"),
    "summarization": ("summarize", "summary", "tldr", "shorten", "brief"),
    "text rewriting": ("rewrite", "rephrase", "paraphrase", "reword"),
    "spelling and grammar check": ("grammar", "spelling", "proofread", "typo", "correct"),
    "creative writing": ("write", "creative", "imagine", "fiction"),
    "story writing": ("story", "tale", "character", "plot", "novel"),
    "poetry writing": ("poem", "poetry", "haiku", "rhyme", "verse", "sonnet"),
    "essay writing": ("essay", "thesis", "argumentative", "paragraph"),
    "email writing": ("email", "e-mail", "reply", "message"),
    "cosplay": ("pretend", "roleplay", "act", "role", "persona"),
    "information retrieval": ("who", "when", "where", "find", "search"),
    "explanation": ("why", "explain", "describe", "understand"),
    "definition": ("define", "definition", "meaning", "mean"),
    "comparison": ("compare", "comparison", "difference", "versus", "vs", "better"),
    "recommendation": ("recommend", "suggest", "best", "should"),
    "planning": ("plan", "schedule", "organize", "steps", "roadmap"),
    "travel planning": ("travel", "trip", "itinerary", "visit", "flight", "hotel"),
    "cooking": ("recipe", "cook", "bake", "ingredients", "food", "dinner"),
    "health advice": ("health", "symptom", "doctor", "medicine", "pain", "sleep"),
    "fitness": ("exercise", "workout", "fitness", "gym", "running"),
    "financial advice": ("money", "invest", "budget", "stock", "finance", "tax"),
    "legal advice": ("law", "legal", "contract", "lawyer", "rights"),
    "career advice": ("career", "job", "interview", "resume", "salary"),
    "education": ("learn", "teach", "student", "course", "school", "study"),
    "historical knowledge": ("history", "historical", "war", "century", "ancient"),
    "science knowledge": ("science", "scientific", "experiment", "theory"),
    "physics": ("physics", "force", "energy", "gravity", "quantum"),
    "chemistry": ("chemistry", "chemical", "molecule", "reaction", "acid"),
    "biology": ("biology", "cell", "gene", "evolution", "species"),
    "geography": ("country", "city", "capital", "map", "continent"),
    "music": ("music", "song", "lyrics", "guitar", "melody"),
    "movie": ("movie", "film", "actor", "cinema"),
    "sports": ("sport", "football", "soccer", "basketball", "tennis"),
    "product description": ("product", "description", "features", "sell"),
    "marketing": ("marketing", "campaign", "brand", "advertising", "slogan"),
    "business strategy": ("business", "startup", "strategy", "company", "market"),
    "social media": ("twitter", "tweet", "instagram", "post", "linkedin"),
    "humor": ("joke", "funny", "humor", "pun"),
    "opinion": ("opinion", "think", "feel", "believe"),
    "brainstorming": ("ideas", "brainstorm", "names", "list"),
    "classification": ("classify", "category", "categorize", "label"),
    "sentiment analysis": ("sentiment", "positive", "negative", "review"),
    "information extraction": ("extract", "entities", "parse", "keywords"),
    "formatting": ("format", "table", "json", "markdown", "bullet"),
    "question answering": ("question", "answer", "quiz"),
    "personal advice": ("relationship", "friend", "advice", "family"),
    "greeting": ("hello", "hi", "hey", "thanks"),
}
TAGS: tuple[str, ...] = tuple(VOCABULARY)
_KEYWORD_TAG = {word: tag for tag, words in reversed(VOCABULARY.items()) for word in words}
_WORD = re.compile(r"[a-z0-9'\-]+")
_TOKEN = re.compile(r"\s*\S+")


def stable_hash(text: str) -> int:
    """A 64-bit hash that is the same in every process (unlike ``hash``)."""
    # surrogatepass: a poisoned answer ("raw_surrogate") holds lone surrogates and is hashed too.
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")


def count_tokens(text: str) -> int:
    """The fake tokenizer: one token per whitespace-separated word."""
    return len(text.split())


def split_tokens(text: str) -> list[str]:
    """Generated text as tokens: each word with the whitespace before it, so they re-join."""
    return _TOKEN.findall(text)


def extract_query(text: str) -> str:
    """The user query inside a tagging prompt.

    The InsTag paper template puts it between ``[begin]`` and ``[end]`` (one newline
    inside each marker is part of the template); the InsTagger template puts it after
    ``User query: `` up to `` ASSISTANT:``. Anything else is taken whole.
    """
    begin, end = text.find("[begin]"), text.rfind("[end]")
    if begin >= 0 and end > begin:
        query = text[begin + len("[begin]") : end]
        return query.removeprefix("\n").removesuffix("\n")
    start = text.find("User query: ")
    if start >= 0:
        start += len("User query: ")
        stop = text.rfind(" ASSISTANT:")
        return text[start:stop] if stop >= start else text[start:]
    return text


def tag_query(query: str, variant: int = 0) -> list[dict[str, str]]:
    """1-5 ``{"tag", "explanation"}`` dicts for a query, always the same for the same query.

    ``variant`` makes another fake model: 0 is the default one; any other value keeps the
    keyword tags (as two real models agree on the obvious intentions) but draws its other
    tags, and how many, from hashes salted with the variant, and writes every second tag
    capitalised ("Math"), so exact matching on raw strings and on rule keys differ.
    """
    salt = "" if not variant else f"variant {variant}:"
    wanted = 1 + stable_hash(salt + query) % 5
    words = _WORD.findall(query.lower())
    chosen: dict[str, str] = {}
    for word in words:  # keywords first: they make the answers look like a model's
        tag = _KEYWORD_TAG.get(word)
        if tag and tag not in chosen:
            chosen[tag] = f'The query mentions "{word}", which calls for {tag}.'
    salts = words + [f"{query}#{i}" for i in range(2 * len(TAGS))]
    for word in salts:
        if len(chosen) >= wanted:
            break
        tag = TAGS[stable_hash(salt + word) % len(TAGS)]
        chosen.setdefault(tag, f"The user's intention involves {tag}.")
    tags = list(chosen.items())[:wanted]
    if variant:
        tags = [(tag.capitalize() if i % 2 else tag, why) for i, (tag, why) in enumerate(tags)]
    return [{"tag": tag, "explanation": why} for tag, why in tags]


def shape(tags: list[dict[str, str]], schema: dict[str, Any] | None) -> Any:
    """Fit the tag list to a grammar's JSON schema, as a constrained decoder would.

    An object schema with an array property (TGI rejects grammars without top-level
    ``properties``, so clients wrap the list) gets ``{that_property: tags}``; anything
    else gets the bare list. An array of strings gets the tag titles alone.
    """
    if schema and schema.get("type") == "object":
        for name, sub in (schema.get("properties") or {}).items():
            if isinstance(sub, dict) and (sub.get("type") == "array" or "items" in sub):
                return {name: _fit_items(tags, sub)}
    return _fit_items(tags, schema)


def _fit_items(tags: list[dict[str, str]], array: dict[str, Any] | None) -> list[Any]:
    """Tag titles only when the array's items are strings (the tags-only answer form)."""
    items = array.get("items") if isinstance(array, dict) else None
    if isinstance(items, dict) and items.get("type") == "string":
        return [tag["tag"] for tag in tags]
    return tags


def render(query: str, schema: dict[str, Any] | None, fault: str | None, variant: int = 0) -> tuple[str, bool]:
    """The generated text for a query, and whether it was cut off (finish reason "length").

    ``fault`` is one of the content faults ("prose", "dict", "truncated", "empty",
    "garbage", "surrogate", "raw_surrogate") or anything else / None for the clean answer;
    ``variant`` picks the fake model (see :func:`tag_query`).
    The two poisoned ones add a tag that is not valid text: "surrogate" writes it as JSON
    escapes (``\\ud800``, ``\\u0000``: valid JSON that decodes to a lone surrogate and a
    NUL), "raw_surrogate" puts the lone surrogate and the NUL in the generated text itself.
    """
    tags = tag_query(query, variant)
    clean = json.dumps(shape(tags, schema), ensure_ascii=False)
    if fault == "prose":
        return f"Sure! Here are the tags:\n```json\n{clean}\n```\nLet me know if you need more.", False
    if fault == "dict":
        return json.dumps(tags[0], ensure_ascii=False), False
    if fault == "truncated":
        return clean[: max(1, len(clean) // 2)], True
    if fault == "empty":
        return "", False
    if fault == "surrogate":
        poisoned = tags + [{"tag": "poisoned \ud800 tag", "explanation": "a NUL \x00 and a lone surrogate"}]
        return json.dumps(shape(poisoned, schema), ensure_ascii=True), False
    if fault == "raw_surrogate":
        poisoned = tags + [{"tag": "poisoned \ud800 tag", "explanation": "a NUL \x00 here"}]
        text = json.dumps(shape(poisoned, schema), ensure_ascii=False)
        return text.replace("\\ud800", "\ud800").replace("\\u0000", "\x00"), False
    if fault == "garbage":
        return "I am sorry, but I cannot identify the intentions of this instruction.", False
    return clean, False
