"""Token accounting, tool-output budgets and compaction planning (unit level)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from kimi_code.agent import context as ctx
from kimi_code.agent import tokens


def test_offline_tokenizer_falls_back_to_documented_estimate_with_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("KIMI_CODE_TOKENIZER_DOWNLOAD", raising=False)
    tokens.reset_for_tests()
    try:
        with caplog.at_level(logging.WARNING, logger="kimi_code.agent.tokens"):
            assert tokens.count_text("abcd" * 100) == 100  # ASCII / 4
            assert tokens.count_text("漢字漢字") == 4  # one per non-ASCII character
            assert tokens.count_text("ab漢") == 1 + 1
        warnings = [r for r in caplog.records if "not cached" in r.getMessage()]
        assert len(warnings) == 1
        assert tokens.tokenizer_name().startswith("estimate")
        assert not list((tmp_path / "empty-cache").glob("*"))  # nothing was downloaded
    finally:
        tokens.reset_for_tests()


def test_message_count_includes_reasoning_and_tool_calls() -> None:
    plain = tokens.count_message({"role": "assistant", "content": "x" * 400})
    full = tokens.count_message({"role": "assistant", "content": "x" * 400, "reasoning_content": "y" * 400,
                                 "tool_calls": [{"id": "a", "type": "function",
                                                 "function": {"name": "shell", "arguments": "z" * 400}}]})
    assert full >= plain + 190


def test_tool_output_budget_cuts_the_middle_and_saves_the_full_text(tmp_path: Path) -> None:
    (tmp_path / ".git" / "info").mkdir(parents=True)
    text = "\n".join(f"line {i:05d} " + "x" * 60 for i in range(3000))
    cut, meta = ctx.budget_tool_output(text, 1000, workspace=tmp_path, session_id="s1", call_id="functions.shell:0")
    assert tokens.count_text(cut) <= 1100
    assert cut.startswith("line 00000") and cut.rstrip().endswith("x" * 60)
    assert "line 02999" in cut and "line 01500" not in cut
    saved = meta["budget_cut"]["saved_to"]
    assert saved in cut and "read_file" in cut
    assert (tmp_path / saved).read_text() == text
    assert "/.kimi-code/" in (tmp_path / ".git" / "info" / "exclude").read_text()
    small, meta2 = ctx.budget_tool_output("short", 1000, workspace=tmp_path, session_id="s1", call_id="c")
    assert small == "short" and meta2 == {}


def test_plan_keeps_recent_steps_from_an_assistant_boundary() -> None:
    messages = [{"role": "user", "content": "task"}]
    for i in range(10):
        messages.append({"role": "assistant", "tool_calls": [{"id": str(i)}]})
        messages.append({"role": "tool", "tool_call_id": str(i), "content": "r"})
    counts = [100] * len(messages)
    plan = ctx.plan_compaction(messages, counts, recent_budget=450, head_count=1)
    assert plan is not None
    assert messages[plan.keep_from]["role"] == "assistant"
    assert len(messages) - plan.keep_from == 4  # two whole steps fit in 450 tokens
    assert plan.to_summarize == messages[1:plan.keep_from]


def test_summary_request_drops_oldest_history_to_fit_and_has_no_tool_structure() -> None:
    task = {"role": "user", "content": "# Task\ndo it"}
    history = []
    for i in range(200):
        history.append({"role": "assistant", "reasoning_content": "secret thoughts", "content": f"step {i}",
                        "tool_calls": [{"id": f"c{i}", "function": {"name": "shell", "arguments": "x" * 400}}]})
        history.append({"role": "tool", "tool_call_id": f"c{i}", "name": "shell", "content": "y" * 400})
    req = ctx.summary_request("SYS", task, history, budget=5_000)
    assert sum(tokens.count_message(m) for m in req) <= 5_000
    assert [m["role"] for m in req] == ["system", "user", "user"]
    assert req[1] == task
    body = req[2]["content"]
    assert "step 199" in body and "step 0\n" not in body and "were dropped" in body
    assert "secret thoughts" not in body  # summarized history drops reasoning


def test_threshold_reserves_the_answer() -> None:
    assert ctx.threshold_tokens(262_144, 32_768, 0.8) == int((262_144 - 32_768) * 0.8)
    assert ctx.needs_compaction(200_000, 262_144, 32_768, 0.8)
    assert not ctx.needs_compaction(150_000, 262_144, 32_768, 0.8)
