"""The parts of the interactive session, called directly: which calls are asked about and what
is shown, a refusal in the registry and the loop's terms, attachments, the settings event in the
fold, /undo's target and the slash commands' table. The terminal itself: test_chat_terminal.py."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from kimi_code.agent import events as ev
from kimi_code.agent.approval import Approvals, needs_approval, preview, shell_is_read_only
from kimi_code.agent.assembly import default_tools
from kimi_code.agent.attachments import AttachmentError, attach, mentions, unresolved_mentions
from kimi_code.agent.config import Settings
from kimi_code.agent.events import Event
from kimi_code.agent.rewind import undo_target
from kimi_code.agent.slash import COMMANDS, ChatContext, dispatch, is_command
from kimi_code.agent.state import SessionState
from kimi_code.agent.stop_signals import StopSignals
from kimi_code.tools.registry import ToolRegistry
from kimi_code.tools.types import ToolContext, ToolResult

PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d4944415478da63f8cfc0f01f0005000201a5f5e1ef0000000049454e44ae426082")


# -- approvals -----------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["ls -la", "cat a.py | grep x | head -3", "git status", "git -C sub log -3",
                                     "ls 2>/dev/null", "cd src && ls", "find . -name '*.py'", "FOO=1 wc -l a",
                                     "grep x < a.txt", "echo 'a; b > c'"])
def test_reading_shell_commands_are_read_only(command: str) -> None:
    assert shell_is_read_only(command)


@pytest.mark.parametrize("command", ["rm -rf build", "echo x > a", "ls\nrm a", "ls; touch b", "ls &",
                                     "find . -delete", "git commit -am x", "git diff --output=p", "sort -o a b",
                                     "cat $(echo a)", "cat `x`", "python -c 1", "ls >> log", "sed -i s/a/b/ f",
                                     "echo 'unclosed"])
def test_anything_else_is_not(command: str) -> None:
    assert not shell_is_read_only(command)


def test_what_each_mode_asks_about() -> None:
    shell = lambda c: json.dumps({"command": c})  # noqa: E731
    assert not needs_approval("auto", "write_file", "{}", False)
    assert needs_approval("edits", "write_file", "{}", False) and needs_approval("edits", "run_tests", "{}", False)
    assert needs_approval("edits", "shell", shell("make install"), False)
    assert not needs_approval("edits", "shell", shell("git diff"), False)
    assert not needs_approval("edits", "read_file", "{}", True) and not needs_approval("edits", "todo", "{}", False)
    assert needs_approval("all", "read_file", "{}", True) and needs_approval("all", "finish", "{}", False)


def test_the_preview_is_the_diff_of_an_edit_or_a_write_and_the_command_of_a_shell(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("one\ntwo\nthree\n")
    edit = preview("edit_file", json.dumps({"path": "a.py", "old_string": "two", "new_string": "2"}), tmp_path)
    assert edit.splitlines()[:2] == ["--- a/a.py", "+++ b/a.py"] and "-two" in edit and "+2" in edit
    assert "(the call will fail)" in preview("edit_file", json.dumps({"path": "a.py", "old_string": "zzz",
                                                                       "new_string": "y"}), tmp_path)
    write = preview("write_file", json.dumps({"path": "new/b.txt", "content": "bee\n"}), tmp_path)
    assert "+++ b/new/b.txt" in write and "+bee" in write
    assert preview("shell", json.dumps({"command": "make"}), tmp_path) == "$ make"
    assert preview("write_file", json.dumps({"path": "../x", "content": "x"}), tmp_path).endswith("(the call will fail)")


def test_answers_yes_no_always_and_stop(tmp_path: Path) -> None:
    answers = iter([("no", "not that"), ("always", ""), ("stop", "")])
    asked: list[str] = []
    stopped: list[bool] = []

    def ask(name: str, shown: str) -> tuple[str, str]:
        asked.append(name)
        return next(answers)

    approvals = Approvals("edits", ask, tmp_path, stop=lambda: stopped.append(True))
    refusal = approvals.decide("write_file", "{}", False)
    assert refusal is not None and "refused this write_file call" in refusal and "not that" in refusal
    assert approvals.decide("write_file", "{}", False) is None  # always...
    assert approvals.decide("write_file", "{}", False) is None and asked == ["write_file", "write_file"]  # ...no more asked
    assert approvals.decide("read_file", "{}", True) is None  # edits: reads are never asked about
    assert approvals.decide("shell", json.dumps({"command": "rm x"}), False) is not None and stopped == [True]


# -- a refusal: the registry's and the loop's terms -------------------------------------------------
def test_a_call_on_start_answers_never_runs(tmp_path: Path) -> None:
    reg = ToolRegistry()
    ran: list[str] = []

    def look(ctx: ToolContext, label: str) -> str:
        """Read."""
        ran.append(label)
        return f"read {label}"

    def change(ctx: ToolContext, label: str) -> str:
        """Write."""
        ran.append(label)
        return f"wrote {label}"

    reg.register(look, read_only=True)
    reg.register(change)
    calls = [("look", '{"label": "r1"}'), ("look", '{"label": "r2"}'), ("change", '{"label": "w1"}')]
    refused = {1: ToolResult("no \udcff", is_error=True), 2: ToolResult("no", is_error=True)}
    reported: dict[int, str] = {}
    results = reg.run_calls(calls, ToolContext(workspace=tmp_path, sandbox=None),  # type: ignore[arg-type]
                            on_start=lambda i: refused.get(i), on_result=lambda i, r: reported.update({i: r.text}))
    assert ran == ["r1"]
    assert [r.text for r in results] == ["read r1", "no \\xff", "no"]  # made valid text like every result
    assert reported == {0: "read r1", 1: "no \\xff", 2: "no"}


def test_a_new_run_starts_with_no_stop_requested() -> None:
    signals = StopSignals(lambda text: None)
    with signals:
        os.kill(os.getpid(), signal.SIGINT)
        assert signals.interrupts == 1
    signals.request_stop()
    with signals:
        assert signals.interrupts == 0 and not signals.terminated
        signals.request_stop()
        assert signals.stop_requested


# -- attachments ----------------------------------------------------------------------------------
def _run_tool(workspace: Path):  # noqa: ANN202
    registry, ctx = default_tools(), ToolContext(workspace=workspace, sandbox=None)  # type: ignore[arg-type]
    return lambda name, args: registry.run(name, args, ctx)


def test_mentions_name_existing_files_once(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.py").write_text("x = 1\n")
    (tmp_path / "notes.txt").write_text("n\n")
    text = "see @src/app.py, and (@notes.txt). Mail me@example.com about @src/app.py or @missing/file.py or @bob"
    assert mentions(text, tmp_path) == ["src/app.py", "notes.txt"]
    assert unresolved_mentions(text, tmp_path) == ["missing/file.py"]


def test_an_attachment_is_what_the_tools_read(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("alpha\nbeta\n")
    (tmp_path / "p.png").write_bytes(PNG)
    run = _run_tool(tmp_path)
    text = attach("a.txt", run)
    assert text.summary == "a.txt (lines 1-2 of 2)" and "1\talpha" in text.content
    image = attach("p.png", run)
    assert image.summary == "p.png (1x1)" and image.content[1]["image_url"]["url"].startswith("data:image/png")
    for bad in ("../outside.txt", "nope.txt", ".git/config"):
        with pytest.raises(AttachmentError):
            attach(bad, run)


# -- the settings event ---------------------------------------------------------------------------
def _events() -> list[Event]:
    call = {"id": "c1", "type": "function", "function": {"name": "read_file", "arguments": '{"path":"a"}'}}
    return [
        Event(ev.SESSION_STARTED, {"session_id": "s", "task": "t", "system_prompt": "SYS", "tools": [],
                                   "settings": {"model": "kimi-k2.6", "thinking": False}}),
        Event(ev.USER_MESSAGE, {"message": {"role": "user", "content": "# Task\nt"}, "kind": "task"}),
        Event(ev.ASSISTANT, {"message": {"role": "assistant", "tool_calls": [call]}, "usage": {}, "cost": 0.0}, step=1),
        Event(ev.TOOL_RESULT, {"call_id": "c1", "name": "read_file", "content": "ok", "metadata": {}}, step=1),
        Event(ev.SETTINGS_CHANGED, {"changes": {"model": "kimi-k2.5", "thinking": True}}, step=1),
    ]


def test_settings_changes_fold_and_turning_thinking_on_mends_the_history() -> None:
    events = _events()
    before = SessionState.fold(events[:-1])
    state = SessionState.fold(events)
    assert state.settings["model"] == "kimi-k2.5" and state.settings["thinking"] is True
    call = next(m for m in state.messages if m.get("tool_calls"))
    assert call["reasoning_content"] == " "
    assert "reasoning_content" not in next(m for m in before.messages if m.get("tool_calls"))
    # A rewind to before the change takes it back, like everything else of that step.
    rewound = SessionState.fold([*events, Event(ev.REWIND, {"to_step": 0, "commit": "c"}, step=0)])
    assert rewound.settings["model"] == "kimi-k2.6" and not any(m.get("tool_calls") for m in rewound.messages)


def test_refold_rebuilds_the_same_object() -> None:
    events = _events()
    state = SessionState.fold(events[:2])
    same = state
    state.refold(events)
    assert same is state and state.snapshot() == SessionState.fold(events).snapshot()


def test_undo_goes_back_to_the_latest_message_then_the_one_before() -> None:
    def user(kind: str, step: int) -> Event:
        return Event(ev.USER_MESSAGE, {"message": {"role": "user", "content": kind}, "kind": kind}, step=step)

    log = [Event(ev.SESSION_STARTED, {}), user("task", 0), user("notice", 1), user("continue", 3),
           user("continue", 5)]
    assert undo_target(log, 7) == 5 and undo_target(log, 5) == 3 and undo_target(log, 3) == 0
    with pytest.raises(Exception, match="nothing to undo"):
        undo_target(log, 0)
    # After a rewind to step 3 the follow-up sent at step 5 is gone from the log's effect.
    assert undo_target([*log, Event(ev.REWIND, {"to_step": 3}, step=3)], 3) == 0


# -- slash commands -------------------------------------------------------------------------------
class _Out:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def line(self, text: str, style: str = "") -> None:
        self.lines.append(text)

    def diff(self, text: str) -> None:
        self.lines.append(text)


def test_commands_before_a_session_exists(tmp_path: Path) -> None:
    out = _Out()
    ctx = ChatContext(out=out, settings=Settings(state_dir=tmp_path / "state"), workspace=tmp_path,
                      run_tool=_run_tool(tmp_path))
    assert set(COMMANDS) == {"diff", "rewind", "undo", "cost", "compact", "todo", "model", "thinking", "attach",
                             "sessions", "help", "exit"}
    assert is_command("/diff") and not is_command("//not a command") and not is_command("hello /diff")
    dispatch(ctx, "/frobnicate now")
    dispatch(ctx, "/diff")
    dispatch(ctx, "/model kimi-k2.5")
    dispatch(ctx, "/thinking maybe")
    dispatch(ctx, "/attach nope.txt")
    dispatch(ctx, "/sessions")
    assert out.lines == ["unknown command /frobnicate (try /help)", "/diff: no session yet; send a message to start one",
                         "model: kimi-k2.5 from the next message",
                         "/thinking: usage: /thinking on|off (now on)", out.lines[4], "no sessions"]
    assert out.lines[4].startswith("/attach: ") and ctx.settings.model == "kimi-k2.5"
    dispatch(ctx, "/exit")
    assert ctx.leave
