"""Checkpoints on real git repositories with history, checked with the real git CLI."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from kimi_code.agent.checkpoints import Checkpoint, Checkpointer
from kimi_code.agent.errors import CheckpointError, KimiCodeError

UNICODE = "docs/ünï cödé.txt"
SPACED = "docs/with space.md"


@pytest.fixture(autouse=True)
def _isolated_git(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No global or system git config: no identity, as on a bare CI runner."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for var in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL",
                "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        monkeypatch.delenv(var, raising=False)


def git(repo: Path, *args: str, check: bool = True, input: bytes | None = None) -> str:
    ident = ["-c", "user.name=Tester", "-c", "user.email=tester@example.com"]
    proc = subprocess.run(["git", *ident, *args], cwd=repo, capture_output=True, input=input)
    if check and proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {proc.stderr.decode()}")
    return proc.stdout.decode("utf-8", "surrogateescape")


def write(repo: Path, rel: str, data: str | bytes, mode: int | None = None) -> None:
    path = repo / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        path.unlink()
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    if mode is not None:
        path.chmod(mode)


def files_state(root: Path) -> dict[str, tuple]:
    """Every file under root except the top .git: type, permission bits and content hash."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == root and ".git" in dirnames:
            dirnames.remove(".git")
        links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        for name in filenames + links:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(full))
            else:
                out[rel] = ("file", stat.S_IMODE(st.st_mode), hashlib.sha256(Path(full).read_bytes()).hexdigest())
    return out


def user_state(repo: Path) -> dict[str, object]:
    """Everything of the user's that a checkpoint must not touch."""
    index = repo / ".git" / "index"
    return {
        "head": git(repo, "rev-parse", "HEAD", check=False),
        "symbolic": git(repo, "symbolic-ref", "-q", "HEAD", check=False),
        "refs": git(repo, "for-each-ref", "--format=%(refname) %(objectname)", "refs/heads", "refs/tags", "refs/stash"),
        "stash": git(repo, "stash", "list"),
        "cached": git(repo, "diff", "--cached", "--binary"),
        "status": git(repo, "--no-optional-locks", "status", "--porcelain=v1", "-z", "--untracked-files=all"),
        "index": (index.read_bytes(), index.stat().st_mtime_ns) if index.exists() else None,
        "files": files_state(repo),
    }


def tree_paths(repo: Path, rev: str) -> set[str]:
    return set(filter(None, git(repo, "ls-tree", "-r", "-z", "--name-only", rev).split("\0")))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository with history, then the user's uncommitted work: a staged change, an unstaged
    change, untracked and ignored files, and a stash entry."""
    r = tmp_path / "repo"
    r.mkdir()
    git(r, "init", "-q", "-b", "main")
    write(r, ".gitignore", "*.log\nbuild/\n")
    write(r, "src/app.py", "print('v1')\n")
    write(r, "src/util.py", "def f():\n    return 1\n")
    write(r, "README.md", "# demo\n")
    git(r, "add", "-A")
    git(r, "commit", "-qm", "first")
    write(r, "bin/run.sh", "#!/bin/sh\necho run\n", 0o755)
    write(r, SPACED, "spaces\n")
    write(r, UNICODE, "unicode\n")
    write(r, "data.bin", bytes(range(256)) * 4)
    os.symlink("src/app.py", r / "link")
    git(r, "add", "-A")
    git(r, "commit", "-qm", "second")
    write(r, "src/app.py", "print('v2')\n")
    (r / "README.md").unlink()
    write(r, "README.md", "# demo\n\nmore\n")
    git(r, "commit", "-qam", "third")
    git(r, "tag", "v0")
    git(r, "branch", "feature")
    write(r, "src/app.py", "print('stashed')\n")
    git(r, "stash", "-q")
    # Uncommitted work the user has when the agent starts.
    write(r, "src/util.py", "def f():\n    return 2\n")
    git(r, "add", "src/util.py")
    write(r, "README.md", "# demo\n\nedited, not staged\n")
    write(r, "notes.txt", "untracked notes\n")
    write(r, "app.log", "ignored log\n")
    write(r, "build/out.o", b"\x00ignored object")
    return r


def test_rejects_non_repository_subdirectory_and_bad_session(tmp_path: Path, repo: Path) -> None:
    with pytest.raises(CheckpointError, match="not a git work tree"):
        Checkpointer(tmp_path / "nowhere", "s")
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(CheckpointError) as info:
        Checkpointer(plain, "s")
    assert isinstance(info.value, KimiCodeError) and info.value.exit_code == 2
    with pytest.raises(CheckpointError, match="inside the git work tree"):
        Checkpointer(repo / "src", "s")
    with pytest.raises(CheckpointError, match="invalid session id"):
        Checkpointer(repo, "../evil")
    cp = Checkpointer(repo, "s")
    with pytest.raises(CheckpointError, match="no checkpoints"):
        cp.export_branch("HEAD", "x", "m")
    with pytest.raises(CheckpointError, match="no such checkpoint commit: nope"):
        cp.restore("nope")
    with pytest.raises(CheckpointError, match="no such checkpoint commit"):
        cp.diff("0" * 40)


def test_snapshots_never_touch_user_state(repo: Path) -> None:
    cp = Checkpointer(repo, "sess1")
    before = user_state(repo)
    base = cp.base()
    assert user_state(repo) == before
    # The agent edits files; then the checkpoint must leave everything exactly as it finds it.
    write(repo, "src/app.py", "print('agent')\n")
    write(repo, "agent_new.py", "x = 1\n")
    (repo / SPACED).unlink()
    before = user_state(repo)
    step = cp.snapshot(1, "agent edits")
    assert step is not None
    assert user_state(repo) == before
    assert cp.diff(base.commit, step.commit) and cp.restore(step.commit) == []
    assert user_state(repo) == before
    refs = git(repo, "for-each-ref", "--format=%(refname)")
    assert "refs/kimi-code/sess1/head" in refs and "refs/kimi-code/sess1/base" in refs
    assert (repo / ".git" / "kimi-code" / "sess1" / "index").is_file()


def test_untracked_included_ignored_excluded_working_content_wins(repo: Path) -> None:
    cp = Checkpointer(repo, "s")
    base = cp.base()
    paths = tree_paths(repo, base.commit)
    assert {"notes.txt", "src/app.py", SPACED, UNICODE, "link", "bin/run.sh", ".gitignore"} <= paths
    assert "app.log" not in paths and not any(p.startswith("build/") for p in paths)
    # The working file's content, not the staged one or HEAD's.
    assert git(repo, "show", f"{base.commit}:README.md") == "# demo\n\nedited, not staged\n"
    assert git(repo, "show", f"{base.commit}:src/util.py") == "def f():\n    return 2\n"
    assert git(repo, "ls-tree", base.commit, "bin/run.sh").startswith("100755")
    assert git(repo, "ls-tree", base.commit, "link").startswith("120000")
    # The base's parent is the user's HEAD; `changed` is what differed from it at start.
    assert git(repo, "rev-parse", f"{base.commit}^") == git(repo, "rev-parse", "HEAD")
    assert sorted(base.changed) == ["README.md", "notes.txt", "src/util.py"]
    assert base.step == 0 and base.kind == "base" and base.skipped == []


def test_unchanged_tree_gives_none_and_chain_is_linear(repo: Path) -> None:
    cp = Checkpointer(repo, "s")
    base = cp.base()
    assert cp.base().commit == base.commit  # idempotent
    assert cp.snapshot(1) is None
    write(repo, "more.log", "ignored changes do not count\n")
    assert cp.snapshot(1) is None
    write(repo, "src/app.py", "print('s2')\n")
    s2 = cp.snapshot(2, "edit app")
    assert isinstance(s2, Checkpoint) and s2.changed == ["src/app.py"] and s2.step == 2
    assert git(repo, "rev-parse", f"{s2.commit}^").strip() == base.commit
    # A new Checkpointer (a resumed process) reuses the persistent index and refs.
    again = Checkpointer(repo, "s")
    assert again.snapshot(3) is None
    (repo / "notes.txt").unlink()
    s3 = again.snapshot(3)
    assert s3 is not None and s3.changed == ["notes.txt"]
    hist = again.history()
    assert [(c.step, c.kind, c.commit) for c in hist] == [
        (0, "base", base.commit), (2, "step", s2.commit), (3, "step", s3.commit)]
    assert hist[1].changed == ["src/app.py"]
    assert again.at_step(2).commit == s2.commit
    assert again.changed_files(base.commit, s3.commit) == ["notes.txt", "src/app.py"]
    with pytest.raises(CheckpointError, match="no checkpoint for step 9"):
        again.at_step(9)


def test_an_unchanged_step_costs_one_git_process_and_changes_still_land(repo: Path) -> None:
    cp = Checkpointer(repo, "s")
    cp.base()
    calls: list[str] = []
    real = cp._git

    def counting(*args: str, **kw: object) -> bytes:
        calls.append(args[0])
        return real(*args, **kw)  # type: ignore[arg-type]

    cp._git = counting  # type: ignore[method-assign]
    assert cp.snapshot(1) is None and cp.snapshot(2) is None
    assert calls[-1:] == ["ls-files"] and calls.count("ls-files") == 2 and len(calls) <= 4
    calls.clear()
    assert cp.snapshot(3) is None
    assert calls == ["ls-files"]
    # A change right after, at the same size (same mtime second as the cached index is possible).
    data = (repo / "src/app.py").read_text()
    write(repo, "src/app.py", data.replace("p", "q", 1))
    s4 = cp.snapshot(4)
    assert s4 is not None and s4.changed == ["src/app.py"]
    assert cp.snapshot(5) is None
    # The head moved behind the cache (another Checkpointer of the session, e.g. a rewind):
    # update-ref's compare-and-swap refuses rather than losing either checkpoint.
    other = Checkpointer(repo, "s")
    write(repo, "src/app.py", "other\n")
    assert other.snapshot(6) is not None
    write(repo, "src/app.py", "mine\n")
    with pytest.raises(CheckpointError, match="concurrently"):
        cp.snapshot(7)
    assert cp.snapshot(7) is not None  # the cache was dropped: the next try reads the ref again


def agent_steps(repo: Path, cp: Checkpointer) -> tuple[dict, Checkpoint, dict, Checkpoint, dict, Checkpoint]:
    """base, then two steps that edit, delete, create, chmod, relink and rename things."""
    base = cp.base()
    at_base = files_state(repo)
    write(repo, "src/app.py", "print('step1')\n")
    (repo / SPACED).unlink()
    write(repo, "bin/run.sh", "#!/bin/sh\necho run\n", 0o644)  # loses its exec bit
    write(repo, "tools/new tool.sh", "#!/bin/sh\n", 0o755)
    (repo / "link").unlink()
    os.symlink("README.md", repo / "link")
    write(repo, "data.bin", os.urandom(3000))
    write(repo, "glob [ab]*?.txt", "a name full of pathspec magic\n")
    write(repo, "-dash.txt", "looks like an option\n")
    s1 = cp.snapshot(1)
    assert s1 is not None
    at_s1 = files_state(repo)
    write(repo, UNICODE, "rewritten ünïcode\n")
    write(repo, "pkg/deep/dir/file.py", "deep\n")
    (repo / "notes.txt").unlink()
    (repo / "data.bin").unlink()
    (repo / "glob [ab]*?.txt").unlink()
    (repo / "src").joinpath("util.py").unlink()
    (repo / "src" / "util.py").mkdir()  # a file that became a directory
    write(repo, "src/util.py/__init__.py", "")
    s2 = cp.snapshot(2)
    assert s2 is not None
    return at_base, base, at_s1, s1, files_state(repo), s2


def test_restore_is_byte_for_byte_both_ways(repo: Path) -> None:
    cp = Checkpointer(repo, "s")
    at_base, base, at_s1, s1, at_s2, s2 = agent_steps(repo, cp)
    user_before = {k: v for k, v in user_state(repo).items() if k not in ("files", "status")}
    write(repo, "later.log", "ignored, created after step 1\n")
    at_s1["later.log"] = files_state(repo)["later.log"]
    changed = cp.restore(s1.commit)
    assert files_state(repo) == at_s1
    assert {"pkg/deep/dir/file.py", "notes.txt", "data.bin", UNICODE, "glob [ab]*?.txt"} <= set(changed)
    assert not (repo / "pkg").exists()  # emptied directories go too
    assert stat.S_IMODE((repo / "bin/run.sh").stat().st_mode) == 0o644
    assert os.readlink(repo / "link") == "README.md"
    # Back to the start: deleted files come back with their modes, created ones go.
    cp.restore(base.commit)
    at_base["later.log"] = at_s1["later.log"]
    assert files_state(repo) == at_base
    assert stat.S_IMODE((repo / "bin/run.sh").stat().st_mode) == 0o755
    assert (repo / SPACED).read_text() == "spaces\n" and not (repo / "tools").exists()
    # And forward again to the last step.
    cp.restore(s2.commit)
    at_s2["later.log"] = at_s1["later.log"]
    assert files_state(repo) == at_s2
    # HEAD, the user's index, branches and stash never moved.
    assert {k: v for k, v in user_state(repo).items() if k not in ("files", "status")} == user_before
    assert (repo / "build/out.o").read_bytes() == b"\x00ignored object"
    # Rewinds are recorded; the session head matches the workspace, so no drift afterwards.
    kinds = [c.kind for c in cp.history()]
    assert kinds == ["base", "step", "step", "restore", "restore", "restore"]
    assert cp.drift(cp.head() or "") == [] and cp.snapshot(3) is None


def test_drift_detection_and_refusal_then_force(repo: Path) -> None:
    cp = Checkpointer(repo, "s")
    base = cp.base()
    write(repo, "src/app.py", "print('agent')\n")
    s1 = cp.snapshot(1)
    assert s1 is not None and cp.drift(s1.commit) == []
    # Someone edits outside the agent: modify, delete, create; ignored files don't count.
    write(repo, "README.md", "outside edit\n")
    (repo / "notes.txt").unlink()
    write(repo, "outside new.txt", "hello\n")
    write(repo, "outside.log", "ignored\n")
    state = files_state(repo)
    assert cp.drift(s1.commit) == ["README.md", "notes.txt", "outside new.txt"]
    assert files_state(repo) == state  # drift is read-only
    with pytest.raises(CheckpointError) as info:
        cp.restore(base.commit, expected=s1.commit)
    message = str(info.value)
    assert "outside the agent" in message and "README.md" in message and "--force" in message
    assert files_state(repo) == state  # refused: nothing written
    with pytest.raises(CheckpointError):
        cp.restore(base.commit)  # expected defaults to the session's latest checkpoint
    cp.restore(base.commit, force=True, expected=s1.commit)
    assert (repo / "README.md").read_text() == "# demo\n\nedited, not staged\n"
    assert not (repo / "outside new.txt").exists() and (repo / "notes.txt").exists()
    assert (repo / "outside.log").exists()
    # The discarded outside changes were saved first and can be recovered.
    saved = [c for c in cp.history() if c.kind == "drift"]
    assert len(saved) == 1 and git(repo, "show", f"{saved[0].commit}:outside new.txt") == "hello\n"


def test_drift_lists_many_paths_briefly(repo: Path) -> None:
    cp = Checkpointer(repo, "s")
    base = cp.base()
    for i in range(25):
        write(repo, f"gen/f{i:02}.txt", str(i))
    with pytest.raises(CheckpointError, match=r"\(\+15 more\)"):
        cp.restore(base.commit)


def test_diff_between_checkpoints_and_to_workspace(repo: Path) -> None:
    cp = Checkpointer(repo, "s")
    base = cp.base()
    write(repo, "src/app.py", "print('agent')\n")
    s1 = cp.snapshot(1)
    assert s1 is not None
    text = cp.diff(base.commit, s1.commit)
    assert "--- a/src/app.py" in text and "+print('agent')" in text
    write(repo, "fresh file.txt", "not yet checkpointed\n")
    live = cp.diff(s1.commit)
    assert "+not yet checkpointed" in live and "b/fresh file.txt" in live
    assert cp.snapshot(2) is not None  # diff did not consume the change


def export_state(repo: Path) -> dict[str, object]:
    return {k: v for k, v in user_state(repo).items() if k not in ("refs",)}


def test_export_branch_and_patch_apply_to_the_start_commit(repo: Path, tmp_path: Path) -> None:
    cp = Checkpointer(repo, "s")
    start = git(repo, "rev-parse", "HEAD").strip()
    at_base, base, at_s1, s1, at_s2, s2 = agent_steps(repo, cp)
    last = cp.head()
    assert last is not None
    before = export_state(repo)
    sha = cp.export_branch(last, "kimi/refactor", "Refactor things\n\nBody.", author="Bot One <bot@example.com>")
    assert export_state(repo) == before  # not checked out, HEAD and files unchanged
    assert git(repo, "rev-parse", "kimi/refactor").strip() == sha
    assert git(repo, "rev-parse", f"{sha}^").strip() == start
    assert git(repo, "rev-parse", f"{sha}^{{tree}}").strip() == git(repo, "rev-parse", f"{last}^{{tree}}").strip()
    assert git(repo, "log", "-1", "--format=%an <%ae>|%s", sha).strip() == "Bot One <bot@example.com>|Refactor things"
    assert git(repo, "rev-list", "--count", f"{start}..{sha}").strip() == "1"
    with pytest.raises(CheckpointError, match="already exists"):
        cp.export_branch(last, "kimi/refactor", "again")
    with pytest.raises(CheckpointError, match="invalid branch name"):
        cp.export_branch(last, "bad..name", "x")
    with pytest.raises(CheckpointError, match="Name <email>"):
        cp.export_branch(last, "other", "x", author="nobody")
    # Default author with no git identity configured anywhere.
    other = cp.export_branch(base.commit, "kimi/base-only", "Only the start state")
    assert git(repo, "log", "-1", "--format=%an", other).strip() == "kimi-code"

    patch_file = tmp_path / "result.patch"
    cp.write_patch(last, patch_file)
    assert cp.patch(last).encode("utf-8", "surrogateescape") == patch_file.read_bytes()
    assert b"GIT binary patch" in patch_file.read_bytes()
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", "--no-checkout", str(repo), str(clone))
    git(clone, "checkout", "-q", "--detach", start)
    git(clone, "apply", "--check", str(patch_file))
    git(clone, "apply", str(patch_file))
    git(clone, "add", "-A")
    assert git(clone, "write-tree").strip() == git(repo, "rev-parse", f"{last}^{{tree}}").strip()
    # Relative to the user's HEAD, so the user's uncommitted start changes are in the patch.
    assert "+untracked notes" in cp.patch(base.commit)
    assert cp.result_files(base.commit) == ["README.md", "notes.txt", "src/util.py"]
    assert set(cp.result_files(last)) == set(
        filter(None, git(repo, "diff", "--name-only", "-z", "--no-renames", start, last).split("\0")))


def test_huge_files_are_skipped_and_left_alone(repo: Path) -> None:
    cp = Checkpointer(repo, "s")
    base = cp.base()
    with open(repo / "huge.bin", "wb") as fh:
        fh.truncate(5_000_001)  # sparse: instant
    write(repo, "small.txt", "fine\n")
    s1 = cp.snapshot(1)
    assert s1 is not None and s1.skipped == ["huge.bin"] and s1.changed == ["small.txt"]
    assert "huge.bin" not in tree_paths(repo, s1.commit)
    assert cp.load(s1.commit).skipped == ["huge.bin"]
    # A tracked file that grows past the limit keeps its last checkpointed content.
    small = Checkpointer(repo, "s2", max_file_bytes=1000)
    small.base()
    write(repo, "src/app.py", "x" * 2000)
    assert small.snapshot(1) is None  # only a skipped file changed: nothing to checkpoint
    write(repo, "small2.txt", "changed too\n")
    s = small.snapshot(2)
    assert s is not None and "src/app.py" in s.skipped
    assert git(repo, "show", f"{s.commit}:src/app.py") == "print('v2')\n"
    # Restore never deletes or rewrites a file it could not checkpoint.
    small.restore(small.base().commit)
    assert (repo / "src/app.py").read_text() == "x" * 2000 and not (repo / "small2.txt").exists()
    cp.restore(base.commit, force=True)
    assert (repo / "huge.bin").stat().st_size == 5_000_001 and not (repo / "small.txt").exists()


def test_restore_will_not_silently_overwrite_an_ignored_file(repo: Path) -> None:
    cp = Checkpointer(repo, "s")
    cp.base()
    write(repo, "gen.out", "written by the agent\n")
    s1 = cp.snapshot(1)
    assert s1 is not None
    (repo / "gen.out").unlink()
    write(repo, ".gitignore", "*.log\nbuild/\n*.out\n")
    assert cp.snapshot(2) is not None
    write(repo, "gen.out", "the user's ignored file\n")  # not in any checkpoint
    with pytest.raises(CheckpointError, match="not in any checkpoint.*gen.out"):
        cp.restore(s1.commit)
    assert (repo / "gen.out").read_text() == "the user's ignored file\n"
    cp.restore(s1.commit, force=True)
    assert (repo / "gen.out").read_text() == "written by the agent\n"
    assert "*.out" not in (repo / ".gitignore").read_text()


def test_survives_gc_of_objects_only_the_private_index_knew(repo: Path) -> None:
    cp = Checkpointer(repo, "s")
    base = cp.base()
    write(repo, "outside.txt", "staged into the private index by a refused restore\n")
    with pytest.raises(CheckpointError):
        cp.restore(base.commit)
    (repo / "outside.txt").unlink()
    git(repo, "gc", "-q", "--prune=now")
    write(repo, "src/app.py", "after gc\n")
    s1 = cp.snapshot(1)
    assert s1 is not None and s1.changed == ["src/app.py"]
    cp.restore(base.commit)
    assert (repo / "src/app.py").read_text() == "print('v2')\n"


def test_prune_and_sessions_with_refs(repo: Path) -> None:
    a, b = Checkpointer(repo, "sess-a"), Checkpointer(repo, "sess-b")
    a.base()
    b.base()
    assert Checkpointer.sessions_with_refs(repo) == ["sess-a", "sess-b"]
    before = git(repo, "for-each-ref", "refs/heads", "refs/tags")
    a.prune()
    assert Checkpointer.sessions_with_refs(repo) == ["sess-b"]
    assert "sess-a" not in git(repo, "for-each-ref")
    assert not (repo / ".git" / "kimi-code" / "sess-a").exists()
    assert git(repo, "for-each-ref", "refs/heads", "refs/tags") == before
    assert b.head() is not None


def test_repository_without_commits(tmp_path: Path) -> None:
    r = tmp_path / "empty"
    r.mkdir()
    git(r, "init", "-q")
    write(r, "a.txt", "a\n")
    write(r, "ignored.log", "x")
    write(r, ".gitignore", "*.log\n")
    cp = Checkpointer(r, "s")
    base = cp.base()
    assert git(r, "rev-list", "--count", base.commit).strip() == "1"  # a root commit
    assert sorted(base.changed) == [".gitignore", "a.txt"]
    write(r, "b.txt", "b\n")
    s1 = cp.snapshot(1)
    assert s1 is not None
    assert git(r, "rev-parse", "--verify", "-q", "HEAD", check=False) == ""  # still unborn
    cp.restore(base.commit)
    assert not (r / "b.txt").exists() and (r / "ignored.log").exists()
    cp.restore(s1.commit)
    patch = tmp_path / "p.patch"
    cp.write_patch(s1.commit, patch)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    git(fresh, "init", "-q")
    git(fresh, "apply", str(patch))
    assert (fresh / "b.txt").read_text() == "b\n" and (fresh / "a.txt").read_text() == "a\n"
    sha = cp.export_branch(s1.commit, "result", "Result")
    assert git(r, "rev-list", "--parents", "-n1", sha).split() == [sha]  # no parent
    assert git(r, "rev-parse", "--verify", "-q", "HEAD", check=False) == ""


def test_nested_repositories_are_skipped_not_fatal(repo: Path) -> None:
    cp = Checkpointer(repo, "s")
    cp.base()
    (repo / "vendor" / "empty").mkdir(parents=True)
    git(repo / "vendor" / "empty", "init", "-q")
    write(repo, "vendor/empty/x.txt", "x")
    (repo / "vendor" / "full").mkdir()
    git(repo / "vendor" / "full", "init", "-q")
    write(repo, "vendor/full/y.txt", "y")
    git(repo / "vendor" / "full", "add", "-A")
    git(repo / "vendor" / "full", "commit", "-qm", "nested")
    write(repo, "top.txt", "t")
    s1 = cp.snapshot(1)
    assert s1 is not None and s1.changed == ["top.txt"]
    assert set(s1.skipped) == {"vendor/empty/", "vendor/full/"}
    nested = files_state(repo / "vendor")
    cp.restore(cp.base().commit)
    assert files_state(repo / "vendor") == nested and not (repo / "top.txt").exists()


def test_stale_lock_from_a_killed_run_is_cleared(repo: Path) -> None:
    cp = Checkpointer(repo, "s")
    cp.base()
    lock = repo / ".git" / "kimi-code" / "s" / "index.lock"
    lock.write_bytes(b"")
    old = time.time() - 60
    os.utime(lock, (old, old))
    write(repo, "src/app.py", "after crash\n")
    assert cp.snapshot(1) is not None and not lock.exists()


def test_bundle_carries_session_to_a_fresh_clone(repo: Path, tmp_path: Path) -> None:
    start = git(repo, "rev-parse", "HEAD").strip()
    cp = Checkpointer(repo, "ci-1")
    _, _, _, _, at_s2, _ = agent_steps(repo, cp)
    bundle = tmp_path / "state" / "ci-1.bundle"
    bundle.parent.mkdir()
    cp.save_bundle(bundle)
    clone = tmp_path / "retry"
    git(tmp_path, "clone", "-q", "--no-checkout", str(repo), str(clone))
    git(clone, "checkout", "-q", "--detach", start)
    again = Checkpointer(clone, "ci-1")
    assert again.head() is None
    again.load_bundle(bundle)
    assert again.head() == cp.head()
    again.restore(again.head() or "", force=True)
    assert files_state(clone) == {k: v for k, v in at_s2.items() if not k.endswith(".log") and not k.startswith("build/")}


def test_a_fifo_planted_as_gitignore_cannot_hang_a_snapshot(tmp_path: Path) -> None:
    import os
    import time as _time

    repo = tmp_path / "r"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "a.txt").write_text("a\n")
    cp = Checkpointer(repo, "fifo", git_timeout=3)
    cp.base()
    (repo / "sub").mkdir()
    os.mkfifo(repo / "sub" / ".gitignore")
    started = _time.monotonic()
    with pytest.raises(CheckpointError):
        cp.snapshot(1)
    assert _time.monotonic() - started < 30


def test_planted_fsmonitor_is_not_run_by_snapshots(tmp_path: Path) -> None:
    repo = tmp_path / "r"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "a.txt").write_text("a\n")
    marker = tmp_path / "PWNED"
    subprocess.run(["git", "-C", str(repo), "config", "core.fsmonitor", f"touch {marker}; true"], check=True)
    cp = Checkpointer(repo, "fsm")
    cp.base()
    (repo / "a.txt").write_text("b\n")
    assert cp.snapshot(1) is not None
    assert not marker.exists()
