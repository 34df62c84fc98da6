"""Configuration precedence, secrets handling, and the small CLI commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import KEY, cli_env, make_repo, run_cli
from kimi_code.agent.config import MODELS, load_settings, model_info
from kimi_code.agent.errors import ConfigError
from kimi_code.agent.fake_kimi import FakeKimi, ToolCallSpec, Turn


def test_precedence_file_then_env_then_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('model = "kimi-k2.5"\nmax_output_tokens = 1000\nimage = "from-file"\n')
    env = {"KIMI_CODE_MAX_OUTPUT_TOKENS": "2000", "KIMI_CODE_IMAGE": "from-env", "MOONSHOT_API_KEY": "sk-env"}
    s = load_settings({"image": "from-flag", "model": None}, environ=env, config_path=cfg)
    assert s.model == "kimi-k2.5"  # file (no env, flag unset)
    assert s.max_output_tokens == 2000  # env beats file
    assert s.image == "from-flag"  # flag beats env
    assert s.require_api_key() == "sk-env"
    assert s.effective_base_url == "https://api.moonshot.ai/v1"
    assert load_settings({}, environ={"KIMI_API_KEY": "sk-k"}, config_path=cfg).require_api_key() == "sk-k"
    assert load_settings({}, environ={"MOONSHOT_BASE_URL": "http://h:1/v1/"}, config_path=cfg).effective_base_url \
        == "http://h:1/v1"


def test_key_optional_only_for_self_hosted_endpoints(tmp_path: Path) -> None:
    none = tmp_path / "none.toml"
    hosted = load_settings({}, environ={}, config_path=none)
    with pytest.raises(ConfigError, match="no API key: set MOONSHOT_API_KEY"):
        hosted.require_api_key()
    with pytest.raises(ConfigError):  # a preset's own URL given explicitly still needs its key
        load_settings({"base_url": "https://api.moonshot.cn/v1"}, environ={}, config_path=none).require_api_key()
    local = load_settings({"base_url": "http://127.0.0.1:8000/v1"}, environ={}, config_path=none)
    assert local.require_api_key() == "not-needed"
    assert load_settings({"provider": "openai-compatible", "base_url": "http://gpu:8000/v1"}, environ={},
                         config_path=none).require_api_key() == "not-needed"


def test_bad_config_is_one_clear_error(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text("modle = 1\n")
    with pytest.raises(ConfigError, match="unknown key.*modle"):
        load_settings({}, environ={}, config_path=cfg)
    cfg.write_text("this is not toml ==\n")
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings({}, environ={}, config_path=cfg)
    with pytest.raises(ConfigError, match="needs a base URL"):
        load_settings({"provider": "openai-compatible"}, environ={}, config_path=tmp_path / "x").effective_base_url


def test_model_table_prices_and_provider_ids() -> None:
    k26 = MODELS["kimi-k2.6"]
    assert (k26.price_input, k26.price_cached_input, k26.price_output) == (0.95, 0.16, 4.00)
    assert (MODELS["kimi-k2.5"].price_input, MODELS["kimi-k2.5"].price_output) == (0.60, 3.00)
    # 1M fresh input + 1M cached + 1M output
    assert k26.cost(2_000_000, 1_000_000, 1_000_000) == pytest.approx(0.95 + 0.16 + 4.00)
    assert model_info("moonshotai/kimi-k2.6").price_input == 0.95
    s = load_settings({"provider": "openrouter"}, environ={"OPENROUTER_API_KEY": "x"}, config_path=Path("/nonexistent"))
    assert s.wire_model == "moonshotai/kimi-k2.6" and s.require_api_key() == "x"


def test_key_never_printed(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    proc = run_cli(["config", "show"], env)
    assert proc.returncode == 0
    data = json.loads(proc.stdout)
    assert data["api_key"] == "set" and KEY not in proc.stdout + proc.stderr


def test_doctor_reports_and_exit_codes(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    with FakeKimi([], api_key=KEY) as fake:
        ok = run_cli(["doctor", "--base-url", fake.base_url, "--sandbox", "none"], env)
        bad_key = run_cli(["doctor", "--base-url", fake.base_url, "--sandbox", "none"],
                          {**env, "MOONSHOT_API_KEY": "sk-wrong"})
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "endpoint" in ok.stdout and "FAIL" not in ok.stdout
    assert bad_key.returncode == 1 and "rejected" in bad_key.stdout
    no_key = {k: v for k, v in env.items() if k != "MOONSHOT_API_KEY"}
    proc = run_cli(["doctor", "--sandbox", "none"], no_key)
    assert proc.returncode == 1 and "MOONSHOT_API_KEY" in proc.stdout


def test_sessions_list_and_show(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"a.txt": "x\n"})
    env = cli_env(tmp_path)
    script = [Turn(reasoning="secret plan", content="Reading.", tool_calls=[ToolCallSpec("read_file", {"path": "a.txt"})]),
              Turn(reasoning="done", tool_calls=[ToolCallSpec("finish", {"summary": "All read."})])]
    with FakeKimi(script, api_key=KEY) as fake:
        proc = run_cli(["run", "--repo", str(repo), "--base-url", fake.base_url, "--sandbox", "none", "--output",
                        "json", "read a.txt"], env)
    sid = json.loads(proc.stdout)["session_id"]
    listing = run_cli(["sessions", "--json"], env)
    metas = [json.loads(line) for line in listing.stdout.splitlines()]
    assert [m["id"] for m in metas] == [sid]
    assert metas[0]["status"] == "finished" and metas[0]["steps"] == 2 and metas[0]["cost"] > 0
    shown = run_cli(["show", sid], env)
    assert "read_file" in shown.stdout and "All read." in shown.stdout and "secret plan" not in shown.stdout
    assert "secret plan" in run_cli(["show", sid, "--reasoning"], env).stdout
    missing = run_cli(["show", "nope"], env)
    assert missing.returncode == 2 and "no session" in missing.stderr
    # No secret in anything stored.
    for f in (tmp_path / "state").rglob("*"):
        if f.is_file():
            assert KEY.encode() not in f.read_bytes()


@pytest.mark.parametrize("url", ["localhost:8000/v1", "not a url", "ftp://example.com/v1", "http://", "http:///v1",
                                 "file:///etc/passwd", "http://h:99999/v1", "//api.moonshot.ai/v1"])
def test_unusable_base_url_is_a_config_error_naming_it(tmp_path: Path, url: str) -> None:
    none = tmp_path / "none.toml"
    for flags, environ in (({"base_url": url}, {}), ({}, {"MOONSHOT_BASE_URL": url}), ({}, {"KIMI_CODE_BASE_URL": url})):
        with pytest.raises(ConfigError, match="invalid setting base_url: base URL") as info:
            load_settings(flags, environ=environ, config_path=none)
        assert repr(url) in str(info.value) and "\n" not in str(info.value)
    if url == "localhost:8000/v1":
        with pytest.raises(ConfigError, match="did you mean http://localhost:8000/v1"):
            load_settings({"base_url": url}, environ={}, config_path=none)


@pytest.mark.parametrize("url", ["http://localhost:8000/v1", "https://api.moonshot.ai/v1", "HTTP://GPU:8000/v1/",
                                 "http://[::1]:8000/v1", "http://10.0.0.2"])
def test_http_base_urls_are_accepted(tmp_path: Path, url: str) -> None:
    assert load_settings({"base_url": url}, environ={}, config_path=tmp_path / "none.toml").base_url == url


def test_config_env_naming_a_missing_file_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "typo.toml"
    with pytest.raises(ConfigError, match=f"config file {missing} .*does not exist"):
        load_settings({}, environ={"KIMI_CODE_CONFIG": str(missing)})
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    assert load_settings({}, environ={"KIMI_CODE_CONFIG": str(empty)}).model == "kimi-k2.6"
    # Without the variable, the default location may be absent.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert load_settings({}, environ={}).model == "kimi-k2.6"
    proc = run_cli(["config", "show"], {**cli_env(tmp_path), "KIMI_CODE_CONFIG": str(missing)})
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"error: config file {missing} (from KIMI_CODE_CONFIG) does not exist"]


def test_cli_env_config_file_exists(tmp_path: Path) -> None:
    """The tests isolate the CLI from the user's config with an existing empty file (a missing
    one is an error now)."""
    path = Path(cli_env(tmp_path)["KIMI_CODE_CONFIG"])
    assert path.is_file() and path.read_text() == ""


@pytest.mark.parametrize("key", ["sk-ü-key", "sk-a b", "sk-a\nb", "sk-\x00"])
def test_unusable_api_key_is_a_config_error_without_showing_it(tmp_path: Path, key: str) -> None:
    s = load_settings({}, environ={"MOONSHOT_API_KEY": key}, config_path=tmp_path / "none.toml")
    with pytest.raises(ConfigError, match="API key contains") as info:
        s.require_api_key()
    assert key not in str(info.value)
    assert load_settings({}, environ={"MOONSHOT_API_KEY": " sk-ok\n"},
                         config_path=tmp_path / "none.toml").require_api_key() == "sk-ok"


@pytest.mark.parametrize("values", [{}, {"max_output_tokens": 100_000}, {"max_output_tokens": 256},
                                    {"context_window": 8192}, {"context_window": 4096, "max_output_tokens": 4000},
                                    {"model": "my-local-model"}])
def test_output_reserve_is_the_loops_max_output(values: dict) -> None:
    """The CLI's task-size check reserves what every request asks for (AgentLoop.max_output)."""
    from types import SimpleNamespace

    from kimi_code.agent.config import Settings
    from kimi_code.agent.loop import AgentLoop

    s = Settings(**values)
    assert s.output_reserve == AgentLoop.max_output(SimpleNamespace(settings=s))
    assert s.input_budget == s.model_info.context_window - s.output_reserve


def test_the_readme_settings_table_names_every_setting() -> None:
    """Every setting a user can put in the file is in the README's table (the one place a user
    looks), and the table names no setting that does not exist."""
    import re

    from kimi_code.agent.config import Settings

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    table = readme.split("| setting | default | meaning |", 1)[1].split("\n\n", 1)[0]
    named = {n for cell in re.findall(r"^\| ([^|]+) \|", table, re.M) for n in re.findall(r"`\[?(\w+)", cell)}
    fields = set(Settings.model_fields) - {"api_key"}  # the key is read from the environment only
    assert fields - named == set(), "settings missing from the README table"
    assert named - fields == set(), "table rows that are not settings"
