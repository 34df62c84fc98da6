"""The MCP client against real servers, started as users start them: the reference servers
mcp-server-time and mcp-server-git over stdio, an SDK server over stdio and over streamable HTTP
on 127.0.0.1, a standard-library server that answers badly. Faults: a tool timeout, a crash in
the middle of a call, a server that is not installed, a malformed answer."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import make_repo
from kimi_code.tools.mcp_client import McpManager, StartReport, host_launch
from kimi_code.tools.mcp_config import McpServerConfig
from kimi_code.tools.mcp_tools import register_listed
from kimi_code.tools.registry import ToolContext, ToolRegistry
from mcp_fixtures import DEMO, MINI, http_demo_server, reference_server

SECRETS = frozenset({"MOONSHOT_API_KEY", "KIMI_API_KEY"})


@pytest.fixture
def manager() -> Iterator[McpManager]:
    m = McpManager()
    yield m
    m.close()


def start(manager: McpManager, workspace: Path, servers: dict[str, McpServerConfig],
          environ: dict[str, str] | None = None) -> tuple[ToolRegistry, dict[str, StartReport]]:
    """Start ``servers`` and register their tools in a fresh registry, as the assembly does."""
    env = dict(os.environ if environ is None else environ)
    reports = manager.start([host_launch(n, c, workspace, env, SECRETS) for n, c in servers.items()])
    registry = ToolRegistry()
    for report in reports:
        if report.ok:
            register_listed(registry, report.name, report.tools, manager, warn=lambda text: None)
    return registry, {r.name: r for r in reports}


def call(registry: ToolRegistry, name: str, tmp_path: Path, **args: object):
    return registry.run(name, json.dumps(args), ToolContext(workspace=tmp_path, sandbox=None))  # type: ignore[arg-type]


def demo(*args: str, **config: object) -> McpServerConfig:
    return McpServerConfig(command=sys.executable, args=[str(DEMO), *args], **config)


def test_reference_servers_over_stdio(manager: McpManager, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"a.txt": "one\n"})
    (repo / "a.txt").write_text("two\n")
    registry, reports = start(manager, repo, {
        "time": McpServerConfig(command=reference_server("mcp-server-time")),
        "git": McpServerConfig(command=reference_server("mcp-server-git"), args=["--repository", str(repo)],
                               exclude_tools=["git_reset"]),
    })
    assert reports["time"].ok and reports["git"].ok, reports
    assert "mcp__time__get_current_time" in registry and "mcp__git__git_status" in registry
    assert "mcp__git__git_reset" not in registry  # exclude_tools
    # The server's description and schema, in the shape Kimi takes (no titles).
    spec = registry.spec("mcp__time__get_current_time")
    assert spec.description and spec.parameters["required"] == ["timezone"]
    assert "title" not in json.dumps(spec.parameters)
    now = call(registry, "mcp__time__get_current_time", tmp_path, timezone="Etc/UTC")
    assert not now.is_error and json.loads(now.text)["timezone"] == "Etc/UTC"
    bad_zone = call(registry, "mcp__time__get_current_time", tmp_path, timezone="Not/AZone")
    assert bad_zone.is_error and "Not/AZone" in bad_zone.text
    diff = call(registry, "mcp__git__git_diff_unstaged", tmp_path, repo_path=str(repo))
    assert not diff.is_error and "-one" in diff.text and "+two" in diff.text
    # Read-only tools (readOnlyHint) may run concurrently; the others run alone.
    assert registry.is_read_only("mcp__git__git_status", "{}")
    assert not registry.is_read_only("mcp__git__git_commit", "{}")
    # Arguments are checked against the schema before the server sees them.
    missing = call(registry, "mcp__git__git_status", tmp_path)
    assert missing.is_error and "repo_path" in missing.text


def test_results_text_structured_image_and_error(manager: McpManager, tmp_path: Path) -> None:
    registry, reports = start(manager, tmp_path, {"demo": demo()})
    assert reports["demo"].ok, reports
    assert call(registry, "mcp__demo__echo", tmp_path, text="hi").text == "echo: hi"
    added = call(registry, "mcp__demo__add", tmp_path, a=2, b=3)
    assert not added.is_error and json.loads(added.text) == {"sum": 5}
    picture = call(registry, "mcp__demo__picture", tmp_path)
    assert "PNG image attached" in picture.text
    assert picture.attachments[0]["image_url"]["url"].startswith("data:image/png;base64,")
    failed = call(registry, "mcp__demo__fail", tmp_path, message="it broke")
    assert failed.is_error and "it broke" in failed.text


def test_read_only_calls_run_at_the_same_time(manager: McpManager, tmp_path: Path) -> None:
    # `meet` answers "met" only when both calls are in progress at once (else "alone" after a minute).
    registry, _ = start(manager, tmp_path, {"demo": demo()})
    args = json.dumps({"key": "k", "count": 2})
    assert registry.is_read_only("mcp__demo__meet", args) and not registry.is_read_only("mcp__demo__add", "{}")
    results = registry.run_calls([("mcp__demo__meet", args)] * 2, ToolContext(workspace=tmp_path, sandbox=None))  # type: ignore[arg-type]
    assert [r.text for r in results] == ["met", "met"]


def test_a_call_over_tool_timeout_is_cancelled_and_the_server_goes_on(manager: McpManager, tmp_path: Path) -> None:
    registry, _ = start(manager, tmp_path, {"demo": demo(tool_timeout=1.0)})
    slow = call(registry, "mcp__demo__sleep", tmp_path, seconds=300)
    assert slow.is_error and "tool_timeout" in slow.text and "cancelled" in slow.text
    assert call(registry, "mcp__demo__echo", tmp_path, text="still here").text == "echo: still here"


def test_a_server_that_crashes_mid_call_is_restarted_once(manager: McpManager, tmp_path: Path) -> None:
    registry, _ = start(manager, tmp_path, {"demo": demo()})
    first_pid = call(registry, "mcp__demo__pid", tmp_path).text
    crashed = call(registry, "mcp__demo__crash", tmp_path)
    assert crashed.is_error and "stopped during the call" in crashed.text
    assert "crashing on purpose" in crashed.text  # its last words, from its stderr
    assert "restarted" in crashed.text and "not repeated" in crashed.text
    second_pid = call(registry, "mcp__demo__pid", tmp_path)
    assert not second_pid.is_error and second_pid.text != first_pid
    again = call(registry, "mcp__demo__crash", tmp_path)
    assert again.is_error and "not restarted again" in again.text
    gone = call(registry, "mcp__demo__echo", tmp_path, text="x")
    assert gone.is_error and "unavailable" in gone.text


def test_start_faults_are_reported_and_the_others_start(manager: McpManager, tmp_path: Path) -> None:
    broken = tmp_path / "broken_server.py"
    broken.write_text("import sys\nsys.stderr.write('ImportError: no module named missing_dependency\\n')\nsys.exit(1)\n")
    registry, reports = start(manager, tmp_path, {
        "absent": McpServerConfig(command="kimi-code-test-no-such-mcp-server"),
        "broken": McpServerConfig(command=sys.executable, args=[str(broken)]),
        "silent": McpServerConfig(command=sys.executable, args=["-c", "import time; time.sleep(600)"],
                                  startup_timeout=2),
        "demo": demo(),
    })
    assert reports["demo"].ok
    assert not reports["absent"].ok and "kimi-code-test-no-such-mcp-server" in (reports["absent"].error or "")
    assert "not found" in (reports["absent"].error or "")
    assert not reports["broken"].ok and "missing_dependency" in (reports["broken"].error or "")
    assert not reports["silent"].ok and "startup_timeout" in (reports["silent"].error or "")
    assert [n for n in registry.names if not n.startswith("mcp__demo__")] == []


def test_a_malformed_answer_is_an_error_result(manager: McpManager, tmp_path: Path) -> None:
    registry, reports = start(manager, tmp_path, {"mini": McpServerConfig(command=sys.executable, args=[str(MINI)])})
    assert reports["mini"].ok, reports
    broken = call(registry, "mcp__mini__broken", tmp_path)
    assert broken.is_error and "malformed" in broken.text and "Traceback" not in broken.text
    assert json.loads(call(registry, "mcp__mini__whereami", tmp_path).text)["cwd"] == str(tmp_path)


def test_host_servers_get_an_environment_allow_list(manager: McpManager, tmp_path: Path) -> None:
    environ = {**os.environ, "MOONSHOT_API_KEY": "sk-must-not-leak", "UNRELATED_SECRET": "x", "PASSED_ON": "yes"}
    (tmp_path / "sub").mkdir()
    registry, _ = start(manager, tmp_path, {
        "plain": demo(),
        "named": demo(env=["PASSED_ON", "MOONSHOT_API_KEY"]),  # the config may pass a key explicitly
        "valued": demo(env={"SET_HERE": "1"}, cwd="sub"),
    }, environ)
    plain = call(registry, "mcp__plain__environment", tmp_path).text.splitlines()
    assert plain[0] == f"cwd={tmp_path}"
    assert "PATH" in plain and "MOONSHOT_API_KEY" not in plain and "UNRELATED_SECRET" not in plain
    named = call(registry, "mcp__named__environment", tmp_path).text.splitlines()
    assert "PASSED_ON" in named and "MOONSHOT_API_KEY" in named and "UNRELATED_SECRET" not in named
    valued = call(registry, "mcp__valued__environment", tmp_path).text.splitlines()
    assert valued[0] == f"cwd={tmp_path / 'sub'}" and "SET_HERE" in valued


def test_streamable_http_server_with_a_bearer_token(manager: McpManager, tmp_path: Path) -> None:
    with http_demo_server(tmp_path, token="tok-123") as url:
        registry, reports = start(manager, tmp_path, {
            "web": McpServerConfig(url=url, bearer_token_env="DEMO_TOKEN", include_tools=["echo", "sleep"],
                                   tool_timeout=1.0),
            "nokey": McpServerConfig(url=url, startup_timeout=10),
        }, {**os.environ, "DEMO_TOKEN": "tok-123"})
        assert reports["web"].ok, reports
        assert not reports["nokey"].ok  # the server answers 401 without the token
        assert sorted(registry.names) == ["mcp__web__echo", "mcp__web__sleep"]  # include_tools
        assert call(registry, "mcp__web__echo", tmp_path, text="over http").text == "echo: over http"
        slow = call(registry, "mcp__web__sleep", tmp_path, seconds=300)
        assert slow.is_error and "tool_timeout" in slow.text
        assert call(registry, "mcp__web__echo", tmp_path, text="again").text == "echo: again"
    # The server is gone: the call says so (a reconnect is tried once), no traceback.
    lost = call(registry, "mcp__web__echo", tmp_path, text="anyone?")
    assert lost.is_error and "web" in lost.text and "Traceback" not in lost.text
    from kimi_code.tools.mcp_client import LaunchError

    with pytest.raises(LaunchError, match="DEMO_TOKEN"):
        host_launch("web", McpServerConfig(url="http://127.0.0.1:1/mcp", bearer_token_env="DEMO_TOKEN"), tmp_path,
                    {}, SECRETS)
