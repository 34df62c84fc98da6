"""ModelClient against the fake Kimi server: real openai SDK, real sockets, injected sleep/clock."""

from __future__ import annotations

import json
import logging
import socket
from typing import Any

import pytest

from kimi_code.agent.client import (
    MIN_OUTPUT_TOKENS,
    SAFETY_MARGIN_TOKENS,
    AssistantTurn,
    ContextOverflowError,
    ModelClient,
    RetryNotice,
    ToolCall,
    Usage,
    estimate_tokens,
)
from kimi_code.agent.config import MODELS, Settings
from kimi_code.agent.errors import ModelAPIError
from kimi_code.agent.fake_kimi import FakeKimi, Fault, ToolCallSpec, Turn

USER = {"role": "user", "content": "Fix the failing test"}
TOOLS = [{"type": "function", "function": {
    "name": "read_file", "description": "Read a file",
    "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}}]
SAMPLING = ("temperature", "top_p", "n", "presence_penalty", "frequency_penalty")


class Recorder:
    """Injected sleep and clock: waits are recorded and advance a virtual clock, nothing sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []
        self.notices: list[RetryNotice] = []

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


def make_client(fake: FakeKimi, rec: Recorder | None = None, **settings: Any) -> ModelClient:
    rec = rec or Recorder()
    values: dict[str, Any] = {"base_url": fake.base_url, "api_key": fake.api_key, "retry_window": 600.0}
    values.update(settings)
    return ModelClient(Settings(**values), on_retry=rec.notices.append, sleep=rec.sleep, clock=rec.clock)


def answer_calls(turn: AssistantTurn) -> list[dict[str, Any]]:
    return [{"role": "tool", "tool_call_id": c.id, "name": c.name, "content": "ok"} for c in turn.tool_calls]


# -- assembling a stream ---------------------------------------------------------------------
def test_assembles_reasoning_content_and_split_tool_calls():
    args = {"path": "src/deeply/nested/module/file.py", "offset": 120, "limit": 400}
    turn = Turn(reasoning="I need to read the module before editing it.", content="Let me look.",
                tool_calls=[ToolCallSpec("read_file", args), ToolCallSpec("grep", '{"pattern": "def f"}')])
    deltas: list[tuple[str, str]] = []
    with FakeKimi([turn], chunk_chars=7) as fake:
        result = make_client(fake).complete([USER], TOOLS, session_id="s", on_delta=lambda k, t: deltas.append((k, t)))
    assert result.request_id == "fake-req-000001"
    assert result.reasoning_content == turn.reasoning
    assert result.content == "Let me look."
    assert result.tool_calls == [
        ToolCall("functions.read_file:0", "read_file", json.dumps(args)),
        ToolCall("functions.grep:1", "grep", '{"pattern": "def f"}'),
    ]
    assert result.finish_reason == "tool_calls" and result.model == "kimi-k2.6"
    kinds = [k for k, _ in deltas]
    assert kinds == sorted(kinds, key=lambda k: k != "reasoning") and len(deltas) > 4  # reasoning first
    assert "".join(t for k, t in deltas if k == "reasoning") == turn.reasoning
    assert "".join(t for k, t in deltas if k == "content") == turn.content


def test_tool_call_deltas_without_index():
    turn = Turn(reasoning="r", omit_index=True, tool_calls=[
        ToolCallSpec("read_file", {"path": "a.py"}, id="read:0"), ToolCallSpec("read_file", {"path": "b.py"}, id="read:1")])
    with FakeKimi([turn], chunk_chars=3) as fake:
        result = make_client(fake).complete([USER], TOOLS, session_id="s")
    assert [(c.id, json.loads(c.arguments)["path"]) for c in result.tool_calls] == [("read:0", "a.py"), ("read:1", "b.py")]


def test_vllm_reasoning_field_is_accepted_and_sent_back_as_reasoning_content():
    turn = Turn(reasoning="vllm thoughts", reasoning_key="reasoning", tool_calls=[ToolCallSpec("read_file", {})])
    with FakeKimi([turn, Turn(content="done")]) as fake:
        client = make_client(fake)
        first = client.complete([USER], TOOLS, session_id="s")
        assert first.reasoning_content == "vllm thoughts"
        client.complete([USER, first.to_message(), *answer_calls(first)], TOOLS, session_id="s")
        sent = fake.requests[1]["messages"][1]
    assert sent["reasoning_content"] == "vllm thoughts" and "reasoning" not in sent


def test_reasoning_content_round_trips_byte_for_byte():
    reasoning = "  Plan:\n\t1. read — the file «utils.py» 読む\n\n2. edit \\n literal\u2028 "
    calls = [ToolCallSpec("read_file", '{"path":"utils.py"}', id="functions.read_file:0")]
    with FakeKimi([Turn(reasoning=reasoning, tool_calls=calls), Turn(content="fixed")]) as fake:
        client = make_client(fake)
        first = client.complete([USER], TOOLS, session_id="s")
        history = [USER, first.to_message(), *answer_calls(first)]
        second = client.complete(history, TOOLS, session_id="s")
        sent = fake.requests[1]["messages"][1]
    assert fake.responses == [200, 200] and second.content == "fixed"
    assert sent == {"role": "assistant", "reasoning_content": reasoning, "tool_calls": [
        {"id": "functions.read_file:0", "type": "function",
         "function": {"name": "read_file", "arguments": '{"path":"utils.py"}'}}]}


def test_to_message_shapes():
    usage = Usage()
    plain = AssistantTurn("All done.", None, [], "stop", usage, 0.0, None, "kimi-k2.6")
    assert plain.to_message() == {"role": "assistant", "content": "All done."}
    with_text = AssistantTurn("Reading.", "r", [ToolCall("x:0", "read_file", "{}")], "tool_calls", usage, 0.0, None, "m")
    assert with_text.to_message()["content"] == "Reading."
    assert with_text.to_message()["reasoning_content"] == "r"


def test_tool_calls_without_any_reasoning_still_carry_the_field_in_thinking_mode():
    with FakeKimi([Turn(tool_calls=[ToolCallSpec("read_file", {})]), Turn(content="ok")]) as fake:
        client = make_client(fake)
        first = client.complete([USER], TOOLS, session_id="s")
        assert first.reasoning_content == ""
        client.complete([USER, first.to_message(), *answer_calls(first)], TOOLS, session_id="s")
        assert fake.responses == [200, 200]


# -- request body ----------------------------------------------------------------------------
def test_request_body_shape():
    with FakeKimi([Turn(content="a"), Turn(content="b")]) as fake:
        client = make_client(fake, max_output_tokens=20_000)
        client.complete([USER], TOOLS, session_id="sess-7f3a")
        client.complete([USER], None, session_id="sess-7f3a", max_output_tokens=4_000)
        with_tools, without = fake.requests
    assert with_tools["model"] == "kimi-k2.6" and with_tools["stream"] is True
    assert with_tools["stream_options"] == {"include_usage": True}
    assert with_tools["prompt_cache_key"] == "sess-7f3a"
    assert with_tools["thinking"] == {"type": "enabled"}
    assert with_tools["tool_choice"] == "auto" and with_tools["tools"] == TOOLS
    assert with_tools["max_completion_tokens"] == 20_000 and without["max_completion_tokens"] == 4_000
    assert "tools" not in without and "tool_choice" not in without
    for body in (with_tools, without):
        assert not set(SAMPLING) & set(body) and "max_tokens" not in body and "reasoning_effort" not in body


def test_messages_are_serialized_exactly_whatever_the_history_does():
    """The body's messages match a fresh serialization after appends, a compaction (new dicts,
    fewer messages), a rewind to a prefix and a list that reuses some old objects in a new order."""
    client = ModelClient(Settings(api_key="k"))
    sys_msg = {"role": "system", "content": "s"}
    history: list[dict[str, Any]] = [sys_msg, USER]

    def sent(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return json.loads(client.build_body(messages, TOOLS, session_id="s"))["messages"]

    assert sent(history) == history
    for i in range(5):
        history = [*history, {"role": "assistant", "content": f"a{i}"}, {"role": "user", "content": f"u{i} \u00e9"}]
        assert sent(history) == history
    assert sent(history) == history  # the same list again
    compacted = [sys_msg, {"role": "user", "content": "summary"}, history[-1]]
    assert sent(compacted) == compacted
    assert sent(history[:3]) == history[:3]
    shuffled = [history[4], history[2], {"role": "user", "content": "new"}, history[3]]
    assert sent(shuffled) == shuffled


def test_one_connection_serves_every_request():
    """Streams are read to their end, so the kept-alive connection is reused: with the SDK's own
    stream each request opened a new connection (a TLS handshake per step against a real API)."""
    with FakeKimi([Turn(content="a"), Turn(content="b", tool_calls=[ToolCallSpec("read_file", {"path": "x"})]),
                   Turn(content="c")]) as fake:
        client = make_client(fake)
        for _ in range(3):
            client.complete([USER], TOOLS, session_id="s")
        assert fake.request_count == 3 and fake.connections == 1


def test_a_connection_dropped_after_done_does_not_retry_a_whole_answer():
    """Reading past [DONE] only returns the connection to the pool: a server that resets it there
    has still sent the whole answer, which must be used, not asked for (and paid for) again."""
    turn = Turn(content="whole", tool_calls=[ToolCallSpec("read_file", {"path": "x"})])
    with FakeKimi([Fault(200, turn=turn, drop_after_done=True), Turn(content="second")]) as fake:
        client = make_client(fake)
        got = client.complete([USER], TOOLS, session_id="s")
        assert got.content == "whole" and [c.name for c in got.tool_calls] == ["read_file"]
        assert fake.request_count == 1
        assert client.complete([USER], TOOLS, session_id="s").content == "second"  # a new connection
        assert fake.connections == 2


def test_thinking_disabled_and_providers_without_the_field():
    with FakeKimi([Turn(content="a")]) as fake:
        make_client(fake, thinking=False).complete([USER], session_id="s")
        assert fake.requests[0]["thinking"] == {"type": "disabled"}
    with FakeKimi([Turn(content="a")], context_window={"moonshotai/kimi-k2.6": 262_144}) as fake:
        result = make_client(fake, provider="openrouter").complete([USER], session_id="s")
        assert "thinking" not in fake.requests[0] and fake.requests[0]["model"] == "moonshotai/kimi-k2.6"
        assert result.model == "moonshotai/kimi-k2.6"


def test_max_completion_tokens_clamped_to_the_window():
    window = MODELS["kimi-k2.6"].context_window
    used = window - SAFETY_MARGIN_TOKENS - 5_000
    with FakeKimi([Turn(content="a")], count_tokens=lambda body: 10) as fake:
        make_client(fake).complete([USER], session_id="s", input_tokens=used)
        assert fake.requests[0]["max_completion_tokens"] == 5_000


def test_context_overflow_raised_before_sending():
    window = MODELS["kimi-k2.6"].context_window
    with FakeKimi([Turn(content="a")]) as fake:
        client = make_client(fake)
        with pytest.raises(ContextOverflowError) as info:
            client.complete([USER], session_id="s", input_tokens=window - SAFETY_MARGIN_TOKENS - MIN_OUTPUT_TOKENS + 1)
        assert info.value.context_window == window and info.value.exit_code == 4
        big = [{"role": "user", "content": "x" * (4 * window)}]  # estimated from the body
        with pytest.raises(ContextOverflowError):
            client.complete(big, session_id="s")
        assert fake.request_count == 0


def test_server_side_context_overflow_maps_to_context_overflow_error():
    with FakeKimi([Turn(content="a")], count_tokens=lambda body: 262_000) as fake:
        rec = Recorder()
        with pytest.raises(ContextOverflowError, match="exceeded model token limit"):
            make_client(fake, rec).complete([USER], session_id="s", input_tokens=1_000)
        assert fake.responses == [400] and rec.waits == []


def test_token_estimate():
    assert estimate_tokens("a" * 400) == 100
    assert estimate_tokens("漢字" * 10) == 20  # one per non-ASCII character
    mixed = "abcd" * 25 + "é" * 10
    assert estimate_tokens(mixed) == (110 - 5 + 3) // 4 + 5  # 2-byte characters count as half of one; rounded up


# -- retries ---------------------------------------------------------------------------------
def test_rate_limit_retry_after_header_is_honoured():
    with FakeKimi([Fault.rate_limited(retry_after=7), Turn(content="ok")]) as fake:
        rec = Recorder()
        result = make_client(fake, rec).complete([USER], session_id="s")
    assert result.content == "ok" and rec.waits == [7.0] and fake.responses == [429, 200]
    (notice,) = rec.notices
    assert (notice.attempt, notice.wait, notice.status) == (1, 7.0, 429)
    assert notice.request_id == "fake-req-000001" and "rate_limit_reached_error" in notice.reason


def test_rate_limit_wait_from_the_message_text():
    with FakeKimi([Fault.rate_limited(in_message=3), Turn(content="ok")]) as fake:
        rec = Recorder()
        make_client(fake, rec).complete([USER], session_id="s")
    assert rec.waits == [3.0]


@pytest.mark.parametrize("fault,status,fragment", [
    (Fault.overloaded(), 429, "overloaded"),
    (Fault.server_error(), 500, "HTTP 500"),
    (Fault(502, "bad_gateway", "upstream"), 502, "HTTP 502"),
    (Fault.cut_stream(after_chunks=3), None, "lost the connection"),
    (Fault.cut_stream(after_chunks=3, clean=True), None, "ended without finish_reason"),
    (Fault.stream_error("server_error", "engine hiccup", after_chunks=3), None, "engine hiccup"),
], ids=["overloaded", "500", "502", "cut", "no-finish", "error-event"])
def test_transient_failures_are_retried_with_backoff(fault, status, fragment):
    with FakeKimi([fault, fault, Turn(content="recovered")]) as fake:
        rec = Recorder()
        deltas: list[str] = []
        result = make_client(fake, rec).complete([USER], session_id="s", on_delta=lambda k, t: deltas.append(t))
    assert result.content == "recovered" and result.finish_reason == "stop"
    assert [n.attempt for n in rec.notices] == [1, 2]
    assert all(n.status == status and fragment in n.reason and n.request_id for n in rec.notices)
    # exponential backoff with jitter: attempt n waits within [2^(n-1)/2, 2^(n-1)]
    assert 0.5 <= rec.waits[0] <= 1.0 and 1.0 <= rec.waits[1] <= 2.0
    cut = fault.cut_after_chunks is not None
    assert all(n.discarded_output == cut for n in rec.notices)
    assert deltas[-1] == "recovered"


def test_error_event_inside_a_stream_that_is_final():
    with FakeKimi([Fault.stream_error("content_filter", "blocked by policy")]) as fake:
        err, _ = _fails_once(fake)
    assert "content_filter" in str(err) and "blocked by policy" in str(err)


def test_timeout_is_retried():
    with FakeKimi([Fault.slow(2.0), Turn(content="fast")]) as fake:
        rec = Recorder()
        result = make_client(fake, rec, request_timeout=0.3).complete([USER], session_id="s")
    assert result.content == "fast" and "no answer" in rec.notices[0].reason


def test_connection_refused_then_server_up():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    fake = FakeKimi([Turn(content="up now")], port=port)
    rec = Recorder()
    client = ModelClient(Settings(base_url=fake.base_url, api_key=fake.api_key, retry_window=600),
                         on_retry=rec.notices.append, sleep=lambda s: (rec.sleep(s), fake.start()), clock=rec.clock)
    try:
        result = client.complete([USER], session_id="s")
    finally:
        fake.stop()
    assert result.content == "up now" and len(rec.waits) == 1
    assert "cannot connect" in rec.notices[0].reason and rec.notices[0].status is None


def test_retry_window_exhausted():
    with FakeKimi(lambda body: Fault.server_error("still broken")) as fake:
        rec = Recorder()
        with pytest.raises(ModelAPIError) as info:
            make_client(fake, rec, retry_window=30).complete([USER], session_id="s")
    err = info.value
    assert "still failing" in str(err) and "still broken" in str(err) and err.retryable and err.status == 500
    assert err.request_id == f"fake-req-{fake.request_count:06d}"
    assert sum(rec.waits) <= 30 and len(rec.waits) >= 3 and fake.request_count == len(rec.waits) + 1
    assert all(w <= 60 for w in rec.waits)


def test_retry_after_beyond_the_window_gives_up_at_once():
    with FakeKimi([Fault.rate_limited(retry_after=3600)]) as fake:
        rec = Recorder()
        with pytest.raises(ModelAPIError, match="rate limited"):
            make_client(fake, rec, retry_window=60).complete([USER], session_id="s")
    assert rec.waits == [] and fake.request_count == 1


# -- errors that are not retried -------------------------------------------------------------
def _fails_once(fake: FakeKimi, **settings: Any) -> tuple[ModelAPIError, Recorder]:
    rec = Recorder()
    with pytest.raises(ModelAPIError) as info:
        make_client(fake, rec, **settings).complete([USER], session_id="s")
    assert rec.waits == [] and rec.notices == [] and fake.request_count == 1
    return info.value, rec


def test_wrong_key():
    with FakeKimi([Turn(content="x")]) as fake:
        err, _ = _fails_once(fake, api_key="sk-wrong")
    assert str(err).startswith(f"API key rejected by 127.0.0.1:{fake.port}") and "MOONSHOT_API_KEY" in str(err)
    assert err.status == 401 and err.request_id == "fake-req-000001" and not err.retryable


def test_permission_denied():
    with FakeKimi([Fault.permission_denied()]) as fake:
        err, _ = _fails_once(fake)
    assert str(err).startswith("permission denied by") and err.status == 403


def test_unknown_model():
    with FakeKimi([Turn(content="x")]) as fake:
        err, _ = _fails_once(fake, model="kimi-k9")
    assert str(err).startswith("model kimi-k9 not found or not available") and err.status == 404


def test_bad_request_carries_the_server_message():
    bad_history = [USER, {"role": "assistant", "tool_calls": [
        {"id": "a:0", "type": "function", "function": {"name": "read_file", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "a:0", "content": "x"}]
    with FakeKimi([Turn(content="x")]) as fake:
        rec = Recorder()
        with pytest.raises(ModelAPIError) as info:
            make_client(fake, rec).complete(bad_history, session_id="s")
    assert "(400 invalid_request_error)" in str(info.value)
    assert "reasoning_content is missing in assistant tool call message at index 1" in str(info.value)
    assert rec.waits == []


def test_quota_exhausted(caplog):
    with FakeKimi([Fault.quota_exceeded()]) as fake, caplog.at_level(logging.ERROR, "kimi_code.agent.client"):
        err, _ = _fails_once(fake)
    assert str(err) == (f"account balance exhausted at 127.0.0.1:{fake.port} (exceeded_current_quota_error): "
                        "top up the account or use another key")
    assert err.request_id == "fake-req-000001" and "fake-req-000001" in caplog.text


# -- usage and cost --------------------------------------------------------------------------
@pytest.mark.parametrize("usage_in", ["both", "choice", "final"])
@pytest.mark.parametrize("shape", ["top-level", "details"])
def test_usage_and_cost_with_cached_tokens(usage_in, shape):
    usage: dict[str, Any] = {"prompt_tokens": 10_000, "completion_tokens": 500, "total_tokens": 10_500}
    if shape == "top-level":
        usage["cached_tokens"] = 8_000
        usage["prompt_tokens_details"] = {"cached_tokens": 1}  # the top-level one wins
    else:
        usage["prompt_tokens_details"] = {"cached_tokens": 8_000}
    with FakeKimi([Turn(content="x", usage=usage, usage_in=usage_in)]) as fake:
        result = make_client(fake).complete([USER], session_id="s")
    assert result.usage == Usage(10_000, 500, 8_000)
    assert result.cost == pytest.approx((2_000 * 0.95 + 8_000 * 0.16 + 500 * 4.00) / 1e6)


def test_prefix_cache_shows_up_as_cached_tokens():
    with FakeKimi([Turn(content="one"), Turn(content="two")]) as fake:
        client = make_client(fake)
        first = client.complete([USER], session_id="s")
        second = client.complete([USER, first.to_message(), {"role": "user", "content": "more"}], session_id="s")
    assert first.usage.cached_tokens == 0 and 0 < second.usage.cached_tokens < second.usage.prompt_tokens
    assert second.cost < MODELS["kimi-k2.6"].cost(second.usage.prompt_tokens, second.usage.completion_tokens, 0)


# -- secrets, doctor -------------------------------------------------------------------------
def test_api_key_never_in_a_body_or_log(caplog):
    secret = "sk-very-secret-0123456789"
    script = [Fault.server_error(), Turn(content="ok", tool_calls=[ToolCallSpec("read_file", {})])]
    with FakeKimi(script, api_key=secret) as fake, caplog.at_level(logging.DEBUG):
        client = make_client(fake)
        client.complete([USER], TOOLS, session_id="s")
        with pytest.raises(ModelAPIError):
            make_client(fake, api_key=secret + "x").complete([USER], session_id="s")
        bodies = json.dumps(fake.requests)
    assert len(fake.requests) == 3 and secret not in bodies and secret not in caplog.text


def test_ping():
    with FakeKimi() as fake:
        assert "kimi-k2.6 available" in make_client(fake).ping()
        with pytest.raises(ModelAPIError, match="API key rejected"):
            make_client(fake, api_key="sk-wrong").ping()
        with pytest.raises(ModelAPIError, match="model kimi-k9 not found"):
            make_client(fake, model="kimi-k9").ping()


def test_unresolvable_host_fails_fast_before_any_success() -> None:
    from kimi_code.agent.config import load_settings
    from kimi_code.agent.errors import ModelAPIError

    settings = load_settings({"base_url": "http://no-such-host.invalid/v1"}, environ={"MOONSHOT_API_KEY": "k"},
                             config_path=None)
    waits: list[float] = []
    client = ModelClient(settings, sleep=waits.append)
    with pytest.raises(ModelAPIError, match="check --base-url"):
        client.complete([USER], session_id="s")
    assert waits == []


@pytest.mark.parametrize("url", ["ftp://example.com/v1", "localhost:8000/v1", "not a url"])
def test_unsupported_protocol_fails_at_once_without_retries(url: str) -> None:
    """A URL the HTTP client refuses (no http/https scheme) can never work: one clear error, no retry
    window spent on it. (load_settings rejects these already; a client built another way must too.)"""
    rec = Recorder()
    settings = Settings(api_key="sk-k", retry_window=1800.0).model_copy(update={"base_url": url})
    client = ModelClient(settings, on_retry=rec.notices.append, sleep=rec.sleep, clock=rec.clock)
    with pytest.raises(ModelAPIError, match="check --base-url") as info:
        client.complete([USER], session_id="s")
    assert rec.waits == [] and rec.notices == []
    assert not info.value.retryable and "\n" not in str(info.value)


def test_refused_connection_is_still_retried() -> None:
    """Only the protocol/URL errors are final: a server that is down is retried as before."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rec = Recorder()
    client = ModelClient(Settings(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-k", retry_window=5.0),
                         on_retry=rec.notices.append, sleep=rec.sleep, clock=rec.clock)
    with pytest.raises(ModelAPIError) as info:
        client.complete([USER], session_id="s")
    assert rec.waits and info.value.retryable


def test_request_body_is_the_whole_json_however_often_messages_repeat() -> None:
    """Messages are serialized once and reused: the bytes must still be exactly the body's JSON,
    also for a new message object that happens to reuse a dropped one's id."""
    import json as json_

    client = ModelClient(Settings(base_url="http://127.0.0.1:9/v1", api_key="sk-k"))
    history = [{"role": "system", "content": "sys"}, {"role": "user", "content": "tâche ✓"}]
    for i in range(3):
        history.append({"role": "assistant", "content": f"step {i}", "reasoning_content": "r"})
        history = [dict(m) if n == 0 else m for n, m in enumerate(history)]  # a fresh system message
        data = client.build_body(history, None, session_id="s", max_output_tokens=100)
        body = json_.loads(data)
        assert body["messages"] == history and body["max_completion_tokens"] == 100
        assert body["model"] and body["stream"] is True and body["prompt_cache_key"] == "s"
    history = [history[0], {"role": "user", "content": "different"}]  # compaction-like: objects go away
    assert json_.loads(client.build_body(history, None, session_id="s"))["messages"] == history
