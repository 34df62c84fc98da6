"""MCP pieces without a server: schema normalisation, the config type and its files and flags,
tool names, and CallToolResult -> tool result (built from the SDK's own models)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from kimi_code.agent.config import load_settings, mcp_flag_servers, parse_mcp_flag, read_mcp_file
from kimi_code.agent.errors import ConfigError
from kimi_code.tools.mcp_config import McpServerConfig, check_server_name
from kimi_code.tools.mcp_tools import MAX_NAME, exposed_name, server_of
from kimi_code.tools.registry import TOOL_NAME_RE, ToolRegistry, check_schema
from kimi_code.tools.schema import external_schema

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


# -- schemas -------------------------------------------------------------------------------------
def test_external_schema_keeps_meaning_and_gives_every_node_a_type() -> None:
    # The shapes real servers send: pydantic titles, Optional as anyOf+null, $defs with a
    # recursive reference, true unions, untyped properties, const, draft-4 tuples, allOf.
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema", "title": "args", "type": "object",
        "properties": {
            "repo_path": {"title": "Repo Path", "type": "string"},
            "since": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None, "description": "when"},
            "either": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
            "anything": {},
            "node": {"$ref": "#/$defs/Node"},
            "mode": {"const": "fast"},
            "pair": {"type": "array", "items": [{"type": "string"}, {"type": "integer"}]},
            "merged": {"allOf": [{"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
                                 {"properties": {"b": {"type": "string"}}}]},
            "nullable": {"type": ["string", "null"]},
        },
        "required": ["repo_path"],
        "$defs": {"Node": {"type": "object", "properties": {"child": {"$ref": "#/$defs/Node"}}}},
    }
    out = external_schema(schema)
    assert check_schema(out) == []
    props = out["properties"]
    assert out["required"] == ["repo_path"] and "title" not in out and "$schema" not in out and "$defs" not in out
    assert props["repo_path"] == {"type": "string"}
    assert props["since"] == {"type": "string", "description": "when"}  # no null default, no anyOf
    assert props["either"]["type"] == ["string", "integer"]
    assert props["anything"]["type"] == ["string", "number", "integer", "boolean", "object", "array"]
    assert props["node"]["type"] == "object" and props["node"]["properties"]["child"]["type"] == "object"
    assert props["mode"] == {"type": "string", "enum": ["fast"]}
    assert [p["type"] for p in props["pair"]["prefixItems"]] == ["string", "integer"]
    assert set(props["merged"]["properties"]) == {"a", "b"} and props["merged"]["required"] == ["a"]
    assert props["nullable"]["type"] == "string"
    # What it produces is accepted by the registry and validates calls against the same schema.
    reg = ToolRegistry()
    reg.register_external("mcp__x__t", "d", out, lambda args, ctx: "ok")
    assert reg.run("mcp__x__t", '{"repo_path": "/r", "either": 3}', None).text == "ok"  # type: ignore[arg-type]
    bad = reg.run("mcp__x__t", '{"repo_path": 5}', None)  # type: ignore[arg-type]
    assert bad.is_error and "repo_path" in bad.text


@pytest.mark.parametrize("schema", [None, {}, {"type": "string"}, {"oneOf": []}, {"$ref": "#/nowhere"}, [1, 2]])
def test_external_schema_of_anything_is_an_object_schema(schema: object) -> None:
    out = external_schema(schema)
    assert out["type"] == "object" and check_schema(out) == []


# -- names ---------------------------------------------------------------------------------------
def test_tool_names_fit_kimi_and_name_their_server() -> None:
    assert exposed_name("git", "git_status") == "mcp__git__git_status"
    odd = exposed_name("docs", "search.v2/fast")
    assert TOOL_NAME_RE.match(odd) and odd.startswith("mcp__docs__search_v2_fast_")
    assert odd == exposed_name("docs", "search.v2/fast")  # stable: the same tool, the same name
    assert odd != exposed_name("docs", "search_v2_fast")  # and no clash with a tool already so named
    long = exposed_name("server", "x" * 200)
    assert len(long) <= MAX_NAME and TOOL_NAME_RE.match(long)
    assert server_of(odd) == "docs" and server_of(long) == "server" and server_of("read_file") is None
    for bad in ("a__b", "", "-x", "x_", "a b", "x" * 30):
        with pytest.raises(ValueError):
            check_server_name(bad)


# -- config --------------------------------------------------------------------------------------
def test_server_config_is_either_stdio_or_http() -> None:
    assert McpServerConfig(command="srv", args=["-v"]).transport == "stdio"
    assert McpServerConfig(url="http://127.0.0.1:9/mcp", bearer_token_env="T").transport == "http"
    for bad in ({}, {"command": "a", "url": "http://h/mcp"}, {"url": "ftp://h"}, {"command": "a", "headers": {"a": "b"}},
                {"url": "http://h/mcp", "args": ["x"]}, {"command": "a", "tool_timeout": 0}, {"command": "a", "typo": 1}):
        with pytest.raises(ValueError):
            McpServerConfig.model_validate(bad)
    config = McpServerConfig(command="a", include_tools=["x", "y"], exclude_tools=["y"])
    assert [t for t in ("x", "y", "z") if config.wants(t)] == ["x"]


def test_config_file_servers_merge_with_flag_servers_and_stay_out_of_printed_settings(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('model = "kimi-k2.6"\n[mcp_servers.time]\ncommand = "mcp-server-time"\n'
                    '[mcp_servers.docs]\nurl = "http://127.0.0.1:8/mcp"\nheaders = { X-Token = "secret-header" }\n'
                    '[mcp_servers.git]\ncommand = "mcp-server-git"\nenv = { GIT_TOKEN = "secret-value" }\n')
    extra = tmp_path / "more.toml"
    extra.write_text('[mcp_servers.time]\ncommand = "other-time"\nenabled = false\n')
    flags = mcp_flag_servers(["echo=python3 -m echo --loud", "web=https://example.invalid/mcp"], [extra])
    settings = load_settings({"mcp_servers": flags}, environ={}, config_path=path)
    assert sorted(settings.mcp_servers) == ["docs", "echo", "git", "time", "web"]
    assert settings.mcp_servers["time"].command == "other-time" and not settings.mcp_servers["time"].enabled
    assert settings.mcp_servers["echo"].args == ["-m", "echo", "--loud"]
    assert settings.mcp_servers["web"].url == "https://example.invalid/mcp"
    printed = str(settings.public_dict())
    assert "secret-header" not in printed and "secret-value" not in printed and "mcp_servers" not in printed
    assert load_settings({}, environ={}, config_path=path).mcp_servers["time"].command == "mcp-server-time"


@pytest.mark.parametrize("text, message", [
    ('[mcp_servers.a]\nurl = "http://h/mcp"\ncommand = "x"\n', "either command"),
    ('[mcp_servers."a b"]\ncommand = "x"\n', "MCP server name"),
    ('[mcp_servers.a]\ncommand = "x"\nstartup_timeout = "soon"\n', "startup_timeout"),
    ('mcp_servers = 3\n', "must be a table"),
])
def test_bad_mcp_config_is_one_clear_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings({}, environ={}, config_path=path)
    assert message in str(info.value) and str(path) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ConfigError):
        read_mcp_file(path)


def test_mcp_file_holds_only_servers_and_flags_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "mcp.toml"
    path.write_text('model = "x"\n[mcp_servers.a]\ncommand = "x"\n')
    with pytest.raises(ConfigError, match="may only hold"):
        read_mcp_file(path)
    with pytest.raises(ConfigError, match="does not exist"):
        read_mcp_file(tmp_path / "missing.toml")
    for bad in ("noequals", "=cmd", "a=", "a__b=cmd", "x=a 'b"):
        with pytest.raises(ConfigError, match="--mcp"):
            parse_mcp_flag(bad)
    assert mcp_flag_servers(None, None) is None


# -- results -------------------------------------------------------------------------------------
def test_call_results_become_tool_results() -> None:
    from mcp import types

    from kimi_code.tools.mcp_results import tool_result

    png = base64.b64encode(PNG).decode()
    result = types.CallToolResult(content=[
        types.TextContent(text="first"),
        types.ImageContent(data=png, mime_type="image/png"),
        types.ImageContent(data="bm90IGFuIGltYWdl", mime_type="image/png"),
        types.AudioContent(data="AAAA", mime_type="audio/wav"),
        types.EmbeddedResource(resource=types.TextResourceContents(uri="file:///a.txt", text="inside")),
        types.ResourceLink(uri="file:///b.bin", name="b"),
    ], structured_content={"n": 1})
    out = tool_result(result, server="s", tool="t")
    assert not out.is_error and out.metadata == {"mcp": {"server": "s", "tool": "t"}}
    lines = out.text.splitlines()
    assert lines[0] == "first" and "[PNG image attached" in lines[1] and "not a PNG" in lines[2]
    assert "audio is not supported" in lines[3] and "[resource file:///a.txt]" in out.text and "inside" in out.text
    assert "[resource link: file:///b.bin (b)]" in out.text and '"n": 1' in out.text
    assert out.attachments == [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}}]
    # Structured content the text already says is not repeated; isError is the result's error flag.
    same = tool_result(types.CallToolResult(content=[types.TextContent(text='{"n": 1}')], structured_content={"n": 1}),
                       server="s", tool="t")
    assert same.text == '{"n": 1}'
    failed = tool_result(types.CallToolResult(content=[], is_error=True), server="s", tool="t")
    assert failed.is_error and failed.text
