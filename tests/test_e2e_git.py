"""End-to-end git features through the CLI: --branch, --patch-out, diff, rewind, drift, CI retries."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from helpers import KEY, cli_env, git, make_repo, run_cli
from kimi_code.agent.fake_kimi import FakeKimi, ToolCallSpec, Turn


def _write(path: str, content: str, r: str = "") -> Turn:
    return Turn(reasoning=r or f"write {path}", tool_calls=[ToolCallSpec("write_file", {"path": path, "content": content})])


def _finish(summary: str = "done") -> Turn:
    return Turn(reasoning="finish", tool_calls=[ToolCallSpec("finish", {"summary": summary})])


def _run(repo: Path, fake: FakeKimi, env: dict[str, str], *extra: str, task: str = "task") -> subprocess.CompletedProcess[str]:
    return run_cli(["run", "--repo", str(repo), "--base-url", fake.base_url, "--sandbox", "none", "--output", "json",
                    *extra, task], env)


def test_branch_and_patch_out_apply_to_the_base_commit(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"a.txt": "one\n", "keep.txt": "k\n"})
    base = git(repo, "rev-parse", "HEAD").strip()
    env = cli_env(tmp_path)
    patch = tmp_path / "out.patch"
    script = [_write("a.txt", "two\n"), _write("new/b.txt", "bee\n"), _finish("Changed a, added b.")]
    with FakeKimi(script, api_key=KEY) as fake:
        proc = _run(repo, fake, env, "--branch", "kimi/result", "--patch-out", str(patch))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert sorted(out["changed_files"]) == ["a.txt", "new/b.txt"]
    # The user's branch and HEAD did not move; the new branch holds the result on top of the base.
    assert git(repo, "rev-parse", "HEAD").strip() == base
    assert git(repo, "symbolic-ref", "--short", "HEAD").strip() == "main"
    assert git(repo, "rev-parse", "kimi/result^").strip() == base
    assert git(repo, "show", "kimi/result:a.txt") == "two\n"
    assert "Changed a, added b." in git(repo, "log", "-1", "--format=%B", "kimi/result")
    # The patch applies cleanly to the base commit and gives the same tree.
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    git(clone, "checkout", "-q", base)
    git(clone, "apply", "--index", str(patch))
    assert git(clone, "write-tree").strip() == git(repo, "rev-parse", "kimi/result^{tree}").strip()


def test_diff_and_rewind_then_resume_from_there(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"a.txt": "one\n"})
    env = cli_env(tmp_path)
    script = [_write("a.txt", "two\n", "s1"), _write("b.txt", "bee\n", "s2"), _write("c.txt", "sea\n", "s3")]
    with FakeKimi(script, api_key=KEY) as fake:
        proc = _run(repo, fake, env, "--max-steps", "3")
        assert proc.returncode == 3, proc.stderr
        sid = json.loads(proc.stdout)["session_id"]
        whole = run_cli(["diff", sid], env)
        assert whole.returncode == 0 and "+two" in whole.stdout and "+sea" in whole.stdout
        step2 = run_cli(["diff", sid, "--step", "2"], env)
        assert "+bee" in step2.stdout and "+two" not in step2.stdout and "+sea" not in step2.stdout
        # Outside change since the last checkpoint: rewind refuses without --force.
        (repo / "a.txt").write_text("edited by the user\n")
        refused = run_cli(["rewind", sid, "--to", "1"], env)
        assert refused.returncode == 2 and "a.txt" in refused.stderr
        (repo / "a.txt").write_text("two\n")
        ok = run_cli(["rewind", sid, "--to", "1"], env)
        assert ok.returncode == 0, ok.stderr
        assert (repo / "a.txt").read_text() == "two\n"
        assert not (repo / "b.txt").exists() and not (repo / "c.txt").exists()
        fake.add(_finish("after rewind"))
        proc = run_cli(["resume", sid, "--base-url", fake.base_url, "--output", "json"], env)
        assert proc.returncode == 0, proc.stderr
        last = fake.requests[-1]["messages"]
    assistants = [m["reasoning_content"] for m in last if m["role"] == "assistant"]
    assert assistants == ["s1"]  # the conversation is back at the end of step 1
    assert "rewound the session to the end of step 1" in last[-1]["content"]


def test_resume_tells_the_agent_about_outside_changes(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"a.txt": "one\n"})
    env = cli_env(tmp_path)
    with FakeKimi([_write("a.txt", "two\n")], api_key=KEY) as fake:
        proc = _run(repo, fake, env, "--max-steps", "1")
        sid = json.loads(proc.stdout)["session_id"]
        (repo / "user-notes.md").write_text("mine\n")
        fake.add(_finish())
        proc = run_cli(["resume", sid, "--base-url", fake.base_url], env)
        assert proc.returncode == 0, proc.stderr
        last = fake.requests[-1]["messages"]
    notice = last[-1]["content"]
    assert "changed outside the agent" in notice and "user-notes.md" in notice and "a.txt" not in notice


def test_ci_retry_on_a_fresh_clone_resumes_the_same_session(tmp_path: Path) -> None:
    origin = make_repo(tmp_path / "origin", {"a.txt": "one\n"})
    work = tmp_path / "work"
    subprocess.run(["git", "clone", "-q", str(origin), str(work)], check=True)
    env = cli_env(tmp_path)
    patch = tmp_path / "result.patch"
    with FakeKimi([_write("a.txt", "two\n", "s1"), _write("b.txt", "bee\n", "s2")], api_key=KEY) as fake:
        first = _run(work, fake, env, "--resume-if-exists", "--max-steps", "2", task="refactor job")
        assert first.returncode == 3, first.stderr
        sid = json.loads(first.stdout)["session_id"]
        # The CI machine is gone: a fresh clone at the same path, the state dir restored from cache.
        shutil.rmtree(work)
        subprocess.run(["git", "clone", "-q", str(origin), str(work)], check=True)
        fake.add(_finish("refactored"))
        second = _run(work, fake, env, "--resume-if-exists", "--patch-out", str(patch), task="refactor job")
        assert second.returncode == 0, second.stderr
        out = json.loads(second.stdout)
        assert fake.request_count == 3
    assert out["session_id"] == sid and out["steps"] == 3
    assert (work / "a.txt").read_text() == "two\n" and (work / "b.txt").read_text() == "bee\n"
    text = patch.read_text()
    assert "+two" in text and "+bee" in text
    check = tmp_path / "check"
    subprocess.run(["git", "clone", "-q", str(origin), str(check)], check=True)
    git(check, "apply", "--check", str(patch))
