"""A strict stand-in for Kimi's chat-completions API: a real HTTP server with real SSE streaming.

It exists so that the client, the agent loop, crash tests, benchmarks and demos can be driven by
the real ``openai`` SDK over a real socket, and so that every request is checked against the rules
the live API enforces (../shared/KIMI_API.md): a history the real server would reject with 400 is
rejected here too, with Kimi's status, error type and message. Answers come from a *script*: a
list of :class:`Turn` (an answer) and :class:`Fault` (an HTTP or stream failure) consumed one per
accepted request, or a *responder* callable that gets each accepted request body.

Example::

    from kimi_code.agent.fake_kimi import FakeKimi, Fault, ToolCallSpec, Turn

    script = [
        Fault.rate_limited(retry_after=1),
        Turn(reasoning="I should look", tool_calls=[ToolCallSpec("read_file", {"path": "a.py"})]),
        Turn(content="Done."),
    ]
    with FakeKimi(script) as fake:           # listens on 127.0.0.1, random port
        client = openai.OpenAI(base_url=fake.base_url, api_key=fake.api_key)
        ...
        fake.requests     # every request body (parsed), in order, rejected ones included
        fake.responses    # the HTTP status each got (200 also for a cut stream)
        fake.errors       # the error message each got, None when answered

Token counting: without a ``count_tokens`` callable, prompt tokens are estimated as
``(sum of len(JSON of each message) + len(JSON of tools)) // 4``; ``cached_tokens`` is the same
estimate for the longest message prefix (same model and tools) shared with an earlier answered
request, which is how Kimi's automatic prefix cache behaves; completion tokens are the characters
of reasoning, content and tool calls divided by 4. Usage is sent in the last choice chunk and, when
``stream_options.include_usage`` is set, again in a final ``choices: []`` chunk, as the live API does.

Images and video: user content parts ``image_url`` / ``video_url`` must carry a base64 data URL of
a format Kimi takes or ``ms://<id>`` of a file uploaded with the matching purpose; anything else (a
web URL, an unknown part type, an unknown or deleted id) is a 400. The files API is served too:
``POST /files`` (multipart ``file`` + ``purpose``, at most ``max_file_bytes``), ``GET`` and
``DELETE /files/{id}``; ``fake.files``, ``fake.uploads`` and ``fake.deleted`` record it, and
``forget_file(id)`` makes a file expire. A chat request body over ``max_body_bytes`` (100 MB, as
Kimi) is a 400. In the token estimate an image counts 1,000 tokens and a video 4,000, however sent.

Standalone (demos): ``python -m kimi_code.agent.fake_kimi --script FILE.json [--port N]`` prints the
base URL and serves until interrupted. The file holds a JSON list; each item is a Turn
(``{"content": ..., "reasoning": ..., "tool_calls": [{"name": ..., "arguments": {...}}]}``) or a
Fault (``{"fault": "rate_limited", "retry_after": 2}``, ``{"fault": "cut_stream", "after_chunks": 3}``,
or ``{"status": 500, "error_type": "server_error", "message": "..."}``).
"""

from __future__ import annotations

import argparse
import base64
import email.parser
import email.policy
import json
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from kimi_code.tools.media import IMAGE_MIMES, VIDEO_MIMES, sniff

from .config import MODELS, model_info

__all__ = ["FakeKimi", "Fault", "ToolCallSpec", "Turn", "default_count_tokens", "load_script"]

# Values the K2.x server accepts for its fixed sampling parameters ([PARAMS]).
_FIXED_SAMPLING: dict[str, float] = {"top_p": 0.95, "n": 1, "presence_penalty": 0, "frequency_penalty": 0}
_TOOL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9\-_]{2,63}$")
_MAX_TOOLS = 128
# Output budget assumed for the window check when a request sets neither max_completion_tokens
# nor max_tokens.
DEFAULT_MAX_TOKENS = 1024
# Kimi's limits: a request body under 100 MB; an uploaded file up to 100 MB.
MAX_BODY_BYTES = 100_000_000
MAX_FILE_BYTES = 100_000_000
FILE_PURPOSES = ("file-extract", "image", "video", "batch")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


# What one image or video costs in the estimate below, in tokens, however it is sent (a data URL's
# length says nothing about its tokens: Kimi counts media by resolution and key frames).
MEDIA_TOKENS = {"image_url": 1_000, "video_url": 4_000}
_MEDIA_URL = re.compile(r'"(image_url|video_url)":\{"url":"([^"]*)"')


def _chars(text: str) -> int:
    """The length of a message's JSON for the estimate, each media URL counted as its flat cost."""
    if '_url":{"url":"' not in text:
        return len(text)
    n = len(text)
    for m in _MEDIA_URL.finditer(text):
        n += 4 * MEDIA_TOKENS[m.group(1)] - len(m.group(2))
    return n


def default_count_tokens(body: dict[str, Any]) -> int:
    """The documented estimate: (JSON length of each message + JSON length of tools) // 4, an image
    or video counting as MEDIA_TOKENS."""
    chars = sum(_chars(_dumps(m)) for m in body.get("messages") or ())
    if body.get("tools"):
        chars += len(_dumps(body["tools"]))
    return chars // 4


# -- the script ------------------------------------------------------------------------------
@dataclass
class ToolCallSpec:
    """One tool call the fake model makes; ``id`` defaults to K2.6's ``functions.NAME:I``."""

    name: str
    arguments: str | dict[str, Any]
    id: str | None = None

    def arguments_text(self) -> str:
        return self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments)


@dataclass
class Turn:
    """One answer. ``finish_reason`` defaults to ``tool_calls`` or ``stop``; ``usage`` (a dict) is
    sent verbatim instead of the estimate; ``delay`` is slept before the response starts.

    ``reasoning_key="reasoning"`` streams reasoning the way newer vLLM does; ``omit_index`` sends
    tool-call deltas without ``index`` (some servers do); ``usage_in`` says where a stream carries
    usage: ``"both"`` (the finish chunk and, when asked, a ``choices: []`` chunk), ``"choice"`` or
    ``"final"`` (only the one).
    """

    content: str = ""
    reasoning: str = ""
    tool_calls: Sequence[ToolCallSpec] = ()
    usage: dict[str, Any] | None = None
    finish_reason: str | None = None
    delay: float = 0.0
    reasoning_key: str = "reasoning_content"
    omit_index: bool = False
    usage_in: str = "both"

    def call_ids(self) -> list[str]:
        return [tc.id or f"functions.{tc.name}:{i}" for i, tc in enumerate(self.tool_calls)]


_CUT_TURN = Turn(reasoning="Let me think about this for a while.", content="This answer is cut short.")


@dataclass
class Fault:
    """A failure. ``status`` >= 400: an error response ``{"error": {"type", "message"}}`` with
    ``headers``. ``status`` 200 with ``cut_after_chunks``: stream ``turn`` for that many chunks,
    then end the body without ``finish_reason`` (``clean``; after an error event when ``error_type``
    is set) or drop the connection. ``drop_after_done``: stream ``turn`` whole, ``[DONE]`` included,
    then drop the connection before the body's last chunk (a proxy that resets early). ``delay`` is
    slept first (a slow server: pair it with a short client timeout).
    """

    status: int
    error_type: str = ""
    message: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    cut_after_chunks: int | None = None
    delay: float = 0.0
    clean: bool = False
    turn: Turn | None = None
    drop_after_done: bool = False

    @classmethod
    def rate_limited(cls, retry_after: float | None = None, *, in_message: float | None = None) -> Fault:
        """429 rate_limit_reached_error; the wait in a Retry-After header and/or the message text."""
        headers = {"Retry-After": _num(retry_after)} if retry_after is not None else {}
        msg = "Your account request reached organization max RPM: 3"
        if in_message is not None:
            msg += f", please try again after {_num(in_message)} seconds"
        return cls(429, "rate_limit_reached_error", msg, headers)

    @classmethod
    def overloaded(cls) -> Fault:
        return cls(429, "engine_overloaded_error",
                   "The engine is currently overloaded, please try again later")

    @classmethod
    def quota_exceeded(cls) -> Fault:
        return cls(429, "exceeded_current_quota_error",
                   "Your account is suspended due to insufficient balance, please recharge your account")

    @classmethod
    def server_error(cls, message: str = "Internal server error") -> Fault:
        return cls(500, "server_error", message)

    @classmethod
    def permission_denied(cls) -> Fault:
        return cls(403, "permission_denied_error", "The API key has no permission for this resource")

    @classmethod
    def cut_stream(cls, after_chunks: int = 3, *, clean: bool = False, turn: Turn | None = None) -> Fault:
        return cls(200, cut_after_chunks=after_chunks, clean=clean, turn=turn)

    @classmethod
    def stream_error(cls, error_type: str = "server_error", message: str = "stream interrupted", *,
                     after_chunks: int = 2) -> Fault:
        """A 200 stream that sends ``data: {"error": {...}}`` after some chunks, then ends."""
        return cls(200, error_type, message, cut_after_chunks=after_chunks, clean=True)

    @classmethod
    def slow(cls, seconds: float, turn: Turn | None = None) -> Fault:
        """Wait ``seconds``, then answer ``turn`` (a client with a shorter timeout has given up)."""
        return cls(200, delay=seconds, turn=turn or Turn(content="(late answer)"))


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _item_from_dict(d: dict[str, Any]) -> Turn | Fault:
    d = dict(d)
    if "fault" in d:
        name = d.pop("fault")
        ctor = getattr(Fault, name, None)
        if name.startswith("_") or not callable(ctor):
            raise ValueError(f"unknown fault {name!r}")
        if "turn" in d:
            d["turn"] = _item_from_dict(d["turn"])
        return ctor(**d)
    if "status" in d:
        if "turn" in d:
            d["turn"] = _item_from_dict(d["turn"])
        return Fault(**d)
    calls = [ToolCallSpec(**c) for c in d.pop("tool_calls", ())]
    return Turn(tool_calls=calls, **d)


def load_script(path: str) -> list[Turn | Fault]:
    """Read a script file (see the module docstring for its format)."""
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, list):
        raise ValueError(f"{path}: a script is a JSON list of turns and faults")
    return [_item_from_dict(item) for item in data]


# -- Kimi's request rules --------------------------------------------------------------------
class _Reject(Exception):
    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error_type, self.message = status, error_type, message


def _invalid(message: str) -> _Reject:
    return _Reject(400, "invalid_request_error", message)


def _is_thinking(body: dict[str, Any]) -> bool:
    thinking = body.get("thinking")
    if thinking is None:
        return model_info(str(body.get("model"))).thinks  # K2.x think by default
    if not isinstance(thinking, dict) or thinking.get("type") not in ("enabled", "disabled"):
        raise _invalid("Invalid request: thinking.type must be 'enabled' or 'disabled'")
    return thinking["type"] == "enabled"


def _check_sampling(body: dict[str, Any], thinking: bool) -> None:
    fixed = {"temperature": 1.0 if thinking else 0.6, **_FIXED_SAMPLING}
    for name, allowed in fixed.items():
        if name in body and body[name] is not None and body[name] != allowed:
            raise _invalid(f"invalid {name}: only {_num(allowed)} is allowed for this model")
    if thinking and body.get("reasoning_effort") is not None:
        raise _invalid("Invalid request: reasoning_effort cannot be used together with thinking")
    choice = body.get("tool_choice")
    if thinking and choice is not None and choice not in ("auto", "none"):
        shown = choice if isinstance(choice, str) else (choice.get("type") if isinstance(choice, dict) else choice)
        raise _invalid(f"tool_choice '{shown}' is incompatible with thinking enabled")


def _check_tools(tools: Any) -> None:
    if tools is None:
        return
    if not isinstance(tools, list) or len(tools) > _MAX_TOOLS:
        raise _invalid(f"Invalid request: tools must be a list of at most {_MAX_TOOLS} functions")
    for tool in tools:
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or tool.get("type") != "function":
            raise _invalid("Invalid request: every tool must be {'type': 'function', 'function': {...}}")
        if not _TOOL_NAME.match(str(fn.get("name", ""))):
            raise _invalid(f"Invalid request: function name {fn.get('name')!r} is invalid")


def _empty_text(content: Any) -> bool:
    if isinstance(content, str):
        return content == ""
    if isinstance(content, list):
        return any(isinstance(p, dict) and p.get("type") == "text" and not p.get("text") for p in content)
    return False


def _check_parts(messages: list[Any], files: dict[str, dict[str, Any]]) -> None:
    """Content parts: text, image_url and video_url (a base64 data URL of a format Kimi takes, or
    ms://<id> of an uploaded file of the matching purpose); anything else is a 400."""
    for i, msg in enumerate(messages):
        content = msg.get("content") if isinstance(msg, dict) else None
        if not isinstance(content, list):
            continue
        for j, part in enumerate(content):
            where = f"messages[{i}].content[{j}]"
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                if not isinstance(part.get("text"), str):
                    raise _invalid(f"Invalid request: {where}.text must be a string")
                continue
            if kind not in ("image_url", "video_url"):
                raise _invalid(f"Invalid request: unknown content part type {kind!r} at {where}")
            if msg.get("role") != "user":
                raise _invalid(f"Invalid request: {kind} content is only allowed in user messages ({where})")
            url = (part.get(kind) or {}).get("url") if isinstance(part.get(kind), dict) else None
            if not isinstance(url, str):
                raise _invalid(f"Invalid request: {where}.{kind}.url must be a string")
            media = "image" if kind == "image_url" else "video"
            if url.startswith("ms://"):
                file = files.get(url[len("ms://"):])
                if file is None:
                    raise _invalid(f"Invalid request: file {url} not found")
                if file["purpose"] != media:
                    raise _invalid(f"Invalid request: file {url} was uploaded with purpose "
                                   f"{file['purpose']!r}, not {media!r}")
                continue
            match = re.match(r"data:([\w.+-]+/[\w.+-]+);base64,", url)
            allowed = IMAGE_MIMES if media == "image" else VIDEO_MIMES
            if match is None:
                raise _invalid(f"Invalid request: {where}.{kind}.url must be a base64 data URL or ms://<file id> "
                               "(web URLs are not supported)")
            if match.group(1) not in allowed:
                raise _invalid(f"Invalid request: unsupported {media} type {match.group(1)} at {where}")
            try:
                base64.b64decode(url[match.end():], validate=True)
            except ValueError:
                raise _invalid(f"Invalid request: {where}.{kind}.url is not valid base64") from None


def _check_history(messages: Any, thinking: bool) -> None:
    if not isinstance(messages, list) or not messages:
        raise _invalid("Invalid request: messages must be a non-empty list")
    seen_ids: set[str] = set()
    pending: list[str] = []  # tool calls of the last assistant message still without a result

    def unanswered() -> _Reject:
        return _invalid(
            "Invalid request: an assistant message with 'tool_calls' must be followed by tool messages "
            "responding to each 'tool_call_id'. The following tool_call_ids did not have response "
            f"messages: {', '.join(pending)}"
        )

    for i, msg in enumerate(messages):
        role = msg.get("role") if isinstance(msg, dict) else None
        if role == "tool":
            call_id = msg.get("tool_call_id")
            if call_id not in pending:
                raise _invalid(
                    f"Invalid request: tool message at index {i} has tool_call_id {call_id!r} "
                    "that answers no tool call of the preceding assistant message"
                )
            pending.remove(call_id)
            continue
        if pending:
            raise unanswered()
        if role not in ("system", "user", "assistant"):
            raise _invalid(f"Invalid request: unknown role {role!r} at index {i}")
        if role != "assistant" or not msg.get("tool_calls"):
            continue
        if thinking and msg.get("reasoning_content") is None:
            raise _invalid(
                "thinking is enabled but reasoning_content is missing in assistant tool call message "
                f"at index {i}"
            )
        if "content" in msg and _empty_text(msg["content"]):
            raise _invalid(f"Invalid request: text content is empty in assistant message at index {i}")
        for call in msg["tool_calls"]:
            call_id = call.get("id") if isinstance(call, dict) else None
            if not isinstance(call_id, str) or not call_id:
                raise _invalid(f"Invalid request: tool call without id in message at index {i}")
            if call_id in seen_ids:
                raise _invalid(f"Invalid request: tool call id {call_id} is duplicated")
            seen_ids.add(call_id)
            pending.append(call_id)
    if pending:
        raise unanswered()


# -- prefix cache simulation -----------------------------------------------------------------
@dataclass
class _Measure:
    prompt_tokens: int
    cached_tokens: int
    hashes: list[int]


class _PrefixCache:
    """Longest message prefix shared with any earlier answered request, in linear memory.

    Each prefix is a chain hash over (model, tools, message JSON...). Prefixes of answered
    requests are remembered in a set. The common prefix with the previous request is found by
    plain equality, so only new messages are serialized: cheap for a 5,000-step benchmark.
    """

    def __init__(self) -> None:
        self._seen: set[int] = set()
        self._prev_messages: list[Any] = []
        self._prev_hashes: list[int] = []
        self._prev_chars: list[int] = []

    def measure(self, body: dict[str, Any], count: Callable[[dict[str, Any]], int] | None) -> _Measure:
        messages: list[Any] = body["messages"]
        tools_json = _dumps(body["tools"]) if body.get("tools") else ""
        seed = hash((str(body.get("model")), tools_json))
        prev = self._prev_messages
        same = 0
        if self._prev_hashes and self._prev_hashes[0] == seed:
            limit = min(len(prev), len(messages))
            while same < limit and prev[same] == messages[same]:
                same += 1
        hashes = self._prev_hashes[: same + 1] if same else [seed]
        chars = self._prev_chars[: same + 1] if same else [0]
        for msg in messages[same:]:
            text = _dumps(msg)
            hashes.append(hash((hashes[-1], text)))
            chars.append(chars[-1] + _chars(text))
        k = 0
        while k + 1 < len(hashes) and hashes[k + 1] in self._seen:
            k += 1
        self._pending = (messages, hashes, chars)
        if count is None:
            prompt = (chars[-1] + len(tools_json)) // 4
            cached = (chars[k] + len(tools_json)) // 4 if k else 0
        else:
            prompt = count(body)
            cached = count({**body, "messages": messages[:k]}) if k else 0
        return _Measure(max(prompt, 1), min(cached, prompt), hashes)

    def remember(self, measure: _Measure) -> None:
        messages, hashes, chars = self._pending
        self._seen.update(hashes)
        self._prev_messages, self._prev_hashes, self._prev_chars = messages, hashes, chars


# -- the server ------------------------------------------------------------------------------
Responder = Callable[[dict[str, Any]], "Turn | Fault"]


class FakeKimi:
    """The fake server. Thread-safe; requests are handled one at a time under a lock.

    ``context_window``: an int (for each model of the built-in table) or a ``{model: window}``
    dict, which is then also the list of known models (others get 404). ``strict=False`` skips the
    request rules (auth, model and JSON are still checked). Streamed text is split every
    ``chunk_chars`` characters; ``chunk_delay`` paces the chunks (demos). ``max_recorded`` bounds ``requests``,
    ``responses`` and ``errors`` to the most recent N (long benchmarks); ``request_count`` counts all.
    """

    def __init__(
        self,
        script: Iterable[Turn | Fault] | Responder = (),
        *,
        api_key: str = "sk-fake",
        context_window: dict[str, int] | int = 262_144,
        strict: bool = True,
        count_tokens: Callable[[dict[str, Any]], int] | None = None,
        port: int = 0,
        chunk_chars: int = 24,
        chunk_delay: float = 0.0,
        max_recorded: int | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
        max_file_bytes: int = MAX_FILE_BYTES,
    ) -> None:
        if callable(script):
            self._responder: Responder | None = script
            self._script: list[Turn | Fault] = []
        else:
            self._responder = None
            self._script = list(script)
        self.api_key = api_key
        self.windows = (
            dict(context_window) if isinstance(context_window, dict)
            else {name: int(context_window) for name in MODELS}
        )
        self.strict = strict
        self.count_tokens = count_tokens
        self.chunk_chars = max(1, chunk_chars)
        self.chunk_delay = chunk_delay
        self.max_recorded = max_recorded
        self.requests: list[dict[str, Any]] = []
        self.responses: list[int] = []
        self.errors: list[str | None] = []
        self.request_count = 0
        self.connections = 0  # TCP connections accepted: a client that reuses its connection makes one
        # The files API: uploaded files by id (each {"id", "bytes", "filename", "purpose", "data",
        # "created_at"}), every upload accepted (without "data"), the ids deleted, and the limits.
        self.files: dict[str, dict[str, Any]] = {}
        self.uploads: list[dict[str, Any]] = []
        self.deleted: list[str] = []
        self.max_body_bytes = max_body_bytes
        self.max_file_bytes = max_file_bytes
        self._port = port
        self._lock = threading.Lock()
        self._cache = _PrefixCache()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle
    def start(self) -> FakeKimi:
        if self._server is not None:
            return self
        server = _Server(("127.0.0.1", self._port), _Handler)
        server.daemon_threads = True
        server.block_on_close = False
        server.fake = self  # type: ignore[attr-defined]
        self._server = server
        self._port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="fake-kimi", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeKimi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}/v1"

    def add(self, *items: Turn | Fault) -> None:
        """Extend the script."""
        with self._lock:
            self._script.extend(items)

    @property
    def remaining(self) -> int:
        """Script items not yet consumed."""
        return len(self._script)

    # -- request handling (called by the handler thread)
    def _record(self, body: dict[str, Any], status: int, error: str | None) -> str:
        self.request_count += 1
        self.requests.append(body)
        self.responses.append(status)
        self.errors.append(error)
        if self.max_recorded is not None and len(self.requests) > self.max_recorded:
            drop = len(self.requests) - self.max_recorded
            del self.requests[:drop], self.responses[:drop], self.errors[:drop]
        return f"fake-req-{self.request_count:06d}"

    def _authorized(self, header: str | None) -> bool:
        return header == f"Bearer {self.api_key}"

    # -- the files API
    def forget_file(self, file_id: str) -> None:
        """Drop an uploaded file as if it had expired on the server (later references are a 400)."""
        with self._lock:
            self.files.pop(file_id, None)

    @staticmethod
    def _file_object(f: dict[str, Any]) -> dict[str, Any]:
        return {"id": f["id"], "object": "file", "bytes": f["bytes"], "created_at": f["created_at"],
                "filename": f["filename"], "purpose": f["purpose"], "status": "ok", "status_details": ""}

    def _upload(self, content_type: str, raw: bytes) -> dict[str, Any]:
        """POST /files: multipart form with ``file`` and ``purpose``; the file object, or _Reject."""
        if not content_type.startswith("multipart/form-data"):
            raise _invalid("Invalid request: the upload must be multipart/form-data")
        form = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + raw)
        fields: dict[str, tuple[str | None, bytes]] = {}
        for part in form.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if name:
                fields[str(name)] = (part.get_filename(), part.get_payload(decode=True) or b"")
        if "file" not in fields:
            raise _invalid("Invalid request: the upload has no 'file' field")
        purpose = fields.get("purpose", (None, b""))[1].decode("utf-8", "replace")
        if purpose not in FILE_PURPOSES:
            raise _invalid(f"Invalid request: purpose must be one of {', '.join(FILE_PURPOSES)}, not {purpose!r}")
        filename, data = fields["file"]
        if len(data) > self.max_file_bytes:
            raise _invalid(f"Invalid request: file size {len(data)} exceeds the limit of "
                           f"{self.max_file_bytes} bytes")
        if not data:
            raise _invalid("Invalid request: the file is empty")
        if purpose in ("image", "video"):
            fmt = sniff(data[:64])
            if fmt is None or fmt.kind != purpose:
                raise _invalid(f"Invalid request: the file is not a supported {purpose} format")
        with self._lock:
            file_id = f"fake-file-{len(self.uploads) + 1:04d}"
            f = {"id": file_id, "bytes": len(data), "filename": filename or "upload", "purpose": purpose,
                 "data": data, "created_at": int(time.time())}
            self.files[file_id] = f
            self.uploads.append({k: v for k, v in f.items() if k != "data"})
        return self._file_object(f)

    def _decide(self, auth: str | None, raw: bytes) -> tuple[str, Any, str]:
        """Validate a chat request and pick the answer: (kind, payload, request id)."""
        with self._lock:
            try:
                body = json.loads(raw)
                if not isinstance(body, dict):
                    raise ValueError("body is not an object")
            except ValueError as exc:
                body = {"_unparsable": raw[:200].decode("utf-8", "replace")}
                rid = self._record(body, 400, str(exc))
                return "error", _Reject(400, "invalid_request_error", f"Invalid request: {exc}"), rid
            try:
                measure = self._validate(auth, body)
                item = self._next_item(body)
            except _Reject as rej:
                return "error", rej, self._record(body, rej.status, rej.message)
            if isinstance(item, Fault) and item.status >= 400:
                return "fault", item, self._record(body, item.status, item.message)
            turn = (item.turn or _CUT_TURN) if isinstance(item, Fault) else item
            usage = self._usage(body, turn, measure)
            if not (isinstance(item, Fault) and item.cut_after_chunks is not None):
                self._cache.remember(measure)
            rid = self._record(body, 200, None)
            return "turn", (item, turn, usage, body), rid

    def _validate(self, auth: str | None, body: dict[str, Any]) -> _Measure:
        if not self._authorized(auth):
            raise _Reject(401, "invalid_authentication_error", "Invalid Authentication")
        model = body.get("model")
        if model not in self.windows:
            raise _Reject(404, "resource_not_found_error", f"Not found the model {model} or Permission denied")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _invalid("Invalid request: messages must be a non-empty list")
        if self.strict:
            thinking = _is_thinking(body)
            _check_sampling(body, thinking)
            _check_tools(body.get("tools"))
            _check_history(messages, thinking)
            _check_parts(messages, self.files)
        measure = self._cache.measure(body, self.count_tokens)
        out = body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS
        window = self.windows[model]
        if self.strict and measure.prompt_tokens + int(out) > window:
            raise _invalid(
                f"Invalid request: Your request exceeded model token limit: {window} "
                f"(prompt {measure.prompt_tokens} + max output {out})"
            )
        return measure

    def _next_item(self, body: dict[str, Any]) -> Turn | Fault:
        if self._responder is not None:
            try:
                item = self._responder(body)
            except Exception as exc:  # a bug in the test's responder: fail the run, don't retry
                raise _Reject(400, "fake_responder_error", f"FakeKimi responder raised {exc!r}") from exc
        elif self._script:
            item = self._script.pop(0)
        else:
            raise _Reject(400, "fake_script_exhausted",
                          f"FakeKimi: script exhausted at request {self.request_count + 1}")
        if not isinstance(item, (Turn, Fault)):
            raise _Reject(400, "fake_responder_error", f"FakeKimi: not a Turn or Fault: {item!r}")
        return item

    def _usage(self, body: dict[str, Any], turn: Turn, measure: _Measure) -> dict[str, Any]:
        if turn.usage is not None:
            return dict(turn.usage)
        out_chars = len(turn.reasoning) + len(turn.content) + sum(
            len(tc.name) + len(tc.arguments_text()) for tc in turn.tool_calls)
        completion = max(1, out_chars // 4)
        return {
            "prompt_tokens": measure.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": measure.prompt_tokens + completion,
            "cached_tokens": measure.cached_tokens,
        }

    def _models(self) -> dict[str, Any]:
        return {"object": "list", "data": [
            {"id": name, "object": "model", "created": 1_700_000_000, "owned_by": "moonshot",
             "context_length": window} for name, window in self.windows.items()]}

    # -- answer building
    def _pieces(self, text: str) -> Iterator[str]:
        n = self.chunk_chars
        for start in range(0, len(text), n):
            yield text[start:start + n]

    def stream_chunks(self, turn: Turn, model: str, rid: str, usage: dict[str, Any] | None,
                      include_usage: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(chunks before the finish, the finish chunk plus the usage chunk when asked)."""
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        body = [chunk({"role": "assistant", "content": ""})]
        body += [chunk({turn.reasoning_key: p}) for p in self._pieces(turn.reasoning)]
        if turn.reasoning:
            body.append(chunk({turn.reasoning_key: ""}))
        body += [chunk({"content": p}) for p in self._pieces(turn.content)]
        for i, (call, call_id) in enumerate(zip(turn.tool_calls, turn.call_ids())):
            first: dict[str, Any] = {"id": call_id, "type": "function",
                                     "function": {"name": call.name, "arguments": ""}}
            if not turn.omit_index:
                first = {"index": i, **first}
            body.append(chunk({"tool_calls": [first]}))
            args = call.arguments_text()
            step = max(1, -(-len(args) // 3))  # three pieces (fewer for tiny arguments)
            for start in range(0, len(args), step):
                piece: dict[str, Any] = {"function": {"arguments": args[start:start + step]}}
                if not turn.omit_index:
                    piece = {"index": i, **piece}
                body.append(chunk({"tool_calls": [piece]}))
        finish = chunk({}, turn.finish_reason or ("tool_calls" if turn.tool_calls else "stop"))
        if usage is not None and turn.usage_in in ("both", "choice"):
            finish["choices"][0]["usage"] = usage
        tail = [finish]
        if include_usage and usage is not None and turn.usage_in in ("both", "final"):
            tail.append({"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                         "choices": [], "usage": usage})
        return body, tail

    def completion(self, turn: Turn, model: str, rid: str, usage: dict[str, Any]) -> dict[str, Any]:
        """The non-streaming answer."""
        message: dict[str, Any] = {"role": "assistant", "content": turn.content}
        if turn.reasoning:
            message[turn.reasoning_key] = turn.reasoning
        if turn.tool_calls:
            message["tool_calls"] = [
                {"id": cid, "type": "function", "function": {"name": c.name, "arguments": c.arguments_text()}}
                for c, cid in zip(turn.tool_calls, turn.call_ids())]
        finish = turn.finish_reason or ("tool_calls" if turn.tool_calls else "stop")
        return {"id": rid, "object": "chat.completion", "created": int(time.time()), "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage}


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that drops a kept-alive connection (or is killed) is normal here, not news."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeKimi/1"
    # Headers and body are separate writes: with Nagle's algorithm on a kept-alive connection the
    # body would wait for the client's delayed ACK (40 ms), as no production server lets it.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    @property
    def fake(self) -> FakeKimi:
        return self.server.fake  # type: ignore[attr-defined,no-any-return]

    def setup(self) -> None:
        super().setup()
        with self.fake._lock:
            self.fake.connections += 1

    def _send_json(self, status: int, obj: Any, rid: str, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(obj, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-request-id", rid)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, status: int, error_type: str, message: str, rid: str,
                    headers: dict[str, str] | None = None) -> None:
        self._send_json(status, {"error": {"message": message, "type": error_type}}, rid, headers)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _file_route(self) -> str | None:
        """The file id of a /files/{id} path, or None."""
        m = re.search(r"/files/([^/?]+)/?(?:\?.*)?$", self.path)
        return m.group(1) if m else None

    def do_DELETE(self) -> None:  # noqa: N802
        fake = self.fake
        file_id = self._file_route()
        if file_id is None:
            self._send_error(404, "resource_not_found_error", f"no route {self.path}", "fake-delete")
            return
        if not fake._authorized(self.headers.get("Authorization")):
            self._send_error(401, "invalid_authentication_error", "Invalid Authentication", "fake-delete")
            return
        with fake._lock:
            found = fake.files.pop(file_id, None)
            if found is not None:
                fake.deleted.append(file_id)
        if found is None:
            self._send_error(404, "resource_not_found_error", f"file {file_id} not found", "fake-delete")
            return
        self._send_json(200, {"id": file_id, "object": "file", "deleted": True}, "fake-delete")

    def do_GET(self) -> None:  # noqa: N802
        fake = self.fake
        file_id = self._file_route()
        if file_id is not None:
            if not fake._authorized(self.headers.get("Authorization")):
                self._send_error(401, "invalid_authentication_error", "Invalid Authentication", "fake-get")
                return
            found = fake.files.get(file_id)
            if found is None:
                self._send_error(404, "resource_not_found_error", f"file {file_id} not found", "fake-get")
            else:
                self._send_json(200, fake._file_object(found), "fake-get")
            return
        if not self.path.rstrip("/").endswith("/models"):
            self._send_error(404, "resource_not_found_error", f"no route {self.path}", "fake-get")
            return
        if not fake._authorized(self.headers.get("Authorization")):
            self._send_error(401, "invalid_authentication_error", "Invalid Authentication", "fake-get")
            return
        self._send_json(200, fake._models(), "fake-get")

    def do_POST(self) -> None:  # noqa: N802
        raw = self._read_body()
        path = self.path.split("?", 1)[0].rstrip("/")
        if path.endswith("/files"):
            self._files_post(raw)
        elif path.endswith("/chat/completions") and len(raw) > self.fake.max_body_bytes:
            fake = self.fake
            with fake._lock:
                rid = fake._record({"_too_large": len(raw)}, 400, "request body too large")
            self._send_error(400, "invalid_request_error", f"Invalid request: the request body ({len(raw)} bytes) "
                             f"exceeds the limit of {fake.max_body_bytes} bytes", rid)
        elif path.endswith("/tokenizers/estimate-token-count"):
            self._estimate(raw)
        elif path.endswith("/chat/completions"):
            try:
                self._chat(raw)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client gave up (timeout): nothing to answer
        else:
            self._send_error(404, "resource_not_found_error", f"no route {self.path}", "fake-post")

    def _files_post(self, raw: bytes) -> None:
        fake = self.fake
        if not fake._authorized(self.headers.get("Authorization")):
            self._send_error(401, "invalid_authentication_error", "Invalid Authentication", "fake-files")
            return
        try:
            obj = fake._upload(self.headers.get("Content-Type") or "", raw)
        except _Reject as rej:
            self._send_error(rej.status, rej.error_type, rej.message, "fake-files")
            return
        self._send_json(200, obj, "fake-files")

    def _estimate(self, raw: bytes) -> None:
        fake = self.fake
        if not fake._authorized(self.headers.get("Authorization")):
            self._send_error(401, "invalid_authentication_error", "Invalid Authentication", "fake-est")
            return
        try:
            body = json.loads(raw)
        except ValueError as exc:
            self._send_error(400, "invalid_request_error", f"Invalid request: {exc}", "fake-est")
            return
        count = fake.count_tokens or default_count_tokens
        self._send_json(200, {"data": {"total_tokens": count(body)}}, "fake-est")

    def _chat(self, raw: bytes) -> None:
        fake = self.fake
        kind, payload, rid = fake._decide(self.headers.get("Authorization"), raw)
        if kind == "error":
            self._send_error(payload.status, payload.error_type, payload.message, rid)
            return
        if kind == "fault":
            if payload.delay:
                time.sleep(payload.delay)
            self._send_error(payload.status, payload.error_type, payload.message, rid, payload.headers)
            return
        item, turn, usage, body = payload
        delay = item.delay if isinstance(item, Fault) else 0.0
        if delay or turn.delay:
            time.sleep(delay + turn.delay)
        model = str(body["model"])
        if not body.get("stream"):
            self._send_json(200, fake.completion(turn, model, rid, usage), rid)
            return
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        chunks, tail = fake.stream_chunks(turn, model, rid, usage, include_usage)
        cut = item.cut_after_chunks if isinstance(item, Fault) else None
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("x-request-id", rid)
        self.end_headers()
        events = chunks + tail if cut is None else chunks[:cut]
        if cut is not None and item.error_type:
            events.append({"error": {"message": item.message, "type": item.error_type}})
        frames = [b"data: " + _dumps(event).encode() + b"\n\n" for event in events]
        if cut is None:
            frames.append(b"data: [DONE]\n\n")
        framed = [b"%x\r\n%s\r\n" % (len(f), f) for f in frames]
        if fake.chunk_delay > 0:  # paced, for live displays in demos
            for piece in framed:
                self.wfile.write(piece)
                self.wfile.flush()
                time.sleep(fake.chunk_delay)
        else:
            self.wfile.write(b"".join(framed))
        if (cut is None or item.clean) and not (isinstance(item, Fault) and item.drop_after_done):
            self.wfile.write(b"0\r\n\r\n")  # a well-formed end of the body
            return
        # A broken stream: the chunks so far, then the connection drops before the body ends.
        self.wfile.flush()
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kimi_code.agent.fake_kimi",
                                     description="Serve a scripted, strict fake Kimi API on 127.0.0.1.")
    parser.add_argument("--script", required=True, help="JSON list of turns and faults")
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    parser.add_argument("--api-key", default="sk-fake", help="the key clients must send")
    parser.add_argument("--lenient", action="store_true", help="skip Kimi's request rules")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between stream chunks")
    args = parser.parse_args(argv)
    try:
        script = load_script(args.script)
    except (OSError, ValueError, TypeError) as exc:
        print(f"fake_kimi: cannot load {args.script}: {exc}", file=sys.stderr)
        return 2
    fake = FakeKimi(script, api_key=args.api_key, strict=not args.lenient, port=args.port,
                    chunk_delay=args.chunk_delay).start()
    print(fake.base_url, flush=True)
    print(f"fake_kimi: clients must send the API key {args.api_key} (e.g. MOONSHOT_API_KEY={args.api_key})",
          file=sys.stderr, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
