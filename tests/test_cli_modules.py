"""The modules the CLI delegates to, called directly: rewind, doctor, sessions prune; and the
CLI's start-up cost (`--help` and `sessions` import neither openai, docker, gitpython, the mcp SDK nor
prompt_toolkit)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import TEST_IMAGE, require_docker
from helpers import KEY, cli_env, empty_config, make_repo, run_cli
from kimi_code.agent import events as ev
from kimi_code.agent.doctor import Check, any_required_failed, run_checks
from kimi_code.agent.errors import CheckpointError, ConfigError, SessionError
from kimi_code.agent.events import Event
from kimi_code.agent.fake_kimi import FakeKimi, ToolCallSpec, Turn
from kimi_code.agent.prompts import rewind_notice
from kimi_code.agent.prune import prunable, remove_session
from kimi_code.agent.rewind import RewindResult, commit_at, rewind, rewind_events
from kimi_code.agent.state import SessionState
from kimi_code.agent.store import SessionMeta, SessionStore


# -- start-up imports ----------------------------------------------------------------------------
def _imported(args: list[str], tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MOONSHOT_", "KIMI_API", "KIMI_CODE_"))}
    env.update({"KIMI_CODE_STATE_DIR": str(tmp_path / "state"), "KIMI_CODE_CONFIG": str(empty_config(tmp_path))})
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "kimi_code.agent.cli", *args], env=env,
                          capture_output=True, text=True, timeout=60, input="")
    modules = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            name = line.rsplit("|", 1)[1].strip()
            if name and name != "imported package":
                modules.add(name)
    return proc, modules


@pytest.mark.parametrize("args", [["--help"], ["sessions"]], ids=["help", "sessions"])
def test_help_and_sessions_import_no_heavy_module(tmp_path: Path, args: list[str]) -> None:
    proc, modules = _imported(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "kimi_code.agent.cli" in modules or "kimi_code.agent" in modules  # the parse saw real output
    heavy = {"openai", "docker", "git", "mcp", "mcp_types", "prompt_toolkit"}
    tops = {m.split(".")[0] for m in modules}
    assert not tops & heavy, sorted(m for m in modules if m.split(".")[0] in heavy)


# -- rewind --------------------------------------------------------------------------------------
def _write(path: str, content: str, r: str) -> Turn:
    return Turn(reasoning=r, tool_calls=[ToolCallSpec("write_file", {"path": path, "content": content})])


def _three_step_session(tmp_path: Path) -> tuple[Path, Path, str]:
    """A session stopped by its step limit after writing a.txt, b.txt, c.txt in steps 1-3."""
    repo = make_repo(tmp_path / "repo", {"a.txt": "one\n"})
    env = cli_env(tmp_path)
    script = [_write("a.txt", "two\n", "s1"), _write("b.txt", "bee\n", "s2"), _write("c.txt", "sea\n", "s3")]
    with FakeKimi(script, api_key=KEY) as fake:
        proc = run_cli(["run", "--repo", str(repo), "--base-url", fake.base_url, "--sandbox", "none", "--output",
                        "json", "--max-steps", "3", "task"], env)
    assert proc.returncode == 3, proc.stderr
    return repo, tmp_path / "state", json.loads(proc.stdout)["session_id"]


def _events(state_dir: Path, sid: str) -> list[Event]:
    return SessionStore(state_dir).open(sid).log.load()


def test_rewind_restores_the_files_and_appends_one_rewind_event(tmp_path: Path) -> None:
    repo, state_dir, sid = _three_step_session(tmp_path)
    before = _events(state_dir, sid)
    state = SessionState.fold(before)
    result = rewind(state_dir, sid, 1, force=False)
    assert isinstance(result, RewindResult)
    assert result.session_id == sid and result.to_step == 1 and result.commit == commit_at(state, 1)
    assert sorted(result.restored) == ["b.txt", "c.txt"]
    assert (repo / "a.txt").read_text() == "two\n"
    assert not (repo / "b.txt").exists() and not (repo / "c.txt").exists()

    after = _events(state_dir, sid)
    assert after[:len(before)] == before  # appended only
    added = after[len(before):]
    assert [e.type for e in added] == [ev.REWIND, ev.CHECKPOINT, ev.USER_MESSAGE]
    assert [e.type for e in after].count(ev.REWIND) == 1
    assert [e.seq for e in added] == list(range(before[-1].seq + 1, before[-1].seq + 4))
    assert added[0].payload == {"to_step": 1, "commit": result.commit, "restored": result.restored}
    assert all(e.step == 1 for e in added)
    folded = SessionState.fold(after)
    assert folded.step == 1 and folded.last_checkpoint == added[1].payload["commit"]
    assert folded.messages[-1]["content"] == rewind_notice(1)
    meta = SessionStore(state_dir).open(sid).read_meta()
    assert meta.status == "interrupted" and meta.steps == 1


def test_rewind_refuses_outside_changes_and_bad_steps_without_writing(tmp_path: Path) -> None:
    repo, state_dir, sid = _three_step_session(tmp_path)
    before = _events(state_dir, sid)
    (repo / "a.txt").write_text("edited by the user\n")
    with pytest.raises(CheckpointError, match="a.txt"):
        rewind(state_dir, sid, 1, force=False)
    with pytest.raises(ConfigError, match="--to must be between 0 and 3"):
        rewind(state_dir, sid, 4)
    with pytest.raises(SessionError, match="no session 'nope'"):
        rewind(state_dir, "nope", 1)
    assert _events(state_dir, sid) == before and (repo / "c.txt").exists()
    # --force overwrites the outside change.
    result = rewind(state_dir, sid, 2, force=True)
    assert "a.txt" in result.restored and (repo / "a.txt").read_text() == "two\n" and (repo / "b.txt").exists()
    assert not (repo / "c.txt").exists()


def test_rewind_events_are_built_in_one_place() -> None:
    events = rewind_events(2, "abc", ["x.py"], None)
    assert [e.TYPE for e in events] == [ev.REWIND, ev.CHECKPOINT, ev.USER_MESSAGE]
    assert events[0].data() == {"to_step": 2, "commit": "abc", "restored": ["x.py"]}
    assert events[1].data() == {"commit": "abc", "changed": ["x.py"], "skipped": []}  # no head: the target
    assert rewind_events(2, "abc", [], "def")[1].data()["commit"] == "def"
    notice = events[2].data()
    assert notice["kind"] == "notice" and notice["message"] == {"role": "user", "content": rewind_notice(2)}
    assert notice["tokens"] > 0
    from kimi_code.agent.event_payloads import check_payload

    for event in events:  # each fits its declared payload model
        check_payload(event.TYPE, event.data())


def test_commit_at_takes_the_last_checkpoint_at_or_before() -> None:
    state = SessionState()
    state.checkpoints = {0: "base", 2: "two"}
    assert commit_at(state, 1) == "base" and commit_at(state, 3) == "two"
    state.checkpoints = {2: "two"}
    with pytest.raises(ConfigError, match="no checkpoint at or before step 1"):
        commit_at(state, 1)


# -- doctor --------------------------------------------------------------------------------------
def _doctor(tmp_path: Path, flags: dict, **env: str) -> dict[str, Check]:
    checks = run_checks(flags, environ=env, config_path=empty_config(tmp_path))
    assert len({c.name for c in checks}) == len(checks)
    return {c.name: c for c in checks}


def test_doctor_rows_for_a_working_endpoint(tmp_path: Path) -> None:
    with FakeKimi([], api_key=KEY) as fake:
        rows = _doctor(tmp_path, {"base_url": fake.base_url, "sandbox": "none"}, MOONSHOT_API_KEY=KEY)
    assert rows["config"].ok and rows["API key"].ok and rows["API key"].detail == "set"
    assert rows["endpoint"].ok and "kimi-k2.6 available" in rows["endpoint"].detail
    assert rows["git"].ok and rows["git"].required
    # Docker is only a warning with --sandbox none, whatever its state.
    assert not rows["docker"].required
    assert not any_required_failed(list(rows.values()))


def test_doctor_rows_for_a_missing_key(tmp_path: Path) -> None:
    rows = _doctor(tmp_path, {"sandbox": "none"})
    assert rows["config"].ok
    key = rows["API key"]
    assert (key.ok, key.required, key.status) == (False, True, "fail") and "MOONSHOT_API_KEY" in key.detail
    assert not rows["endpoint"].ok and "not checked without a key" in rows["endpoint"].detail
    assert any_required_failed(list(rows.values()))


def test_doctor_rows_for_a_rejected_key(tmp_path: Path) -> None:
    with FakeKimi([], api_key=KEY) as fake:
        rows = _doctor(tmp_path, {"base_url": fake.base_url, "sandbox": "none"}, MOONSHOT_API_KEY="sk-wrong")
    assert rows["API key"].ok  # set; the endpoint is what rejects it
    assert not rows["endpoint"].ok and "rejected" in rows["endpoint"].detail


@pytest.mark.parametrize("url", ["localhost:8000/v1", "ftp://example.com/v1"])
def test_doctor_a_bad_base_url_is_one_failed_config_row(tmp_path: Path, url: str) -> None:
    checks = run_checks({"base_url": url, "sandbox": "none"}, environ={"MOONSHOT_API_KEY": KEY},
                        config_path=empty_config(tmp_path))
    assert [(c.name, c.ok, c.required) for c in checks] == [("config", False, True)]
    assert "base" in checks[0].detail.lower() and any_required_failed(checks)


def test_doctor_an_unreachable_host_fails_the_endpoint_row(tmp_path: Path) -> None:
    rows = _doctor(tmp_path, {"base_url": "http://no-such-host.invalid/v1", "sandbox": "none"},
                   MOONSHOT_API_KEY=KEY)
    assert rows["config"].ok and rows["API key"].ok
    assert not rows["endpoint"].ok and rows["endpoint"].required


def test_doctor_docker_reachable_and_the_image(tmp_path: Path) -> None:
    require_docker()
    rows = _doctor(tmp_path, {"sandbox": "docker", "image": TEST_IMAGE}, MOONSHOT_API_KEY=KEY,
                   MOONSHOT_BASE_URL="http://no-such-host.invalid/v1")
    assert rows["docker"].ok and rows["docker"].required and "reachable" in rows["docker"].detail
    assert rows["sandbox image"].ok and rows["sandbox image"].detail == f"{TEST_IMAGE} present"
    missing = _doctor(tmp_path, {"sandbox": "docker", "image": "kimi-code-no-such-image:0"}, MOONSHOT_API_KEY=KEY,
                      MOONSHOT_BASE_URL="http://no-such-host.invalid/v1")["sandbox image"]
    assert (missing.ok, missing.status) == (False, "fail") and "not available" in missing.detail


def test_doctor_docker_unreachable_is_a_warning_without_the_docker_sandbox(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    for sandbox, status in (("none", "warn"), ("docker", "fail")):
        rows = _doctor(tmp_path, {"sandbox": sandbox}, MOONSHOT_API_KEY=KEY)
        assert rows["docker"].status == status and "sandbox image" not in rows


# -- sessions prune ------------------------------------------------------------------------------
def _session(store: SessionStore, sid: str, status: str, repo: Path) -> SessionMeta:
    meta = SessionMeta(id=sid, repo=str(repo), task="t", model="kimi-k2.6", status=status)
    store.create(meta, Event(type=ev.SESSION_STARTED, payload={"task": "t", "repo": str(repo)}))
    return meta


def test_prunable_selects_by_age_and_status(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "state")
    for sid, status in (("s-fin", "finished"), ("s-fail", "failed"), ("s-int", "interrupted")):
        _session(store, sid, status, tmp_path)
    assert prunable(store, 1.0) == []  # all too recent
    later = time.time() + 2 * 86400
    assert sorted(m.id for m in prunable(store, 1.0, now=later)) == ["s-fail", "s-fin"]
    assert sorted(m.id for m in prunable(store, 1.0, include_unfinished=True, now=later)) == ["s-fail", "s-fin",
                                                                                               "s-int"]
    assert sorted(m.id for m in prunable(store, 0.0)) == ["s-fail", "s-fin"]


def test_remove_session_deletes_it_and_reports_what_it_could_not_remove(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    store = SessionStore(tmp_path / "state")
    meta = _session(store, "s-gone", "finished", tmp_path / "no-such-repo")
    kept = _session(store, "s-kept", "finished", tmp_path / "no-such-repo")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    warnings = remove_session(store, meta)
    assert [w.split(":")[0] for w in warnings] == ["refs of s-gone not pruned", "container of s-gone not removed"]
    assert not (store.state_dir / "s-gone").exists() and [m.id for m in store.list()] == [kept.id]


def test_remove_session_prunes_the_checkpoint_refs(tmp_path: Path) -> None:
    repo, state_dir, sid = _three_step_session(tmp_path)
    refs = lambda: subprocess.run(["git", "-C", str(repo), "for-each-ref", "refs/kimi-code/"],  # noqa: E731
                                  capture_output=True, text=True).stdout
    assert sid in refs()
    store = SessionStore(state_dir)
    (meta,) = prunable(store, 0.0, include_unfinished=True)
    warnings = remove_session(store, meta)
    assert not any(w.startswith("refs of") for w in warnings)
    assert sid not in refs() and store.list() == []


def test_prune_refuses_an_age_that_is_not_a_number_of_days(tmp_path: Path) -> None:
    from helpers import cli_env, run_cli

    for bad in ("nan", "-1", "inf"):
        proc = run_cli(["sessions", "prune", "--older-than", bad], cli_env(tmp_path))
        assert proc.returncode == 2 and "--older-than" in proc.stderr, (bad, proc.stderr)


def test_brackets_in_a_task_are_text_not_markup(tmp_path: Path) -> None:
    from helpers import KEY, cli_env, make_repo, run_cli
    from kimi_code.agent.fake_kimi import FakeKimi, ToolCallSpec, Turn

    repo = make_repo(tmp_path / "repo", {"a": "b\n"})
    env = cli_env(tmp_path)
    with FakeKimi([Turn(reasoning="f", tool_calls=[ToolCallSpec("finish", {"summary": "ok"})])], api_key=KEY) as fake:
        ran = run_cli(["run", "--repo", str(repo), "--base-url", fake.base_url, "--sandbox", "none", "--output",
                       "json", "fix [/tmp/x] and [bold]"], env)
        assert ran.returncode == 0, ran.stderr
    proc = run_cli(["sessions"], env)
    assert proc.returncode == 0, proc.stderr
    assert "[/tmp/x]" in proc.stdout and "[bold]" in proc.stdout
    # In an 80-column terminal the id, which show/resume/diff take, still comes out whole.
    narrow = run_cli(["sessions"], {**env, "COLUMNS": "80"})
    assert json.loads(ran.stdout)["session_id"] in narrow.stdout
