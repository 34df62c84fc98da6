"""The Kimi model client: one streamed chat completion per call, with our own retries.

Why it looks the way it does (../shared/KIMI_API.md, ../shared/LESSONS.md "Per-step cost"):

- The request body is serialized once by us and handed to the SDK's generic ``post`` (its
  documented escape hatch for custom requests). ``chat.completions.create(messages=...)`` would run
  the whole, ever-growing history through the SDK's recursive per-field transform on every step;
  the SDK still does transport, auth headers, SSE decoding and its error classes.
- The SDK's own retries are off (``max_retries=0``): it would retry quota errors too. We retry
  transient failures (connection, timeout, 429 rate limit/overload, 5xx, a broken stream) with
  exponential backoff and jitter for ``settings.retry_window`` seconds, and fail at once with one
  clear message on the rest.
- A stream is only an answer once it carried a ``finish_reason``; anything shorter is retried,
  never returned.
- Sampling parameters are never sent (K2.x fixes them and rejects other values).
"""

from __future__ import annotations

import functools
import json
import logging
import operator
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from .lazy import lazy_module

# The SDK takes most of a second to import: only a command that talks to a model pays for it.
openai = lazy_module("openai")

from .config import Settings
from .errors import ModelAPIError
from .tokens import estimate_text_tokens

log = logging.getLogger(__name__)
_T = TypeVar("_T")

# Fewer output tokens than this left in the window: compact instead of sending.
MIN_OUTPUT_TOKENS = 1024
# Slack between our input estimate and the window, for the estimate's error.
SAFETY_MARGIN_TOKENS = 1024
BACKOFF_BASE = 1.0  # seconds before the first retry (before jitter)
BACKOFF_CAP = 60.0  # no single computed wait is longer

_QUOTA_TYPES = frozenset({"exceeded_current_quota_error", "insufficient_quota"})
_RETRY_STATUSES = frozenset({408, 409})
_RETRY_IN_TEXT = re.compile(r"try again (?:after|in) (\d+(?:\.\d+)?)\s*s", re.IGNORECASE)
_CONTEXT_400 = re.compile(
    r"token limit|context length|context window|maximum context|too many tokens|prompt is too long",
    re.IGNORECASE,
)


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str  # the raw JSON text, as streamed


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # part of prompt_tokens


@dataclass
class AssistantTurn:
    """One complete model answer."""

    content: str
    reasoning_content: str | None
    tool_calls: list[ToolCall]
    finish_reason: str | None
    usage: Usage
    cost: float  # USD
    request_id: str | None
    model: str

    def to_message(self) -> dict[str, Any]:
        """The assistant message to record and send back.

        ``content`` is omitted when empty on a tool-call message (an empty text part is rejected by
        one Kimi endpoint); ``reasoning_content`` is kept verbatim (the server requires it on every
        tool-call message while thinking, and the prefix cache needs it unchanged); ids byte for byte.
        """
        msg: dict[str, Any] = {"role": "assistant"}
        if self.content or not self.tool_calls:
            msg["content"] = self.content
        if self.reasoning_content is not None:
            msg["reasoning_content"] = self.reasoning_content
        if self.tool_calls:
            msg["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in self.tool_calls
            ]
        return msg


@dataclass
class RetryNotice:
    """Reported before each wait. ``discarded_output``: a stream broke after some deltas had been
    passed to ``on_delta``; the retry starts the answer over, so a live display should drop them."""

    attempt: int  # the attempt that failed, from 1
    wait: float  # seconds until the next attempt
    reason: str
    status: int | None
    request_id: str | None
    discarded_output: bool = False


class ContextOverflowError(ModelAPIError):
    """The request does not fit the context window (found before sending, or told by the server)."""

    def __init__(self, message: str, *, input_tokens: int | None = None, context_window: int | None = None,
                 status: int | None = None, request_id: str | None = None) -> None:
        super().__init__(message, status=status, error_type="context_overflow", request_id=request_id)
        self.input_tokens = input_tokens
        self.context_window = context_window


# The one documented estimate lives in tokens.py; re-exported for callers of the client.
estimate_tokens = estimate_text_tokens


_UNRESOLVABLE = re.compile(r"Name or service not known|nodename nor servname|No address associated|"
                           r"getaddrinfo failed|Temporary failure in name resolution", re.IGNORECASE)


# What the HTTP client (httpx, or the SDK's vendored copy) raises for a URL it will never send to:
# matched by name, so this module need not import the client library itself.
_UNUSABLE_URL_ERRORS = frozenset({"UnsupportedProtocol", "InvalidURL"})


def _unusable_url_cause(exc: BaseException) -> str | None:
    """The message of an unsupported-protocol / invalid-URL error behind ``exc``, if there is one."""
    seen: set[int] = set()
    cause: BaseException | None = exc.__cause__ or exc.__context__
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if type(cause).__name__ in _UNUSABLE_URL_ERRORS:
            return str(cause) or type(cause).__name__
        cause = cause.__cause__ or cause.__context__
    return None


class _Retry(Exception):
    """A transient failure: try again (internal)."""

    def __init__(self, reason: str, *, status: int | None = None, request_id: str | None = None,
                 retry_after: float | None = None, error_type: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.request_id = request_id
        self.retry_after = retry_after
        self.error_type = error_type
        self.discarded_output = False
        self.unresolvable = False  # the host name did not resolve


@dataclass
class _Slot:
    id: str | None = None
    name: str = ""
    args: list[str] = field(default_factory=list)


class _Assembler:
    """Folds stream chunks (raw dicts) into one answer."""

    def __init__(self, on_delta: Callable[[str, str], None] | None) -> None:
        self.on_delta = on_delta
        self.content: list[str] = []
        self.reasoning: list[str] | None = None  # None until a reasoning field is seen
        self.slots: list[_Slot] = []
        self.by_index: dict[int, _Slot] = {}
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.model: str | None = None
        self.emitted = False

    def feed(self, chunk: Any) -> None:
        if not isinstance(chunk, dict):
            return
        if chunk.get("model"):
            self.model = chunk["model"]
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content")
            if reasoning is None:
                reasoning = delta.get("reasoning")  # newer vLLM
            if isinstance(reasoning, str):
                if self.reasoning is None:
                    self.reasoning = []
                if reasoning:
                    self.reasoning.append(reasoning)
                    self._emit("reasoning", reasoning)
            content = delta.get("content")
            if isinstance(content, str) and content:
                self.content.append(content)
                self._emit("content", content)
            pieces = delta.get("tool_calls") or ()
            for pos, piece in enumerate(pieces):
                if isinstance(piece, dict):
                    self._tool_piece(piece, pos, len(pieces))
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
            if isinstance(choice.get("usage"), dict):
                self.usage = choice["usage"]

    def _emit(self, kind: str, text: str) -> None:
        self.emitted = True
        if self.on_delta is not None:
            self.on_delta(kind, text)

    def _tool_piece(self, piece: dict[str, Any], pos: int, count: int) -> None:
        index, call_id = piece.get("index"), piece.get("id")
        slot: _Slot | None
        if isinstance(index, int):
            slot = self.by_index.get(index)
            if slot is None:
                slot = self.by_index[index] = _Slot()
                self.slots.append(slot)
        elif call_id:  # no index: a new id starts a call, a known one continues it
            slot = next((s for s in self.slots if s.id == call_id), None)
            if slot is None:
                slot = _Slot()
                self.slots.append(slot)
        elif count > 1 and pos < len(self.slots):  # no index, no id: by position in the delta
            slot = self.slots[pos]
        elif self.slots:
            slot = self.slots[-1]
        else:
            slot = _Slot()
            self.slots.append(slot)
        if call_id and not slot.id:
            slot.id = call_id
        fn = piece.get("function") or {}
        if fn.get("name") and not slot.name:
            slot.name = fn["name"]
        if isinstance(fn.get("arguments"), str) and fn["arguments"]:
            slot.args.append(fn["arguments"])

    def tool_calls(self) -> list[ToolCall]:
        # An id is only made up when the server sent none (K2's own form); sent ids are kept as is.
        return [ToolCall(s.id or f"functions.{s.name}:{i}", s.name, "".join(s.args))
                for i, s in enumerate(self.slots)]


def _usage(raw: dict[str, Any] | None) -> Usage:
    if not raw:
        return Usage()
    cached = raw.get("cached_tokens")
    if cached is None:
        cached = (raw.get("prompt_tokens_details") or {}).get("cached_tokens")
    return Usage(int(raw.get("prompt_tokens") or 0), int(raw.get("completion_tokens") or 0), int(cached or 0))


def _retry_after(headers: Any, message: str) -> float | None:
    """Seconds the server asked us to wait: Retry-After (seconds or a date), else the message text."""
    value = headers.get("retry-after") if headers is not None else None
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
            except (TypeError, ValueError):
                pass
    found = _RETRY_IN_TEXT.search(message or "")
    return float(found.group(1)) if found else None


def _request_id(headers: Any) -> str | None:
    if headers is None:
        return None
    return headers.get("x-request-id") or headers.get("x-trace-id")


def _error_fields(body: Any, fallback: str) -> tuple[str | None, str]:
    if isinstance(body, dict):
        err = body.get("error") if isinstance(body.get("error"), dict) else body
        message = err.get("message")
        return err.get("type") or err.get("code"), str(message) if message else fallback
    if isinstance(body, str) and body.strip():
        return None, body.strip()[:300]
    return None, fallback


# Longest wait for the rest of a body after [DONE] (normally only its last chunk, already there).
DRAIN_SECONDS = 2.0


@functools.cache
def _stream_class() -> type:
    """The SDK's SSE stream, reading the body to its end after ``[DONE]``. The SDK stops reading at
    ``[DONE]`` and closes the response, which discards the connection (the chunked body's last
    chunk is still unread), so every request would pay a new TCP and TLS handshake; drained, the
    connection goes back to the pool. Defined on first use: the SDK is imported lazily."""

    class DrainingStream(openai.Stream[object]):  # type: ignore[misc,name-defined]
        def _iter_events(self):  # type: ignore[no-untyped-def]
            events = super()._iter_events()
            for sse in events:
                if sse.data.startswith("[DONE]"):
                    # A server that keeps sending (keep-alive comments) after [DONE] is given up on
                    # after DRAIN_SECONDS: the connection is closed, as the SDK itself would.
                    deadline = time.monotonic() + DRAIN_SECONDS
                    try:
                        for _ in events:
                            if time.monotonic() > deadline:
                                break
                    except Exception:  # noqa: BLE001 - the answer is whole: a broken tail costs the connection only
                        pass
                yield sse

    return DrainingStream


class SharedTransport:
    """What the sessions of one tree share (sub-agents, agent/swarm.py): one SDK client, hence one
    connection pool, and one back-off: a 429 or an overload seen by any session holds back every
    session's next attempt until the wait is over, so the tree slows down together instead of each
    child hammering the endpoint on its own schedule."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._lock = threading.Lock()
        self._sdk: openai.OpenAI | None = None
        self._until = 0.0
        self._clock = clock
        self._sleep = sleep

    def sdk(self, make: Callable[[], openai.OpenAI]) -> openai.OpenAI:
        with self._lock:
            if self._sdk is None:
                self._sdk = make()
            return self._sdk

    def back_off(self, seconds: float) -> None:
        with self._lock:
            self._until = max(self._until, self._clock() + seconds)

    def wait(self) -> None:
        """Sleep until the tree's back-off is over (returns at once when there is none)."""
        while True:
            with self._lock:
                left = self._until - self._clock()
            if left <= 0:
                return
            self._sleep(min(left, 1.0))

    def close(self) -> None:
        with self._lock:
            if self._sdk is not None:
                self._sdk.close()
                self._sdk = None


class ModelClient:
    """Talks to one OpenAI-compatible endpoint serving Kimi K2.x. Not thread-safe; one per session
    (sessions of one tree share their connections and back-off through ``shared``)."""

    def __init__(
        self,
        settings: Settings,
        *,
        on_retry: Callable[[RetryNotice], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        shared: SharedTransport | None = None,
    ) -> None:
        self.settings = settings
        self.shared = shared
        self.on_retry = on_retry
        self._sleep = sleep
        self._clock = clock
        self._sdk_client: openai.OpenAI | None = None
        # The last request's messages, their joined JSON and each one's text (see _messages_json).
        self._last_messages: tuple[list[dict[str, Any]], str] = ([], "")
        self._last_parts: list[str] = []
        self._reached = False  # a request has succeeded (a later DNS failure is an outage, not a typo)

    @property
    def host(self) -> str:
        """The endpoint's host[:port], as error messages name it."""
        url = self.settings.effective_base_url
        return urlparse(url).netloc or url

    @property
    def _sdk(self) -> openai.OpenAI:
        if self._sdk_client is None and self.shared is not None:
            self._sdk_client = self.shared.sdk(self._make_sdk)
        if self._sdk_client is None:  # lazily: a missing key only matters once we send
            self._sdk_client = self._make_sdk()
        return self._sdk_client

    def _make_sdk(self) -> openai.OpenAI:
        return openai.OpenAI(
                api_key=self.settings.require_api_key(),
                base_url=self.settings.effective_base_url,
                max_retries=0,
                # A dead host should fail fast; a slow stream gets the whole request timeout.
                timeout=openai.Timeout(self.settings.request_timeout,
                                       connect=min(15.0, self.settings.request_timeout)),
            )

    def close(self) -> None:
        if self.shared is not None:  # the tree's connections: closed by their owner
            self._sdk_client = None
            return
        if self._sdk_client is not None:
            self._sdk_client.close()
            self._sdk_client = None

    # -- the request -------------------------------------------------------------------------
    def _messages_json(self, messages: list[dict[str, Any]]) -> str:
        """The messages as a JSON array, each message serialized once per session: a request
        repeats every earlier message, so serializing them all again would make each step cost
        what the whole history costs. A message is never changed once it is in the history (the
        fold makes new dicts), so text cached for that very object stays right. The common case,
        the last request's messages plus a few new ones, reuses the joined text of that request
        (an identity check in C per message); otherwise each message is looked up by identity."""
        prev, prev_text = self._last_messages
        n = len(prev)
        if n and len(messages) >= n and all(map(operator.is_, messages[:n], prev)):
            added = [self._dump(m) for m in messages[n:]]
            self._last_parts.extend(added)
            joined = ",".join([prev_text, *added]) if added else prev_text
        else:
            cache = {id(m): (m, t) for m, t in zip(prev, self._last_parts)}
            parts = []
            for message in messages:
                hit = cache.get(id(message))
                parts.append(hit[1] if hit is not None and hit[0] is message else self._dump(message))
            self._last_parts = parts
            joined = ",".join(parts)
        self._last_messages = (list(messages), joined)
        return "[" + joined + "]"

    @staticmethod
    def _dump(message: dict[str, Any]) -> str:
        return json.dumps(message, ensure_ascii=False, separators=(",", ":"), allow_nan=False)

    def build_body(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        *,
        session_id: str,
        input_tokens: int | None = None,
        max_output_tokens: int | None = None,
        thinking: bool | None = None,
    ) -> bytes:
        """The exact JSON bytes sent; raises ContextOverflowError when the answer would not fit."""
        s = self.settings
        body: dict[str, Any] = {
            "model": s.wire_model,
            "stream": True,
            "stream_options": {"include_usage": True},
            "prompt_cache_key": session_id,
        }
        if s.provider_info.kimi_thinking_field:
            on = s.thinking_enabled if thinking is None else thinking
            body["thinking"] = {"type": "enabled" if on else "disabled"}
        if tools:
            body["tools"] = tools
            body["tool_choice"] = "auto"
        head = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        text = f'{head[:-1]},"messages":{self._messages_json(messages)}}}'
        data = text.encode("utf-8")
        info = s.model_info
        used = input_tokens if input_tokens is not None else estimate_tokens(text, len(data))
        room = info.context_window - used - SAFETY_MARGIN_TOKENS
        if room < MIN_OUTPUT_TOKENS:
            raise ContextOverflowError(
                f"context full: ~{used} input tokens leave no room for {MIN_OUTPUT_TOKENS} output tokens "
                f"in the {info.context_window}-token window of {s.model}",
                input_tokens=used, context_window=info.context_window,
            )
        wanted = max_output_tokens or s.max_output_tokens
        out = max(1, min(wanted, info.max_output_tokens, room))
        # Spliced in front rather than serializing the whole body a second time.
        return b'{"max_completion_tokens":%d,' % out + data[1:]

    def complete(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        *,
        session_id: str,
        input_tokens: int | None = None,
        max_output_tokens: int | None = None,
        on_delta: Callable[[str, str], None] | None = None,
        thinking: bool | None = None,
    ) -> AssistantTurn:
        """One streamed answer, retried on transient failures for ``settings.retry_window`` seconds.

        ``on_delta(kind, text)`` gets reasoning and content pieces as they arrive ("reasoning" /
        "content"); after a RetryNotice with ``discarded_output`` the pieces start over.
        """
        data = self.build_body(messages, tools, session_id=session_id, input_tokens=input_tokens,
                               max_output_tokens=max_output_tokens, thinking=thinking)
        return self._retrying(lambda: self._attempt(data, on_delta))

    def _retrying(self, attempt_once: Callable[[], _T]) -> _T:
        """``attempt_once()`` until it succeeds, retrying transient failures (``_Retry``) with
        backoff for ``settings.retry_window`` seconds; anything else is raised at once."""
        window = self.settings.retry_window
        start = self._clock()
        attempt = 0
        while True:
            attempt += 1
            if self.shared is not None:
                self.shared.wait()
            try:
                result = attempt_once()
                self._reached = True
                return result
            except _Retry as failure:
                if failure.unresolvable and not self._reached:
                    # A host name that never resolved is a typo, not an outage: say so now.
                    raise ModelAPIError(f"{failure.reason}: check --base-url / --provider") from None
                elapsed = self._clock() - start
                wait = failure.retry_after
                if wait is None or wait <= 0:  # "retry after 0" must not become a busy loop
                    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1))
                    wait = ceiling / 2 + random.uniform(0, ceiling / 2)
                if elapsed + wait > window:
                    log.error("model API gave up after %d attempts (%.0f s): %s (request id %s)",
                              attempt, elapsed, failure.reason, failure.request_id)
                    raise ModelAPIError(
                        f"model API still failing after {attempt} attempt{'s' if attempt > 1 else ''} "
                        f"over {elapsed:.0f} s (retry window {window:.0f} s); last error: {failure.reason}",
                        status=failure.status, error_type=failure.error_type,
                        request_id=failure.request_id, retryable=True,
                    ) from None
                log.info("model API attempt %d failed: %s (request id %s); retrying in %.1f s",
                            attempt, failure.reason, failure.request_id, wait)
                if self.on_retry is not None:
                    self.on_retry(RetryNotice(attempt, wait, failure.reason, failure.status,
                                              failure.request_id, failure.discarded_output))
                if self.shared is not None and failure.status in (429, 529, 503):
                    self.shared.back_off(wait)  # the whole tree waits (then this attempt, too)
                    continue
                self._sleep(wait)

    def _attempt(self, data: bytes, on_delta: Callable[[str, str], None] | None) -> AssistantTurn:
        asm = _Assembler(on_delta)
        request_id: str | None = None
        try:
            stream = self._sdk.post("/chat/completions", cast_to=object, content=data,
                                    stream=True, stream_cls=_stream_class())
            with stream:
                request_id = _request_id(stream.response.headers)
                chunks = iter(stream)
                while True:
                    try:
                        chunk = next(chunks)
                    except StopIteration:
                        break
                    except ValueError as exc:  # undecodable SSE data
                        raise _Retry(f"stream from {self.host} sent invalid data: {exc}",
                                     request_id=request_id) from None
                    asm.feed(chunk)
        except openai.APIError as exc:
            problem = self._classify(exc, request_id)
            if isinstance(problem, _Retry):
                problem.discarded_output = asm.emitted
                raise problem from None
            raise problem from None
        except _Retry as problem:
            problem.discarded_output = asm.emitted
            raise
        if asm.finish_reason is None:
            failure = _Retry(f"stream from {self.host} ended without finish_reason", request_id=request_id)
            failure.discarded_output = asm.emitted
            raise failure
        usage = _usage(asm.usage)
        calls = asm.tool_calls()
        reasoning = None if asm.reasoning is None else "".join(asm.reasoning)
        if reasoning is None and calls and self.settings.thinking_enabled:
            reasoning = ""  # thinking mode requires the field on every tool-call message
        return AssistantTurn(
            content="".join(asm.content),
            reasoning_content=reasoning,
            tool_calls=calls,
            finish_reason=asm.finish_reason,
            usage=usage,
            cost=self.settings.model_info.cost(usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens),
            request_id=request_id,
            model=asm.model or self.settings.wire_model,
        )

    # -- errors ------------------------------------------------------------------------------
    def _classify(self, exc: openai.APIError, request_id: str | None = None) -> _Retry | ModelAPIError:
        """A transient failure to retry, or the final error with its one-line message."""
        host, model = self.host, self.settings.wire_model
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            headers = exc.response.headers
            rid = _request_id(headers) or request_id
            etype, message = _error_fields(exc.body, exc.message)
            if status == 429 and etype not in _QUOTA_TYPES or status in _RETRY_STATUSES or status >= 500:
                if status == 429 and etype not in _QUOTA_TYPES:
                    what = "overloaded" if etype == "engine_overloaded_error" else "rate limited"
                    reason = f"{host} {what} (429 {etype or 'too many requests'}): {message}"
                else:
                    reason = f"HTTP {status} from {host} ({etype or 'error'}): {message}"
                return _Retry(reason, status=status, request_id=rid, error_type=etype,
                              retry_after=_retry_after(headers, message))
            if status == 401:
                envs = " or ".join(self.settings.provider_info.key_envs[:2])
                text = f"API key rejected by {host} ({etype or '401'}): set {envs}"
            elif status == 403:
                text = f"permission denied by {host} ({etype or '403'}): {message}"
            elif status == 404:
                text = f"model {model} not found or not available to this key at {host}: {message}"
            elif status == 429:
                text = f"account balance exhausted at {host} ({etype}): top up the account or use another key"
            elif status == 400 and _CONTEXT_400.search(message):
                log.error("context overflow reported by %s: %s (request id %s)", host, message, rid)
                return ContextOverflowError(f"context too long for {model} at {host}: {message}",
                                            context_window=self.settings.model_info.context_window,
                                            status=status, request_id=rid)
            elif status == 400:
                text = f"request rejected by {host} (400 {etype or 'bad request'}): {message}"
            else:
                text = f"{host} answered HTTP {status} ({etype or 'error'}): {message}"
            log.error("model API error: %s (request id %s)", text, rid)
            return ModelAPIError(text, status=status, error_type=etype, request_id=rid)
        if isinstance(exc, openai.APITimeoutError):
            return _Retry(f"no answer from {host} within {self.settings.request_timeout:g} s",
                          request_id=request_id)
        if isinstance(exc, openai.APIConnectionError):
            unusable = _unusable_url_cause(exc)
            if unusable is not None:
                # No retry can help a URL the HTTP client refuses to send to (ftp://, no scheme).
                text = (f"cannot send to {self.settings.effective_base_url!r}: {unusable}: "
                        "check --base-url / --provider")
                log.error("model API error: %s", text)
                return ModelAPIError(text, error_type="invalid_url")
            cause = exc.__cause__ or exc.__context__
            detail = f"{type(cause).__name__}: {cause}" if cause else exc.message
            verb = "lost the connection to" if request_id else "cannot connect to"
            retry = _Retry(f"{verb} {host} ({detail})", request_id=request_id)
            retry.unresolvable = bool(_UNRESOLVABLE.search(detail))
            return retry
        # An error event inside a 200 stream.
        etype, message = _error_fields(exc.body, exc.message)
        if etype in _QUOTA_TYPES or etype in ("invalid_request_error", "invalid_authentication_error",
                                              "permission_denied_error", "content_filter"):
            text = f"{host} ended the stream with {etype}: {message}"
            log.error("model API error: %s (request id %s)", text, request_id)
            return ModelAPIError(text, error_type=etype, request_id=request_id)
        return _Retry(f"stream from {host} failed ({etype or 'error'}): {message}",
                      request_id=request_id, error_type=etype)

    # -- files (Kimi's files API, for large media) ---------------------------------------------
    def _files_call(self, call: Callable[[], _T], what: str) -> _T:
        """One files-API call through the same SDK client (base URL, key, timeouts), retried like a
        model request; errors become ModelAPIError with one line saying ``what`` failed."""
        def once() -> _T:
            try:
                return call()
            except openai.APIError as exc:
                problem = self._classify(exc)
                if isinstance(problem, _Retry):
                    raise problem from None
                raise ModelAPIError(f"{what}: {problem}", status=problem.status, error_type=problem.error_type,
                                    request_id=problem.request_id) from None

        return self._retrying(once)

    def upload_file(self, path: Path, *, purpose: str, filename: str, mime: str) -> str:
        """Upload one file (``POST /files``, multipart, ``purpose`` "image" or "video"); its id."""
        def call() -> str:
            with open(path, "rb") as fh:
                created = self._sdk.files.create(file=(filename, fh, mime), purpose=purpose)  # type: ignore[arg-type]
            file_id = getattr(created, "id", None)
            if not isinstance(file_id, str) or not file_id:
                raise ModelAPIError(f"uploading {filename} to {self.host}: the answer carried no file id")
            return file_id

        return self._files_call(call, f"uploading {filename} to {self.host}")

    def file_exists(self, file_id: str) -> bool:
        """Whether an uploaded file is still there (``GET /files/{id}``; 404: gone)."""
        def call() -> bool:
            try:
                self._sdk.files.retrieve(file_id)
                return True
            except openai.NotFoundError:
                return False

        return self._files_call(call, f"looking up file {file_id} at {self.host}")

    def delete_file(self, file_id: str) -> bool:
        """Delete an uploaded file (``DELETE /files/{id}``); False when it was already gone. No retries."""
        try:
            self._sdk.files.delete(file_id)
            return True
        except openai.NotFoundError:
            return False
        except openai.APIError as exc:
            problem = self._classify(exc)
            text = problem.reason if isinstance(problem, _Retry) else str(problem)
            raise ModelAPIError(f"deleting file {file_id} at {self.host}: {text}") from None

    # -- doctor ------------------------------------------------------------------------------
    def ping(self) -> str:
        """A cheap check (GET {base}/models): key, endpoint and model. No retries."""
        try:
            page = self._sdk.models.list(timeout=min(30.0, self.settings.request_timeout))
        except openai.APIError as exc:
            problem = self._classify(exc)
            if isinstance(problem, _Retry):
                raise ModelAPIError(problem.reason, status=problem.status, request_id=problem.request_id,
                                    retryable=True) from None
            raise problem from None
        ids = [m.id for m in page.data]
        model = self.settings.wire_model
        if ids and model not in ids:
            shown = ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
            raise ModelAPIError(f"model {model} not found or not available to this key at {self.host} "
                                f"(it lists: {shown})", status=404, error_type="resource_not_found_error")
        if not ids:
            return f"{self.host}: key accepted (the endpoint lists no models; {model} not checked)"
        return f"{self.host}: key accepted, {len(ids)} model{'s' if len(ids) != 1 else ''} listed, {model} available"
