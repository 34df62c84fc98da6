"""MCP servers through the real CLI and the fake Kimi server: a run whose model calls MCP tools,
servers that do not start (required or not), a repository's own config before and after trust,
a resumed session whose server lost a tool, `kimi-code mcp list`, doctor, and a stdio server
inside the Docker sandbox."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from helpers import KEY, cli_env, make_repo, run_cli, sandbox_args, stream_events
from kimi_code.agent.fake_kimi import FakeKimi, ToolCallSpec, Turn
from kimi_code.agent.state import SessionState
from kimi_code.agent.store import SessionStore
from mcp_fixtures import DEMO, MINI, reference_server, server_table, toml_list, toml_str

TIMEOUT = 240


def _config(tmp_path: Path, text: str) -> dict[str, str]:
    """The CLI's environment with ``text`` as its config file."""
    path = tmp_path / "config.toml"
    path.write_text(text)
    return cli_env(tmp_path, KIMI_CODE_CONFIG=str(path))


def _tool_messages(request: dict[str, Any]) -> dict[str, str]:
    return {m["tool_call_id"]: m["content"] for m in request["messages"] if m["role"] == "tool"}


def _tool_names(request: dict[str, Any]) -> list[str]:
    return [t["function"]["name"] for t in request["tools"]]


def _run(repo: Path, fake: FakeKimi, env: dict[str, str], *extra: str, task: str = "use the tools"):
    return run_cli(["run", "--repo", str(repo), "--base-url", fake.base_url, "--sandbox", "none", "--output",
                    "stream-json", *extra, task], env, timeout=TIMEOUT)


def test_the_model_calls_mcp_tools_and_gets_their_results(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"a.txt": "one\n"})
    (repo / "a.txt").write_text("two\n")
    env = _config(tmp_path, server_table("time", reference_server("mcp-server-time"))
                  + server_table("git", reference_server("mcp-server-git"), ["--repository", str(repo)])
                  + server_table("demo", sys.executable, [str(DEMO)]))
    env["KIMI_CODE_TOOL_OUTPUT_TOKENS"] = "500"
    calls = [ToolCallSpec("mcp__time__get_current_time", {"timezone": "Etc/UTC"}, id="c-time"),
             ToolCallSpec("mcp__git__git_diff_unstaged", {"repo_path": str(repo)}, id="c-git"),
             ToolCallSpec("mcp__demo__environment", {}, id="c-env"),
             ToolCallSpec("mcp__demo__echo", {"text": "word " * 5000}, id="c-big"),
             ToolCallSpec("mcp__demo__picture", {}, id="c-pic")]
    script = [Turn(reasoning="Ask the servers.", tool_calls=calls),
              Turn(reasoning="Done.", tool_calls=[ToolCallSpec("finish", {"summary": "asked"})])]
    with FakeKimi(script, api_key=KEY) as fake:
        proc = _run(repo, fake, env)
        requests = fake.requests
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "warning: MCP" not in proc.stderr
    # The MCP tools were in every request, after the built-ins, the same each time.
    names = _tool_names(requests[0])
    assert names.index("finish") < names.index("mcp__demo__echo")
    assert {"mcp__time__get_current_time", "mcp__git__git_status", "mcp__demo__environment"} <= set(names)
    assert all(r["tools"] == requests[0]["tools"] for r in requests)
    results = _tool_messages(requests[1])
    assert json.loads(results["c-time"])["timezone"] == "Etc/UTC"
    assert "-one" in results["c-git"] and "+two" in results["c-git"]
    env_names = results["c-env"].splitlines()
    assert "PATH" in env_names and "MOONSHOT_API_KEY" not in env_names and KEY not in results["c-env"]
    assert len(results["c-big"]) < 5000 and "tool-output budget" in results["c-big"]  # the budget applies
    # The image came back as an attachment of the next request.
    attached = [m for m in requests[1]["messages"] if m["role"] == "user" and isinstance(m["content"], list)]
    assert attached and attached[-1]["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert attached[-1]["content"][0]["text"] == "[kimi-code] Attached by mcp__demo__picture:"
    # The recorded tool list is the one sent.
    events = stream_events(proc.stdout)
    session_id = events[-1]["session_id"]
    session = SessionStore(tmp_path / "state").open(session_id)
    first = session.log.load()[0]
    assert first.payload["tools"] == requests[0]["tools"]
    assert KEY not in (session.root / "events.jsonl").read_text()


def test_servers_that_do_not_start(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"a.txt": "x\n"})
    missing = "kimi-code-test-no-such-mcp-server"
    env = _config(tmp_path, server_table("gone", missing) + server_table("demo", sys.executable, [str(DEMO)]))
    script = [Turn(reasoning="Finish.", tool_calls=[ToolCallSpec("finish", {"summary": "ok"})])]
    with FakeKimi(script, api_key=KEY) as fake:
        proc = _run(repo, fake, env)
        requests = fake.requests
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Reported once, with what to do; the run went on with the other server.
    assert proc.stderr.count(f"MCP server gone did not start: command '{missing}' not found") == 1
    assert "mcp__demo__echo" in _tool_names(requests[0])
    assert not any(n.startswith("mcp__gone__") for n in _tool_names(requests[0]))
    # Required: exit 2 with one clear line, before any session exists.
    env = _config(tmp_path, server_table("gone", missing, required="true"))
    with FakeKimi([], api_key=KEY) as fake:
        proc = _run(repo, fake, env)
        assert fake.request_count == 0
    assert proc.returncode == 2, proc.stderr
    assert f"error: the required MCP server gone did not start: command '{missing}' not found" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(SessionStore(tmp_path / "state").list()) == 1  # only the first run's


def test_a_repository_config_needs_trust(tmp_path: Path) -> None:
    start = (f"import pathlib, runpy, sys\npathlib.Path(__file__).with_name('started').write_text('yes')\n"
             f"sys.argv = [{str(DEMO)!r}]\nrunpy.run_path({str(DEMO)!r}, run_name='__main__')\n")
    repo = make_repo(tmp_path / "repo", {
        ".kimi-code/mcp.toml": server_table("repo", sys.executable, [".kimi-code/start.py"]),
        ".kimi-code/start.py": start, ".gitignore": "started\n"})
    marker = repo / ".kimi-code" / "started"
    env = cli_env(tmp_path)

    def run(*extra: str) -> tuple[Any, list[str]]:
        script = [Turn(reasoning="Finish.", tool_calls=[ToolCallSpec("finish", {"summary": "ok"})])]
        with FakeKimi(script, api_key=KEY) as fake:
            proc = _run(repo, fake, env, *extra)
            names = _tool_names(fake.requests[0]) if fake.requests else []
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc, names

    # A cloned repository cannot start programs by being opened.
    proc, names = run()
    assert not marker.exists() and "mcp__repo__echo" not in names
    assert "not trusted" in proc.stderr and "kimi-code mcp trust" in proc.stderr
    listed = run_cli(["mcp", "list", "--repo", str(repo), "--json"], env)
    assert listed.returncode == 0 and json.loads(listed.stdout)["state"] == "untrusted" and not marker.exists()
    # Once trusted, it is used (and by --trust-mcp for one run, without being trusted).
    proc, names = run("--trust-mcp")
    assert marker.exists() and "mcp__repo__echo" in names
    marker.unlink()
    trusted = run_cli(["mcp", "trust", "--repo", str(repo)], env)
    assert trusted.returncode == 0 and "repo:" in trusted.stdout, trusted.stderr
    assert str(repo.resolve()) in (tmp_path / "trusted-mcp.json").read_text()
    proc, names = run()
    assert marker.exists() and "mcp__repo__echo" in names and "not trusted" not in proc.stderr
    marker.unlink()
    # A changed file needs trusting again.
    with (repo / ".kimi-code" / "mcp.toml").open("a") as fh:
        fh.write('env = ["HOME"]\n')
    proc, names = run()
    assert not marker.exists() and "mcp__repo__echo" not in names and "changed since it was trusted" in proc.stderr
    assert run_cli(["mcp", "untrust", "--repo", str(repo)], env).returncode == 0
    assert str(repo.resolve()) not in (tmp_path / "trusted-mcp.json").read_text()


def test_a_resumed_session_keeps_its_tools_when_the_server_lost_one(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"a.txt": "x\n"})
    env = _config(tmp_path, server_table("demo", sys.executable, [str(DEMO)]))
    first = [Turn(reasoning="Echo.", tool_calls=[ToolCallSpec("mcp__demo__echo", {"text": "one"}, id="c1")]),
             Turn(reasoning="Never asked.", content="")]
    with FakeKimi(first, api_key=KEY) as fake:
        proc = run_cli(["run", "--repo", str(repo), "--base-url", fake.base_url, "--sandbox", "none", "--max-steps",
                        "1", "--output", "json", "echo things"], env, timeout=TIMEOUT)
        before = fake.requests
    assert proc.returncode == 3, proc.stderr[-3000:]
    session_id = json.loads(proc.stdout)["session_id"]
    # The server is upgraded and no longer has `echo`.
    env = _config(tmp_path, server_table("demo", sys.executable, [str(DEMO), "--without", "echo"]))
    second = [Turn(reasoning="Echo again.", tool_calls=[ToolCallSpec("mcp__demo__echo", {"text": "two"}, id="c2"),
                                                         ToolCallSpec("mcp__demo__add", {"a": 1, "b": 2}, id="c3")]),
              Turn(reasoning="Done.", tool_calls=[ToolCallSpec("finish", {"summary": "ok"})])]
    with FakeKimi(second, api_key=KEY) as fake:
        proc = run_cli(["resume", session_id, "--base-url", fake.base_url, "--output", "json"], env, timeout=TIMEOUT)
        after = fake.requests
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The tool list did not change mid-session; the lost tool answers with an error saying so.
    assert all(r["tools"] == before[0]["tools"] for r in after)
    assert "mcp__demo__echo" in _tool_names(after[0])
    results = _tool_messages(after[1])
    assert "no longer exists" in results["c2"] and "mcp__demo__echo" in results["c2"]
    assert json.loads(results["c3"]) == {"sum": 3}  # the server was started again
    events = SessionStore(tmp_path / "state").open(session_id).log.load()
    assert SessionState.fold(events).finished
    assert [e.payload["is_error"] for e in events if e.type == "tool_result" and e.payload["call_id"] == "c2"] == [True]


def test_mcp_list_and_doctor(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"a.txt": "x\n"})
    text = (server_table("time", reference_server("mcp-server-time"))
            + server_table("gone", "kimi-code-test-no-such-mcp-server", required="true")
            + server_table("off", "whatever", enabled="false")
            + server_table("boxed", "python3", ["s.py"], sandbox="true"))
    env = _config(tmp_path, text)
    proc = run_cli(["mcp", "list", "--repo", str(repo), "--json"], env, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in map(json.loads, proc.stdout.splitlines())}
    assert rows["time"]["state"] == "started" and "mcp__time__get_current_time" in [t["name"] for t in rows["time"]["tools"]]
    assert rows["gone"]["state"] == "failed" and "not found" in rows["gone"]["detail"] and rows["gone"]["required"]
    assert rows["off"]["state"] == "disabled" and rows["boxed"]["state"] == "sandbox"
    plain = run_cli(["mcp", "list", "--repo", str(repo), "--mcp", f"extra={reference_server('mcp-server-time')}"], env,
                    timeout=TIMEOUT)
    assert plain.returncode == 0 and "extra (user, stdio" in plain.stdout and "mcp__extra__convert_time" in plain.stdout

    from kimi_code.agent.doctor import run_checks

    checks = {c.name: c for c in run_checks({}, environ=env, config_path=tmp_path / "config.toml", workspace=repo)}
    assert checks["MCP server time"].status == "ok"
    assert checks["MCP server gone"].status == "fail" and "not found" in checks["MCP server gone"].detail
    assert checks["MCP server off"].status == "ok"


@pytest.mark.docker
@pytest.mark.slow
def test_a_stdio_server_inside_the_sandbox(tmp_path: Path, remove_containers_under: Path) -> None:
    # The offline image has python3 but not the SDK: the server is the standard-library one, in the repo.
    repo = make_repo(tmp_path / "repo", {"tools/mini_server.py": MINI.read_text()})
    env = _config(tmp_path, "[mcp_servers.mini]\ncommand = \"python3\"\n"
                  f"args = {toml_list(['tools/mini_server.py'])}\nsandbox = true\n"
                  f"env = {{ MINI_GREETING = {toml_str('hello')}, MOONSHOT_API_KEY = {toml_str('sk-no')} }}\n")
    script = [Turn(reasoning="Where?", tool_calls=[ToolCallSpec("mcp__mini__whereami", {}, id="w"),
                                                    ToolCallSpec("mcp__mini__write_note", {"name": "note.txt",
                                                                                            "text": "from mcp"},
                                                                 id="n"),
                                                    # A request larger than the socket buffers.
                                                    ToolCallSpec("mcp__mini__write_note", {"name": "big.txt",
                                                                                            "text": "y" * 400_000},
                                                                 id="b")]),
              Turn(reasoning="Done.", tool_calls=[ToolCallSpec("finish", {"summary": "ok"})])]
    with FakeKimi(script, api_key=KEY) as fake:
        proc = run_cli(["run", "--repo", str(repo), "--base-url", fake.base_url, *sandbox_args("docker"),
                        "--output", "stream-json", "where does it run"], env, timeout=TIMEOUT)
        requests = fake.requests
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = _tool_messages(requests[1])
    where = json.loads(results["w"])
    # It sees the workspace as the agent does, with the sandbox's network (none) and no API key.
    assert where["cwd"] == "/workspace" and where["hostname"] == "sandbox" and where["interfaces"] == ["lo"]
    assert where["greeting"] == "hello" and where["has_api_key"] is False
    assert results["n"] == "wrote /workspace/note.txt"
    assert (repo / "note.txt").read_text() == "from mcp"
    assert results["b"] == "wrote /workspace/big.txt" and (repo / "big.txt").stat().st_size == 400_000
    events = stream_events(proc.stdout)
    assert [e["payload"]["action"] for e in events if e["type"] == "sandbox"] == ["started"]
    import docker

    client = docker.from_env()
    assert not client.containers.list(all=True, filters={"label": f"kimi-code.session={events[-1]['session_id']}"})
    client.close()


def test_a_run_without_mcp_servers_does_not_import_the_sdk(tmp_path: Path) -> None:
    import subprocess

    from helpers import cli_cmd

    repo = make_repo(tmp_path / "repo", {"a.txt": "x\n"})
    script = [Turn(reasoning="Read.", tool_calls=[ToolCallSpec("read_file", {"path": "a.txt"})]),
              Turn(reasoning="Done.", tool_calls=[ToolCallSpec("finish", {"summary": "ok"})])]
    with FakeKimi(script, api_key=KEY) as fake:
        cmd = cli_cmd("run", "--repo", str(repo), "--base-url", fake.base_url, "--sandbox", "none", "task")
        proc = subprocess.run([cmd[0], "-X", "importtime", *cmd[1:]], env=cli_env(tmp_path), capture_output=True,
                              text=True, timeout=TIMEOUT, input="")
    assert proc.returncode == 0, proc.stderr[-3000:]
    imported = {line.rsplit("|", 1)[1].strip().split(".")[0] for line in proc.stderr.splitlines()
                if line.startswith("import time:") and line.count("|") == 2}
    assert "openai" in imported  # the parse saw the run's imports
    assert not imported & {"mcp", "mcp_types"}
