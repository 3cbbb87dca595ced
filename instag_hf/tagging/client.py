"""Asking the endpoints for one query's tags: retries, re-asks, cache, fail-fast.

A :class:`TaggingClient` lives inside one event loop of one process (``Dataset.map``
creates a loop per map call and per worker). It owns the ``aiohttp`` session and the
:class:`~instag_hf.tagging.endpoint_pool.EndpointPool`, so concurrency spans every batch that loop runs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from instag_hf.errors import EndpointError
from instag_hf.tagging.auth import EndpointAuth
from instag_hf.tagging.cache import RequestCache, request_key
from instag_hf.tagging.dialects import build_request, first_form, read_reply, read_usage, weaker_form
from instag_hf.tagging.endpoint_pool import EndpointPool
from instag_hf.tagging.parsing import ParseResult, parse_tags
from instag_hf.tagging.progress import TaggingProgress, TaggingStats
from instag_hf.tagging.prompts import PromptTemplate, answer_json_schema
from instag_hf.tagging.servers import ServerInfo, dead_server_reason, new_session, post
from instag_hf.tagging.settings import TaggerSettings

logger = logging.getLogger(__name__)

#: Characters per token assumed when fitting a query under a server's input limit. Real
#: tokenizers average ~4 for English and ~3 for code; 3 errs on the side of fitting.
CHARS_PER_TOKEN = 3


@dataclass(frozen=True)
class Answer:
    """One query's outcome: parsed tags, or why there are none."""

    parsed: ParseResult | None
    error: str | None = None


class TaggingClient:
    def __init__(
        self,
        infos: list[ServerInfo],
        settings: TaggerSettings,
        *,
        timeout: float,
        cache: RequestCache | None,
        auth: EndpointAuth,
        stats: TaggingStats,
        progress: TaggingProgress | None = None,
        forms: dict[str, str] | None = None,
    ) -> None:
        self.infos = infos
        # Read once: the settings are frozen, and these are read per request.
        self.template = settings.prompt  # worded for the answer form
        self.schema = answer_json_schema(settings.answer)
        self.params = first_params(settings.max_new_tokens, settings.answer)
        self.timeout = timeout  # resolved by the Tagger: None in the settings reads INSTAG_REQUEST_TIMEOUT
        self.retry = settings.retry
        self.parse_retries = settings.parse_retries
        self.fail_fast_seconds = settings.fail_fast_seconds
        # Fail-fast bookkeeping: when the last answer came, when this client last went from
        # idle to busy (a Tagger reused after an hour is not "silent for an hour"), and what
        # each endpoint did since the last answer.
        self._last_success = self._busy_since = time.monotonic()
        self._failures: dict[str, list[Any]] = {}  # url -> [attempts failed, last error]
        self._watch: asyncio.TimerHandle | None = None
        self._stopped: asyncio.Future[None] | None = None
        self.cache = cache
        self.auth = auth
        self.connector = settings.connector
        # Structured-output form per endpoint, weakened at most once (see _fall_back); the
        # Tagger shares one dict with all its clients, so a later map does not ask again.
        self._forms = forms if forms is not None else {}
        for info in infos:
            self._forms.setdefault(info.url, first_form(info.kind))
        self.stats = stats
        self.progress = progress
        self.pool = EndpointPool(infos, settings.concurrency)
        self.identity = infos[0].identity
        self._session: aiohttp.ClientSession | None = None
        self._pending: dict[str, asyncio.Future[Answer]] = {}
        self._tasks: set[asyncio.Task[Answer]] = set()
        self._fatal: EndpointError | None = None  # once set, every request stops with it
        self._max_query_chars = _max_query_chars(infos, self.template, settings.max_new_tokens)

    @property
    def stopped(self) -> bool:
        """The endpoints were declared dead and every request has ended: use a new client."""
        return self._fatal is not None and not self._tasks

    @property
    def max_query_chars(self) -> int | None:
        return self._max_query_chars

    def key(self, query: str) -> str:
        return request_key(self.identity, self.template.sha256, query, self.params)

    def cached(self, queries: list[str]) -> dict[str, Answer]:
        """Answers already on disk, by query."""
        if self.cache is None or not queries:
            return {}
        keys = {self.key(q): q for q in queries}
        found = self.cache.get_many(keys)
        self.stats.cache_hits += len(found)
        if self.progress is not None and found:
            self.progress.update(len(found), self.pool.in_flight)
        return {keys[k]: Answer(parse_tags(text)) for k, text in found.items()}

    def spawn(self, query: str) -> asyncio.Task[Answer]:
        """``ask`` as a task this client can cancel when the endpoints are declared dead."""
        if self._fatal is not None:
            raise self._fatal
        if not self._tasks:
            self._busy_since = time.monotonic()
        task = asyncio.ensure_future(self.ask(query))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._start_watch()
        return task

    async def gather(self, tasks: list[asyncio.Task[Answer]]) -> list[Answer]:
        """The tasks' answers, or the :class:`EndpointError` that stopped this client.

        Waits for whichever comes first, so a map stops as soon as the endpoints are declared
        dead, even while every request is waiting for a slot, a backoff or a hung server.
        """
        together: asyncio.Future[list[Answer]] = asyncio.gather(*tasks)
        if self._stopped is None:
            self._stopped = asyncio.get_running_loop().create_future()
        waiters: set[asyncio.Future[Any]] = {together, self._stopped}
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if self._fatal is None:
            return together.result()
        await self.abort()  # this batch's requests and every other batch's
        await asyncio.wait({together})
        if not together.cancelled():
            together.exception()  # retrieved: the client's error is raised instead
        raise self._fatal

    async def abort(self) -> None:
        """Cancel every request still running or waiting, and let them finish cancelling.

        Without this, requests waiting on a slot or a backoff would stay pending in an
        event loop that datasets never runs again.
        """
        self._stop_watch()
        pending = [task for task in self._tasks if not task.done()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for _ in range(3):  # the batches awaiting those tasks unwind on the next iterations
            await asyncio.sleep(0)

    async def ask(self, query: str) -> Answer:
        """The answer for ``query``; concurrent askers of one query share one request."""
        key = self.key(query)
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            answer = await self._ask(query, key)
            if self.progress is not None:
                self.progress.update(1, self.pool.in_flight)
            future.set_result(answer)
            return answer
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # mark retrieved: sharers re-raise it themselves
            raise
        finally:
            del self._pending[key]

    async def _ask(self, query: str, key: str) -> Answer:
        prompt = self.template.render(query)
        parsed: ParseResult | None = None
        for attempt in range(1 + self.parse_retries):
            # A greedy re-ask would repeat the same answer: later asks sample, seeded.
            params = (
                self.params if attempt == 0 else {**self.params, "do_sample": True, "temperature": 0.7, "seed": attempt}
            )
            if attempt:
                self.stats.reasked += 1
            text, error = await self._generate(prompt, params)
            if text is None:
                return Answer(None, error)
            parsed = parse_tags(text)
            if parsed.error is None:
                break
        # Tagger checks parse_retries >= 0, so the loop ran, and a pass with no text returned.
        assert text is not None
        if self.cache is not None:
            self.cache.put(key, text)
        self.stats.answered += 1
        return Answer(parsed)

    async def _generate(self, prompt: str, params: dict[str, Any]) -> tuple[str | None, str | None]:
        """Generated text, or (None, what went wrong after the last attempt)."""
        session = self._session_for_loop()
        raw = self.template.is_raw
        attempt = 0
        while True:
            attempt += 1
            if self._fatal is not None:
                raise self._fatal
            async with self.pool.slot() as slot:
                if self._fatal is not None:  # declared while this request waited for its slot
                    raise self._fatal
                info, form = slot.info, self._forms[slot.info.url]
                path, body = build_request(info.kind, info.model_id, prompt, raw, params, self.schema, form)
                self.stats.requests += 1
                sent_at = time.monotonic()
                reply = await post(session, info.url + path, body, self.timeout, self.auth.headers_for(info.url))
            status, error, retry_after = reply.status, reply.error, reply.retry_after
            if error is None:
                text = read_reply(path, reply.payload)
                if text is not None:
                    self.stats.count_usage(read_usage(reply.payload, reply.token_headers))
                    self.pool.succeeded(slot)
                    self._last_success = time.monotonic()
                    self._failures.clear()
                    return text, None
                status, error = 502, "the response holds no generated text"
            error = self.auth.scrub(error) or ""  # a server may echo the key it was sent
            if status in (401, 403):
                self._refused(info.url, path, status, error)
            if self._fall_back(info.url, form, status, error):
                continue
            if status == 429 or (status is None and error.startswith("timed out")):
                self.pool.overloaded(slot, sent_at)
            elif status is None:
                self.pool.unreachable(slot)
            self._note_failure(slot.info.url, status, error)
            wait = self.retry.decide(attempt, status, retry_after)
            if wait is None:
                self.stats.failed += 1
                what = f"HTTP {status}: {error}" if status is not None else error
                verb = "failed after" if self.retry.is_retryable(status) else "rejected at"
                return None, f"request {verb} {attempt} attempt{'s' * (attempt > 1)}: {what}"
            self.stats.retries += 1
            await asyncio.sleep(wait)

    def _note_failure(self, url: str, status: int | None, error: str) -> None:
        """Count an endpoint's failure; stop everything if the endpoints are dead."""
        if not self.retry.is_retryable(status):
            return  # the request's fault (422 and the like), not the endpoint's
        counts = self._failures.setdefault(url, [0, ""])
        counts[0] += 1
        counts[1] = f"HTTP {status}: {error}" if status is not None else error
        self._check_alive()
        if self._fatal is not None:
            raise self._fatal

    def _check_alive(self) -> None:
        """Declare the endpoints dead when a watched server has exited or nothing answered.

        Time, not attempts, decides: an endpoint set aside or with few slots makes few
        attempts, and a hung one makes none until its requests time out.
        """
        if self._fatal is not None:
            return
        deaths = [dead_server_reason(info.url) for info in self.infos]
        if all(deaths):
            self._declare_dead(EndpointError(" ".join(dict.fromkeys(d for d in deaths if d)), url=self.infos[0].url))
            return
        silent_for = time.monotonic() - max(self._last_success, self._busy_since)
        if not self._failures or silent_for < self.fail_fast_seconds:
            return
        what = "; ".join(
            f"{url} failed {count} attempt{'s' * (count > 1)} (last: {last})"
            for url, (count, last) in self._failures.items()
        )
        kept = (
            "every answer received so far is cached and will not be asked again"
            if self.cache is not None
            else ("the request cache is off, so every query will be asked again")
        )
        self._declare_dead(
            EndpointError(
                f"No tagging endpoint answered for {silent_for:.0f}s: {what}. The endpoint looks down or hung: "
                f"check it and run the same map again; {kept}.",
                url=next(iter(self._failures)),
            )
        )

    def _declare_dead(self, error: EndpointError) -> None:
        self._fatal = error
        self._stop_watch()
        if self._stopped is not None and not self._stopped.done():
            self._stopped.set_result(None)

    def _start_watch(self) -> None:
        # A timer handle, not a task: datasets stops running its loop after a map, and a
        # sleeping task left in it would be "destroyed but pending" at exit.
        if self._watch is None:
            self._watch = asyncio.get_running_loop().call_later(self._watch_every, self._on_watch)

    def _on_watch(self) -> None:
        self._watch = None
        self._check_alive()
        if self._tasks and self._fatal is None:
            self._start_watch()

    def _stop_watch(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None

    @property
    def _watch_every(self) -> float:
        return min(1.0, max(0.05, self.fail_fast_seconds / 10))

    def _refused(self, url: str, path: str, status: int, error: str) -> None:
        """A 401/403: no key will do better on a retry, so the whole map stops here."""
        if self._fatal is None:
            self._declare_dead(self.auth.refused(url, path, status, error))
        assert self._fatal is not None
        raise self._fatal

    def _fall_back(self, url: str, form: str, status: int | None, error: str) -> bool:
        """Whether to ask again at once with a weaker structured-output form.

        Each endpoint falls back at most once: the form is replaced, never cycled, and a
        request that raced the switch simply resends with the form now in place.
        """
        weaker = weaker_form(form, status, error)
        if weaker is None:
            return False
        if self._forms[url] != form:
            return True  # another request of this endpoint already fell back
        self._forms[url] = weaker
        logger.warning(
            "%s refused the %s response format (HTTP %s: %s); using %s for this endpoint from now on",
            url,
            form,
            status,
            error[:200],
            weaker,
        )
        return True

    def _session_for_loop(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = new_session(self.connector)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def first_params(max_new_tokens: int, answer: str = "paper") -> dict[str, Any]:
    """Generation parameters of a query's first ask (part of its cache key): greedy.

    A tags-only answer form is named in them, so its answers never share a key with the
    paper form's; the paper form is not, so keys made before the setting existed still
    hit. :func:`~instag_hf.tagging.dialects.build_request` does not send it.
    """
    params: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": False}
    if answer != "paper":
        params["answer"] = answer
    return params


def _max_query_chars(infos: list[ServerInfo], template: PromptTemplate, max_new_tokens: int) -> int | None:
    """Longest query (characters) that fits every endpoint's input limit, when one says it."""
    budgets = []
    for info in infos:
        limits = [n for n in (info.max_input_tokens,) if n]
        if info.max_total_tokens:
            limits.append(info.max_total_tokens - max_new_tokens)
        if limits:
            budgets.append(min(limits))
    if not budgets:
        return None
    template_tokens = -(-len(template.text) // CHARS_PER_TOKEN)
    return max(0, (min(budgets) - template_tokens) * CHARS_PER_TOKEN)
