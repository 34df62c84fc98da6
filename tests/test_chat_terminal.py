"""The interactive session, driven for real: the CLI in a tmux terminal (keys in, screen out)
against the fake Kimi server, whose recorded requests show what the model was sent."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from helpers import KEY, cli_env, make_repo, run_cli
from kimi_code.agent import events as ev
from kimi_code.agent.event_payloads import check_payload
from kimi_code.agent.fake_kimi import FakeKimi, ToolCallSpec, Turn
from kimi_code.agent.store import SessionStore
from terminal import DEADLINE, Terminal

pytestmark = pytest.mark.slow

# A 1x1 PNG.
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d4944415478da63f8cfc0f01f0005000201a5f5e1ef0000000049454e44ae426082")


def _chat(tmp_path: Path, fake: FakeKimi, repo: Path, *extra: str) -> Terminal:
    env = cli_env(tmp_path)
    return Terminal(tmp_path, ["chat", "--sandbox", "none", "--base-url", fake.base_url, *extra], env, cwd=repo)


def _events(tmp_path: Path) -> tuple[str, list[Any]]:
    (meta,) = SessionStore(tmp_path / "state").list()
    return meta.id, SessionStore(tmp_path / "state").open(meta.id).log.load()


def _user_texts(body: dict[str, Any]) -> list[str]:
    out = []
    for m in body["messages"]:
        if m["role"] == "user":
            c = m["content"]
            out.append(c if isinstance(c, str) else json.dumps(c))
    return out


def _wait_requests(fake: FakeKimi, n: int) -> None:
    deadline = time.monotonic() + DEADLINE
    while fake.request_count < n:
        assert time.monotonic() < deadline, f"the fake server got {fake.request_count} requests, not {n}"
        time.sleep(0.05)


def test_two_turns_in_one_session_the_second_sees_the_first(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"a.txt": "alpha\n"})
    script = [Turn(content="The secret word is PAPAYA."), Turn(content="You told me PAPAYA earlier.")]
    with FakeKimi(script, api_key=KEY) as fake, _chat(tmp_path, fake, repo) as term:
        term.wait_for("kimi-code chat")
        term.wait_prompts(1)
        term.line("remember the word papaya")
        term.wait_for("The secret word is PAPAYA.")
        term.wait_prompts(2)
        term.line("what was \\")  # a line ending in \ goes on on the next line
        term.type("the")
        term.send("Escape", "Enter")  # so does Esc Enter (Alt-Enter)
        term.line("word?")
        term.wait_for("You told me PAPAYA earlier.")
        term.wait_prompts(3)
        term.send("C-d")
        screen = term.wait_for("resume with: kimi-code resume")
        assert term.exit_code() == 0
        requests = list(fake.requests)
    # What was typed stays on the screen (the live panel of the next turn never overwrites it).
    assert "› remember the word papaya\n" in screen and "› what was\n  the\n  word?\n" in screen
    assert len(requests) == 2
    first, second = requests
    # The second turn's request holds the whole first turn, then the follow-up, as resume --continue adds it.
    assert second["messages"][:len(first["messages"])] == first["messages"]
    assert {"role": "assistant", "content": "The secret word is PAPAYA."} in [
        {k: m.get(k) for k in ("role", "content")} for m in second["messages"]]
    assert _user_texts(second)[-1] == "# Additional instructions from the user\nwhat was \nthe\nword?"
    sid, events = _events(tmp_path)
    assert sid in screen
    kinds = [e.payload.get("kind") for e in events if e.type == ev.USER_MESSAGE]
    assert kinds == ["task", "continue"]
    assert [e.type for e in events].count(ev.FINISHED) == 2  # each turn ended; the follow-up reopened it
    assert [e.type for e in events].count(ev.SESSION_STARTED) == 1


def test_diff_and_undo_after_an_edit(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"app.py": "x = 1\n"})
    edit = ToolCallSpec("edit_file", {"path": "app.py", "old_string": "x = 1", "new_string": "x = 2"})
    script = [Turn(reasoning="edit", tool_calls=[edit]), Turn(content="Set x to 2."),
              Turn(content="Understood, it is back to 1.")]
    with FakeKimi(script, api_key=KEY) as fake, _chat(tmp_path, fake, repo) as term:
        term.wait_prompts(1)
        term.line("set x to 2")
        term.wait_for("Set x to 2.")
        term.wait_prompts(2)
        assert (repo / "app.py").read_text() == "x = 2\n"
        term.line("/diff")
        term.wait_for("+x = 2")
        screen = term.wait_for("-x = 1")
        assert "--- a/app.py" in screen
        term.line("/diff 1")
        term.wait_for("+x = 2", count=2)
        term.line("/undo")
        term.wait_for("rewound to step 0: 1 file(s) restored (app.py)")
        assert (repo / "app.py").read_text() == "x = 1\n"
        term.line("/diff")
        term.wait_for("no changes yet")
        term.line("/undo")
        term.wait_for("nothing to undo")
        term.line("is it undone?")
        term.wait_for("Understood, it is back to 1.")
        term.wait_prompts(7)
        term.send("C-d")
        assert term.exit_code() == 0
        last = fake.requests[-1]
    # The model saw the rewind: no trace of the edit's step, the rewind notice, then the message.
    texts = _user_texts(last)
    assert "rewound the session to the end of step 0" in texts[-2] and texts[-1].endswith("is it undone?")
    assert not any(m.get("tool_calls") for m in last["messages"])
    _, events = _events(tmp_path)
    assert [e.payload["to_step"] for e in events if e.type == ev.REWIND] == [0]


def test_an_approval_refused_and_one_accepted(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"a.txt": "alpha\n"})
    script = [
        Turn(reasoning="look", tool_calls=[ToolCallSpec("shell", {"command": "ls"})]),  # read-only: not asked
        Turn(reasoning="touch", tool_calls=[ToolCallSpec("shell", {"command": "touch refused.txt"})]),
        Turn(reasoning="write", tool_calls=[ToolCallSpec("write_file", {"path": "b.txt", "content": "bee\n"})]),
        Turn(content="Wrote b.txt; did not touch refused.txt."),
        # Second message: "always" for shell, then a Ctrl-C while it runs still stops the turn.
        Turn(reasoning="slow", tool_calls=[ToolCallSpec("shell", {"command": "sleep 2 && echo slept"})]),
        # Third message: Ctrl-C at the question refuses the call and stops the turn.
        Turn(reasoning="again", tool_calls=[ToolCallSpec("write_file", {"path": "c.txt", "content": "sea\n"})]),
    ]
    with FakeKimi(script, api_key=KEY) as fake, _chat(tmp_path, fake, repo, "--approval", "edits") as term:
        term.wait_prompts(1)
        term.line("make some files")
        screen = term.wait_for("allow shell?")
        assert "$ touch refused.txt" in screen and "$ ls" not in screen
        term.line("n use write_file instead")
        screen = term.wait_for("allow write_file?")
        assert "+bee" in screen and "+++ b/b.txt" in screen  # the diff of the write
        term.line("y")
        term.wait_for("Wrote b.txt; did not touch refused.txt.")
        term.wait_prompts(2)
        term.line("wait a bit")
        term.wait_for("$ sleep 2 && echo slept")
        term.line("a")
        term.wait_for("shell sleep 2")  # running
        term.send("C-c")
        term.wait_for("stopping after the running tool")
        term.wait_for("stopped: interrupted by the user")
        term.wait_prompts(3)
        term.line("write c")
        term.wait_for("allow write_file?", count=2)
        term.send("C-c")
        term.wait_for("stopping the turn")
        term.wait_for("stopped: interrupted by the user", count=2)
        term.wait_prompts(4)
        term.send("C-d")
        assert term.exit_code() == 0
        requests = list(fake.requests)
    assert not (repo / "refused.txt").exists() and (repo / "b.txt").read_text() == "bee\n"
    assert not (repo / "c.txt").exists()
    # The model read the refusal as the call's result, with what the user said.
    refusal = [m for m in requests[2]["messages"] if m["role"] == "tool"][-1]
    assert "refused this shell call" in refusal["content"] and "use write_file instead" in refusal["content"]
    _, events = _events(tmp_path)
    started = [e.payload["name"] for e in events if e.type == ev.TOOL_STARTED]
    assert started == ["shell", "write_file", "shell"]  # the refused calls never started
    refused = [e.payload for e in events if e.type == ev.TOOL_RESULT and e.payload["metadata"].get("refused")]
    assert [(p["name"], p["is_error"]) for p in refused] == [("shell", True), ("write_file", True)]
    assert "stopped the turn" in refused[1]["content"]
    assert [e.type for e in events].count(ev.INTERRUPTED) == 2
    # A recording of the chat replays with the refusal refused again, not run.
    env = cli_env(tmp_path)
    sid, _ = _events(tmp_path)
    assert run_cli(["export", sid, "-o", str(tmp_path / "rec.jsonl")], env).returncode == 0
    replay_repo = make_repo(tmp_path / "replay", {"a.txt": "alpha\n"})
    proc = run_cli(["run", "--repo", str(replay_repo), "--sandbox", "none", "--output", "json", "--model",
                    f"replay:{tmp_path / 'rec.jsonl'}", "make some files"], env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["status"] == "success" and not (replay_repo / "refused.txt").exists()


def test_ctrl_c_mid_turn_returns_to_the_prompt_and_at_an_empty_prompt_leaves(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"a.txt": "alpha\n"})
    script = [
        Turn(content="too late", delay=600),  # a model that does not answer: Ctrl-C aborts the request
        Turn(reasoning="wait", tool_calls=[ToolCallSpec("shell", {"command": "sleep 2 && echo slept"})]),
        Turn(content="Still here."),
    ]
    with FakeKimi(script, api_key=KEY) as fake, _chat(tmp_path, fake, repo) as term:
        term.wait_prompts(1)
        term.line("think for a long time")
        _wait_requests(fake, 1)
        term.send("C-c")
        term.wait_for("stopped: interrupted by the user")
        term.wait_prompts(2)
        term.line("run something slow")
        term.wait_for("shell sleep 2")  # the live panel shows the running command
        term.send("C-c")
        term.wait_for("stopping after the running tool")
        term.wait_for("stopped: interrupted by the user", count=2)
        screen = term.wait_prompts(3)
        assert "✓ shell exit=0" in screen  # the running tool ended normally
        term.line("are you there?")
        term.wait_for("Still here.")
        term.wait_prompts(4)
        term.type("half a message")
        term.wait_for("› half a message")
        term.send("C-c")  # clears the line
        term.wait_until(lambda screen: "half a message" not in screen)
        term.send("C-c")  # at an empty prompt: leaves
        screen = term.wait_for("resume with: kimi-code resume")
        assert term.exit_code() == 0
    _, events = _events(tmp_path)
    assert [e.payload["reason"] for e in events if e.type == ev.INTERRUPTED] == ["interrupted by the user"] * 2
    assert events[-1].type == ev.FINISHED


def test_at_file_completion_and_attachments(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"notes/todo-list.txt": "buy milk\n", "pic.png": ""})
    (repo / "pic.png").write_bytes(PNG)
    script = [Turn(content="Milk, noted."), Turn(content="A tiny image.")]
    with FakeKimi(script, api_key=KEY) as fake, _chat(tmp_path, fake, repo) as term:
        term.wait_prompts(1)
        term.type("what is in @no")
        term.send("Tab")
        term.wait_for("what is in @notes/")
        term.type("to")
        term.send("Tab")
        term.wait_for("what is in @notes/todo-list.txt")
        term.type("?")
        term.send("Enter")
        term.wait_for("attached notes/todo-list.txt (lines 1-1 of 1)")
        term.wait_for("Milk, noted.")
        term.wait_prompts(2)
        term.type("/att")
        term.send("Tab")
        term.wait_for("/attach")
        term.line(" pic.png")
        term.wait_for("attached pic.png (1x1)")
        term.line("and this?")
        term.wait_for("A tiny image.")
        term.wait_prompts(4)
        term.send("C-d")
        assert term.exit_code() == 0
        first, second = list(fake.requests)
    texts = _user_texts(first)
    assert texts[-2].startswith("# Task\nwhat is in @notes/todo-list.txt?")
    assert "The user attached notes/todo-list.txt" in texts[-1] and "buy milk" in texts[-1]
    image = second["messages"][-1]["content"]
    assert image[0]["text"] == "[kimi-code] The user attached the image pic.png:"
    assert image[1]["image_url"]["url"].startswith("data:image/png;base64,")


def test_todo_cost_and_compact_between_turns(tmp_path: Path) -> None:
    big = "".join(f"line {i}: {'lorem ipsum dolor sit amet ' * 3}\n" for i in range(400))  # ~10k tokens
    repo = make_repo(tmp_path / "repo", {"big.txt": big})
    plan = [{"id": "1", "content": "read big.txt", "status": "done"},
            {"id": "2", "content": "report", "status": "in_progress"}]
    script = [
        Turn(reasoning="plan", tool_calls=[ToolCallSpec("todo", {"items": plan})]),
        Turn(reasoning="read", tool_calls=[ToolCallSpec("read_file", {"path": "big.txt"})]),
        Turn(content="It has 400 lines."),
        Turn(content="SUMMARY: big.txt was read; it has 400 lines."),  # the /compact request
        Turn(content="400, as the summary says."),
    ]
    with FakeKimi(script, api_key=KEY) as fake, _chat(tmp_path, fake, repo, "--max-cost", "5") as term:
        term.wait_prompts(1)
        term.line("how long is big.txt?")
        term.wait_for("It has 400 lines.")
        term.wait_prompts(2)
        term.line("/todo")
        term.wait_for("[>] report")
        assert "[x] read big.txt" in term.screen()
        term.line("/cost")
        screen = term.wait_for("budget: $")
        assert "left of $5.0000" in screen and "3 request(s)" in screen
        term.line("/compact")
        screen = term.wait_for("compacted: context")
        term.line("and now?")
        term.wait_for("400, as the summary says.")
        term.wait_prompts(6)
        term.send("C-d")
        assert term.exit_code() == 0
        requests = list(fake.requests)
    summary_request, after = requests[3], requests[4]
    assert "tools" not in summary_request  # the compaction call
    texts = _user_texts(after)
    assert any("SUMMARY: big.txt was read" in t and "report" in t for t in texts)  # summary and the plan
    assert not any("lorem ipsum" in json.dumps(m) for m in after["messages"])  # the big read is gone
    _, events = _events(tmp_path)
    assert [e.type for e in events].count(ev.COMPACTION) >= 1


def test_kill_9_mid_turn_then_resume_reopens_it_on_a_terminal(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"a.txt": "alpha\n"})
    script = [
        Turn(reasoning="wait", tool_calls=[ToolCallSpec("shell", {"command": "sleep 600"})]),
        Turn(content="The sleep was cut short; all is well."),
        Turn(content="Yes, same session."),
    ]
    env = cli_env(tmp_path)
    with FakeKimi(script, api_key=KEY) as fake:
        with _chat(tmp_path, fake, repo) as term:
            term.wait_prompts(1)
            term.line("sleep")
            term.wait_for("shell sleep 600")
            term.kill_program()
        sid, _ = _events(tmp_path)
        with Terminal(tmp_path, ["resume", sid, "--base-url", fake.base_url], env, cwd=repo) as term:
            term.wait_for(f"reopened session {sid} (stopped at step 1")
            term.wait_prompts(1)
            term.send("Enter")  # continue where it stopped
            term.wait_for("The sleep was cut short; all is well.")
            term.wait_prompts(2)
            term.line("same session?")
            term.wait_for("Yes, same session.")
            term.wait_prompts(3)
            term.send("C-d")
            assert term.exit_code() == 0
        requests = list(fake.requests)
    tool = [m for m in requests[1]["messages"] if m["role"] == "tool"][-1]
    assert "interrupted" in tool["content"]  # the killed call: its effect unknown, never re-run
    assert _user_texts(requests[2])[0].startswith("# Task\nsleep")
    _, events = _events(tmp_path)
    assert [e.type for e in events].count(ev.RESUMED) == 1


def test_model_and_thinking_changes_are_recorded_and_kept_on_resume(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"a.txt": "alpha\n"})
    script = [Turn(tool_calls=[ToolCallSpec("read_file", {"path": "a.txt"})]), Turn(content="Read it."),
              Turn(reasoning="now I think", content="Thinking now."), Turn(content="Still k2.5.")]
    with FakeKimi(script, api_key=KEY) as fake:
        with _chat(tmp_path, fake, repo, "--no-thinking") as term:
            term.wait_prompts(1)
            term.line("read a.txt")
            term.wait_for("Read it.")
            term.wait_prompts(2)
            term.line("/model kimi-k2.5")
            term.wait_for("model: kimi-k2.5 from the next message")
            term.line("/thinking on")
            term.wait_for("thinking: on from the next message")
            term.line("think")
            term.wait_for("Thinking now.")
            term.wait_prompts(5)
            term.send("C-d")
            assert term.exit_code() == 0
        sid, _ = _events(tmp_path)
        proc = run_cli(["resume", sid, "--continue", "again", "--output", "json", "--base-url", fake.base_url],
                       cli_env(tmp_path))
        assert proc.returncode == 0, proc.stderr
        requests = list(fake.requests)
    assert [r["model"] for r in requests] == ["kimi-k2.6", "kimi-k2.6", "kimi-k2.5", "kimi-k2.5"]
    assert [r["thinking"]["type"] for r in requests] == ["disabled", "disabled", "enabled", "enabled"]
    # The tool call made without thinking got the reasoning_content a thinking-mode history needs.
    call = next(m for m in requests[2]["messages"] if m.get("tool_calls"))
    assert call["reasoning_content"] == " "
    _, events = _events(tmp_path)
    assert [e.payload for e in events if e.type == ev.SETTINGS_CHANGED] == [{"changes": {"model": "kimi-k2.5"}},
                                                                          {"changes": {"thinking": True}}]
    for event in events:
        check_payload(event.type, event.payload)


def test_a_bare_kimi_code_on_a_terminal_opens_a_chat_with_the_history_but_not_in_ci(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"a.txt": "alpha\n"})
    env = cli_env(tmp_path)
    with Terminal(tmp_path, [], env, cwd=repo) as term:
        term.wait_for("kimi-code chat · kimi-k2.6")
        term.wait_prompts(1)
        term.line("/exit")
        assert term.exit_code() == 0
    with Terminal(tmp_path, ["chat"], env, cwd=repo) as term:  # the input history outlives the session
        term.wait_prompts(1)
        term.send("Up")
        term.wait_for("› /exit")
        term.send("Enter")
        assert term.exit_code() == 0
    with Terminal(tmp_path, [], env, cwd=repo, ci=True) as term:  # CI: never interactive
        term.exit_code()
        screen = term.screen()
        assert "Usage:" in screen and "Commands" in screen and "kimi-code chat ·" not in screen
    proc = run_cli(["chat", "--repo", str(repo)], env)
    assert proc.returncode == 2 and "needs a terminal" in proc.stderr
    proc = run_cli([], env)
    assert "Usage:" in proc.stdout and "Commands" in proc.stdout and "kimi-code chat ·" not in proc.stdout


@pytest.mark.docker
def test_the_sandbox_and_its_shell_stay_up_between_turns_in_docker(tmp_path: Path) -> None:
    from conftest import TEST_IMAGE

    repo = make_repo(tmp_path / "repo", {"a.txt": "alpha\n"})
    script = [
        Turn(reasoning="set", tool_calls=[ToolCallSpec("shell", {"command": "export KEPT=across-turns && cd /tmp"})]),
        Turn(content="Set."),
        Turn(reasoning="get", tool_calls=[ToolCallSpec("shell", {"command": "echo $KEPT in $(pwd)"})]),
        Turn(content="Got it."),
    ]
    env = cli_env(tmp_path)
    with FakeKimi(script, api_key=KEY) as fake:
        args = ["chat", "--sandbox", "docker", "--image", TEST_IMAGE, "--base-url", fake.base_url]
        with Terminal(tmp_path, args, env, cwd=repo) as term:
            term.wait_prompts(1)
            term.line("set a variable")
            term.wait_for("Set.")
            term.wait_prompts(2)
            term.line("read it back")
            term.wait_for("Got it.")
            term.wait_prompts(3)
            term.send("C-d")
            assert term.exit_code(timeout=180) == 0
        requests = list(fake.requests)
    result = [m for m in requests[3]["messages"] if m["role"] == "tool"][-1]
    assert "across-turns in /tmp" in result["content"]
    sid, events = _events(tmp_path)
    assert [e.payload["action"] for e in events if e.type == ev.SANDBOX] == ["started"]  # one sandbox, two turns
    import docker

    client = docker.from_env()
    try:  # the session finished when the user left: its container is gone
        assert client.containers.list(all=True, filters={"name": f"kimi-code-{sid}"}) == []
    finally:
        client.close()
