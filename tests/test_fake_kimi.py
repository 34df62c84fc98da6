"""The fake Kimi server: wire format, Kimi's request rules and error bodies, over raw HTTP.

Raw HTTP (http.client) rather than the SDK so that the bytes on the wire are what is asserted.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from typing import Any

import pytest

from kimi_code.agent.fake_kimi import FakeKimi, Fault, ToolCallSpec, Turn, load_script

KEY = "sk-fake"


def post(fake: FakeKimi, body: dict[str, Any] | bytes, *, key: str = KEY,
         path: str = "/v1/chat/completions") -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=10)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn.request("POST", path, body=data,
                 headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    resp = conn.getresponse()
    try:
        payload = resp.read()
    finally:
        conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, payload


def error_of(payload: bytes) -> dict[str, Any]:
    body = json.loads(payload)
    assert set(body) == {"error"}, body
    return body["error"]


def sse_events(payload: bytes) -> list[Any]:
    events = []
    for block in payload.decode().split("\n\n"):
        if not block.strip():
            continue
        assert block.startswith("data: "), block
        data = block[len("data: "):]
        events.append(data if data == "[DONE]" else json.loads(data))
    return events


def chat(messages: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"model": "kimi-k2.6", "messages": messages, "max_completion_tokens": 1000, **extra}


USER = {"role": "user", "content": "fix the bug"}


def call_msg(*ids: str, reasoning: str | None = "thinking", content: Any = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": "assistant", "tool_calls": [
        {"id": i, "type": "function", "function": {"name": "read_file", "arguments": "{}"}} for i in ids]}
    if reasoning is not None:
        msg["reasoning_content"] = reasoning
    if content is not None:
        msg["content"] = content
    return msg


def result(call_id: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": "ok"}


@pytest.fixture
def fake():
    with FakeKimi([Turn(content="fine")] * 50) as server:
        yield server


# -- streaming format ------------------------------------------------------------------------
def test_stream_order_pieces_usage_and_done():
    turn = Turn(reasoning="I should read the file first, then edit it.", content="Reading it now.",
                tool_calls=[ToolCallSpec("read_file", {"path": "src/utils/helpers.py", "limit": 200}),
                            ToolCallSpec("grep", '{"pattern": "def add"}', id="grep:7")])
    with FakeKimi([turn], chunk_chars=10) as fake:
        status, headers, payload = post(fake, chat([USER], stream=True, stream_options={"include_usage": True}))
    assert status == 200 and headers["content-type"] == "text/event-stream"
    assert headers["x-request-id"]
    events = sse_events(payload)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    kinds = [next(iter(d)) for d in deltas[1:] if d]
    # reasoning first, then one empty reasoning delta, then content, then tool calls
    first_content = kinds.index("content")
    assert set(kinds[:first_content]) == {"reasoning_content"}
    assert deltas[first_content] == {"reasoning_content": ""}
    assert "".join(d.get("reasoning_content", "") for d in deltas) == turn.reasoning
    assert "".join(d.get("content", "") for d in deltas) == turn.content
    assert kinds[-1] == "tool_calls" and "reasoning_content" not in kinds[first_content:]
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    firsts = [c for c in calls if "id" in c]
    assert [(c["index"], c["id"], c["function"]["name"]) for c in firsts] == [
        (0, "functions.read_file:0", "read_file"), (1, "grep:7", "grep")]
    pieces0 = [c["function"]["arguments"] for c in calls if c["index"] == 0 and "id" not in c]
    assert len(pieces0) >= 2 and all("name" not in c["function"] for c in calls if "id" not in c)
    assert json.loads("".join(pieces0)) == {"path": "src/utils/helpers.py", "limit": 200}
    finish, final = chunks[-2], chunks[-1]
    assert finish["choices"][0]["finish_reason"] == "tool_calls"
    assert final["choices"] == [] and final["usage"] == finish["choices"][0]["usage"]
    assert final["usage"]["prompt_tokens"] > 0 and final["usage"]["completion_tokens"] > 0


def test_stream_without_include_usage_has_no_usage_chunk_and_vllm_keys():
    turn = Turn(reasoning="hmm", content="hi", reasoning_key="reasoning",
                tool_calls=[ToolCallSpec("read_file", {"p": 1})], omit_index=True)
    with FakeKimi([turn]) as fake:
        _, _, payload = post(fake, chat([USER], stream=True))
    chunks = sse_events(payload)[:-1]
    assert all(c["choices"] for c in chunks)
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert any("reasoning" in d for d in deltas) and not any("reasoning_content" in d for d in deltas)
    assert all("index" not in tc for d in deltas for tc in d.get("tool_calls", ()))


def test_paced_stream_arrives_in_pieces():
    with FakeKimi([Turn(content="abcdefghij" * 3)], chunk_chars=10, chunk_delay=0.05) as fake:
        conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=5)
        conn.request("POST", "/v1/chat/completions", body=json.dumps(chat([USER], stream=True)),
                     headers={"Authorization": f"Bearer {KEY}"})
        resp = conn.getresponse()
        first = resp.read1()
        rest = resp.read()
        conn.close()
    assert b"[DONE]" not in first and b"[DONE]" in rest


def test_non_streaming_answer():
    turn = Turn(reasoning="r", content="", tool_calls=[ToolCallSpec("read_file", {"path": "a"})])
    with FakeKimi([turn]) as fake:
        status, _, payload = post(fake, chat([USER]))
    body = json.loads(payload)
    assert status == 200 and body["object"] == "chat.completion"
    msg = body["choices"][0]["message"]
    assert msg["reasoning_content"] == "r"
    assert msg["tool_calls"][0]["id"] == "functions.read_file:0"
    assert body["choices"][0]["finish_reason"] == "tool_calls" and body["usage"]["prompt_tokens"] > 0


def test_usage_counts_and_prefix_cache_across_earlier_requests():
    with FakeKimi([Turn(content="x")] * 5, count_tokens=lambda b: 100 * len(b["messages"])) as fake:
        system = {"role": "system", "content": "sys"}
        a = [system, USER]
        b = a + [{"role": "assistant", "content": "x"}, {"role": "user", "content": "more"}]
        c = a + [{"role": "user", "content": "other branch"}]
        d = b + [{"role": "assistant", "content": "y"}, {"role": "user", "content": "again"}]
        usages = []
        for messages in (a, b, c, d):
            _, _, payload = post(fake, chat(messages))
            usages.append(json.loads(payload)["usage"])
    assert [u["prompt_tokens"] for u in usages] == [200, 400, 300, 600]
    # c shares only a's two messages with b; d extends b, an earlier request than the last one
    assert [u["cached_tokens"] for u in usages] == [0, 200, 200, 400]


def test_default_token_estimate_is_json_length_over_four():
    messages = [USER, {"role": "assistant", "content": "a" * 400}, {"role": "user", "content": "b"}]
    tools = [{"type": "function", "function": {"name": "read_file", "parameters": {"type": "object"}}}]
    with FakeKimi([Turn(content="x")]) as fake:
        _, _, payload = post(fake, chat(messages, tools=tools, tool_choice="auto"))
    chars = sum(len(json.dumps(m, separators=(",", ":"))) for m in messages)
    chars += len(json.dumps(tools, separators=(",", ":")))
    assert json.loads(payload)["usage"]["prompt_tokens"] == chars // 4


# -- Kimi's request rules --------------------------------------------------------------------
def test_wrong_key_is_401_and_recorded(fake):
    status, _, payload = post(fake, chat([USER]), key="sk-wrong")
    assert status == 401 and error_of(payload)["type"] == "invalid_authentication_error"
    assert fake.responses == [401] and fake.requests[0]["messages"] == [USER]
    assert fake.remaining == 50  # a rejected request consumes no script item


def test_unknown_model_is_404(fake):
    status, _, payload = post(fake, {**chat([USER]), "model": "kimi-k9"})
    assert status == 404 and error_of(payload)["type"] == "resource_not_found_error"
    assert "kimi-k9" in error_of(payload)["message"]


def test_missing_reasoning_content_rejected_when_thinking(fake):
    messages = [USER, call_msg("functions.read_file:0"), result("functions.read_file:0"),
                call_msg("functions.read_file:1", reasoning=None), result("functions.read_file:1")]
    expected = ("thinking is enabled but reasoning_content is missing in assistant tool call message "
                "at index 3")
    for extra in ({"thinking": {"type": "enabled"}}, {}):  # absent: K2.x think by default
        status, _, payload = post(fake, chat(messages, **extra))
        assert status == 400
        assert error_of(payload) == {"message": expected, "type": "invalid_request_error"}
    status, _, _ = post(fake, chat(messages, thinking={"type": "disabled"}))
    assert status == 200
    assert fake.responses == [400, 400, 200] and fake.errors[0] == expected


@pytest.mark.parametrize("name,bad,good_thinking,good_plain", [
    ("temperature", 0.7, 1.0, 0.6),
    ("top_p", 0.9, 0.95, 0.95),
    ("n", 2, 1, 1),
    ("presence_penalty", 0.5, 0, 0),
    ("frequency_penalty", 0.5, 0, 0),
])
def test_fixed_sampling_parameters(fake, name, bad, good_thinking, good_plain):
    status, _, payload = post(fake, chat([USER], **{name: bad}))
    assert status == 400 and error_of(payload)["message"].startswith(f"invalid {name}: only ")
    assert post(fake, chat([USER], **{name: good_thinking}))[0] == 200
    assert post(fake, chat([USER], thinking={"type": "disabled"}, **{name: good_plain}))[0] == 200


def test_temperature_message_names_the_allowed_value(fake):
    _, _, payload = post(fake, chat([USER], temperature=0.2))
    assert error_of(payload)["message"] == "invalid temperature: only 1 is allowed for this model"
    _, _, payload = post(fake, chat([USER], temperature=1.0, thinking={"type": "disabled"}))
    assert error_of(payload)["message"] == "invalid temperature: only 0.6 is allowed for this model"


def test_tool_choice_in_thinking_mode(fake):
    tools = [{"type": "function", "function": {"name": "read_file", "parameters": {"type": "object"}}}]
    status, _, payload = post(fake, chat([USER], tools=tools, tool_choice="required"))
    assert status == 400
    assert error_of(payload)["message"] == "tool_choice 'required' is incompatible with thinking enabled"
    named = {"type": "function", "function": {"name": "read_file"}}
    assert post(fake, chat([USER], tools=tools, tool_choice=named))[0] == 400
    for choice in ("auto", "none"):
        assert post(fake, chat([USER], tools=tools, tool_choice=choice))[0] == 200
    assert post(fake, chat([USER], tools=tools, tool_choice="required", thinking={"type": "disabled"}))[0] == 200


def test_duplicated_tool_call_id(fake):
    messages = [USER, call_msg("write:1"), result("write:1"), call_msg("write:1"), result("write:1")]
    status, _, payload = post(fake, chat(messages))
    assert status == 400 and error_of(payload)["message"] == "Invalid request: tool call id write:1 is duplicated"


def test_orphan_tool_result(fake):
    status, _, payload = post(fake, chat([USER, result("functions.nope:0")]))
    assert status == 400 and "functions.nope:0" in error_of(payload)["message"]
    messages = [USER, call_msg("a:0"), result("a:0"), result("a:0")]  # answered twice
    assert post(fake, chat(messages))[0] == 400


@pytest.mark.parametrize("tail", [[], [USER]], ids=["at-end", "before-user"])
def test_unanswered_tool_call(fake, tail):
    messages = [USER, call_msg("a:0", "a:1"), result("a:0"), *tail]
    status, _, payload = post(fake, chat(messages))
    message = error_of(payload)["message"]
    assert status == 400 and "tool_call_ids did not have response messages: a:1" in message


def test_empty_text_content_on_tool_call_message(fake):
    for content in ("", [{"type": "text", "text": ""}]):
        status, _, payload = post(fake, chat([USER, call_msg("a:0", content=content), result("a:0")]))
        assert status == 400 and "text content is empty" in error_of(payload)["message"]
    assert post(fake, chat([USER, call_msg("a:0", content="Reading."), result("a:0")]))[0] == 200
    assert post(fake, chat([USER, call_msg("a:0"), result("a:0")]))[0] == 200  # omitted


def test_context_window_counts_prompt_plus_output():
    with FakeKimi([Turn(content="x")] * 3, context_window=10_000, count_tokens=lambda b: 9_000) as fake:
        status, _, payload = post(fake, chat([USER], max_completion_tokens=1_001))
        assert status == 400 and "exceeded model token limit: 10000" in error_of(payload)["message"]
        assert post(fake, {**chat([USER]), "max_completion_tokens": None, "max_tokens": 2000})[0] == 400
        assert post(fake, chat([USER], max_completion_tokens=1_000))[0] == 200


def test_invalid_tools_and_bad_json(fake):
    bad_name = [{"type": "function", "function": {"name": "x", "parameters": {"type": "object"}}}]
    assert post(fake, chat([USER], tools=bad_name))[0] == 400
    status, _, payload = post(fake, b"{not json")
    assert status == 400 and error_of(payload)["type"] == "invalid_request_error"
    assert "_unparsable" in fake.requests[-1]


def test_lenient_mode_skips_rules():
    with FakeKimi([Turn(content="x")], strict=False) as fake:
        assert post(fake, chat([USER, call_msg("a:0", reasoning=None)], temperature=0.1))[0] == 200


# -- faults ----------------------------------------------------------------------------------
def test_fault_bodies_and_headers():
    script = [Fault.rate_limited(retry_after=7), Fault.rate_limited(in_message=3), Fault.overloaded(),
              Fault.quota_exceeded(), Fault.server_error(), Fault.permission_denied()]
    with FakeKimi(script) as fake:
        got = [post(fake, chat([USER])) for _ in script]
    assert [g[0] for g in got] == [429, 429, 429, 429, 500, 403]
    types = [error_of(g[2])["type"] for g in got]
    assert types == ["rate_limit_reached_error", "rate_limit_reached_error", "engine_overloaded_error",
                     "exceeded_current_quota_error", "server_error", "permission_denied_error"]
    assert got[0][1]["retry-after"] == "7"
    assert "retry-after" not in got[1][1] and "try again after 3 seconds" in error_of(got[1][2])["message"]


def test_cut_streams():
    with FakeKimi([Fault.cut_stream(after_chunks=2), Fault.cut_stream(after_chunks=2, clean=True)]) as fake:
        with pytest.raises(http.client.IncompleteRead):
            post(fake, chat([USER], stream=True))
        status, _, payload = post(fake, chat([USER], stream=True))
    events = sse_events(payload)
    assert status == 200 and len(events) == 2 and "[DONE]" not in events
    assert all(e["choices"][0]["finish_reason"] is None for e in events)
    assert fake.responses == [200, 200]


# -- script, responder, other endpoints ------------------------------------------------------
def test_responder_script_exhaustion_and_add():
    seen: list[int] = []

    def responder(body: dict[str, Any]) -> Turn:
        seen.append(len(body["messages"]))
        if len(body["messages"]) > 1:
            raise RuntimeError("boom")
        return Turn(content=f"n={len(seen)}")

    with FakeKimi(responder) as fake:
        assert json.loads(post(fake, chat([USER]))[2])["choices"][0]["message"]["content"] == "n=1"
        status, _, payload = post(fake, chat([USER, {"role": "assistant", "content": "x"}, USER]))
        assert status == 400 and "boom" in error_of(payload)["message"]
    assert seen == [1, 3]
    with FakeKimi([]) as fake:
        status, _, payload = post(fake, chat([USER]))
        assert status == 400 and error_of(payload)["type"] == "fake_script_exhausted"
        fake.add(Turn(content="later"))
        assert json.loads(post(fake, chat([USER]))[2])["choices"][0]["message"]["content"] == "later"


def test_max_recorded_keeps_the_latest():
    with FakeKimi([Turn(content="x")] * 5, max_recorded=2) as fake:
        for i in range(5):
            post(fake, chat([{"role": "user", "content": str(i)}]))
    assert fake.request_count == 5
    assert [r["messages"][0]["content"] for r in fake.requests] == ["3", "4"]
    assert len(fake.responses) == len(fake.errors) == 2


def test_models_and_token_estimate_endpoints():
    with FakeKimi(context_window={"kimi-k2.6": 1000, "my-kimi": 2000}) as fake:
        conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=5)
        conn.request("GET", "/v1/models", headers={"Authorization": f"Bearer {KEY}"})
        models = json.loads(conn.getresponse().read())
        conn.request("GET", "/v1/models", headers={"Authorization": "Bearer nope"})
        assert conn.getresponse().status == 401
        conn.close()
        status, _, payload = post(fake, chat([USER]), path="/v1/tokenizers/estimate-token-count")
    assert [(m["id"], m["context_length"]) for m in models["data"]] == [("kimi-k2.6", 1000), ("my-kimi", 2000)]
    assert status == 200 and json.loads(payload)["data"]["total_tokens"] > 0


def test_script_file_and_standalone_server(tmp_path):
    script = tmp_path / "script.json"
    script.write_text(json.dumps([
        {"fault": "rate_limited", "retry_after": 2},
        {"status": 500, "error_type": "server_error", "message": "down"},
        {"reasoning": "r", "tool_calls": [{"name": "read_file", "arguments": {"path": "a"}}]},
    ]))
    items = load_script(str(script))
    assert items[0] == Fault.rate_limited(retry_after=2)
    assert items[2].tool_calls[0].name == "read_file"
    proc = subprocess.Popen([sys.executable, "-m", "kimi_code.agent.fake_kimi", "--script", str(script)],
                            stdout=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()  # type: ignore[union-attr]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("POST", "/v1/chat/completions", body=json.dumps(chat([USER])),
                     headers={"Authorization": f"Bearer {KEY}"})
        resp = conn.getresponse()
        assert resp.status == 429 and resp.getheader("Retry-After") == "2"
        conn.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
