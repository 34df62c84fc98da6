"""The copied workspace's sync (sandbox/workspace_sync.py, sandbox/host_tree.py), driven against a
real bash and GNU find/tar on this machine standing in for the container: a directory plays the
container's workspace, and the engine's archive call is a tar extraction into it. The same code
runs against real Docker engines in test_remote_engine.py."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import stat
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from helpers import git, make_repo
from kimi_code.sandbox.host_tree import HostTree
from kimi_code.sandbox.local import _PipeChannel
from kimi_code.sandbox.workspace_sync import WorkspaceSync


class LocalRemote:
    """bash in a subprocess, and a tar extracted with the data filter into a directory."""

    def open_channel(self, cwd: str) -> _PipeChannel:
        proc = subprocess.Popen(["bash", "--noprofile", "--norc"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        return _PipeChannel(proc)

    def tar_in(self, path: str, data) -> None:
        with tarfile.open(fileobj=data, mode="r|") as tar:  # a stream, as the engine reads it
            tar.extractall(path, filter="fully_trusted")


WATCH = [True, False]


@pytest.fixture(params=WATCH, ids=["journal", "scan"])
def watch(request) -> bool:
    """Every sync test runs with the container's inotify journal and with the full scan."""
    return request.param


def _sync(tmp_path: Path, host: Path, watch: bool = True) -> tuple[WorkspaceSync, Path]:
    ctr = tmp_path / "ctr"
    ctr.mkdir(exist_ok=True)
    ws = ctr / "workspace"
    sync = WorkspaceSync(LocalRemote(), host, str(ws), stamp_file=tmp_path / "stamp",
                         owner=(os.getuid(), os.getgid()), sync_dir=str(tmp_path / "syncdir"), watch=watch)
    return sync, ws


def _stop_watcher(tmp_path: Path) -> None:
    pid_file = tmp_path / "syncdir" / "watch.pid"
    if pid_file.exists():
        pid = int(pid_file.read_text().split()[0])
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, 0)


@pytest.fixture(autouse=True)
def _no_stray_watchers(tmp_path: Path):
    yield
    _stop_watcher(tmp_path)


def _repo(tmp_path: Path) -> Path:
    repo = make_repo(tmp_path / "host", {"a.txt": "a\n", "sub/b.txt": "b\n", ".gitignore": "secret.env\nbuild/\n"})
    (repo / "untracked.txt").write_text("u\n")
    (repo / "secret.env").write_text("TOKEN=1\n")
    (repo / "build").mkdir()
    (repo / "build" / "out.o").write_text("obj")
    return repo


def _tick() -> None:
    time.sleep(0.02)  # status-change times must differ from the stamp's


def test_seed_copies_tracked_untracked_and_git_but_not_ignored(tmp_path: Path, watch: bool) -> None:
    repo = _repo(tmp_path)
    sync, ws = _sync(tmp_path, repo, watch)
    sync.seed()
    assert (ws / "a.txt").read_text() == "a\n" and (ws / "sub/b.txt").read_text() == "b\n"
    assert (ws / "untracked.txt").exists() and (ws / ".git" / "HEAD").exists()
    assert not (ws / "secret.env").exists() and not (ws / "build").exists()
    assert git(ws, "status", "--porcelain").strip() == "?? untracked.txt"


def test_a_linked_worktree_gets_a_git_directory_of_its_own(tmp_path: Path) -> None:
    """A workspace made by `git worktree add` has a .git file naming a host path: its copy gets a
    stand-alone git directory (the shared objects and refs, this worktree's HEAD and index), so git
    in the container sees the worktree's branch and state; the host's .git file is left alone."""
    repo = _repo(tmp_path)
    git(repo, "branch", "feature")
    wt = tmp_path / "wt"
    git(repo, "worktree", "add", "-q", str(wt), "feature")
    (wt / "a.txt").write_text("changed\n")
    (wt / "new.txt").write_text("n\n")
    git(wt, "add", "new.txt")
    dot_git = (wt / ".git").read_text()
    sync, ws = _sync(tmp_path, wt, watch=False)
    sync.seed()
    assert (ws / ".git").is_dir() and not (ws / ".git" / "worktrees").exists()
    assert git(ws, "rev-parse", "--abbrev-ref", "HEAD").strip() == "feature"
    assert git(ws, "status", "--porcelain").splitlines() == [" M a.txt", "A  new.txt"]
    assert git(ws, "log", "-1", "--format=%H").strip() == git(repo, "rev-parse", "feature").strip()
    (ws / "a.txt").write_text("from the sandbox\n")
    _tick()
    assert sync.pull().changed == 1
    assert (wt / "a.txt").read_text() == "from the sandbox\n" and (wt / ".git").read_text() == dot_git
    assert git(wt, "rev-parse", "--abbrev-ref", "HEAD").strip() == "feature"


def test_a_worktree_of_a_bare_repository_copies_only_its_own_state(tmp_path: Path) -> None:
    """The usual `clone --bare` + `worktree add` layout: the copy's .git is a normal repository
    (core.bare off), and state of the main repository's own (a rebase in progress there, its
    MERGE_MSG) is not this worktree's and stays out."""
    src = _repo(tmp_path)
    bare = tmp_path / "bare.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(src), str(bare)], check=True)
    wt = tmp_path / "wt2"
    subprocess.run(["git", "-C", str(bare), "worktree", "add", "-q", "-b", "topic", str(wt)], check=True,
                   capture_output=True)
    (bare / "rebase-merge").mkdir()
    (bare / "rebase-merge" / "head-name").write_text("refs/heads/other\n")
    (bare / "MERGE_MSG").write_text("not this worktree's\n")
    sync, ws = _sync(tmp_path, wt, watch=False)
    sync.seed()
    assert git(ws, "rev-parse", "--abbrev-ref", "HEAD").strip() == "topic"
    assert git(ws, "status", "--porcelain").strip() == ""
    assert not (ws / ".git" / "rebase-merge").exists() and not (ws / ".git" / "MERGE_MSG").exists()
    assert git(bare, "config", "core.bare").strip() == "true"  # the host's repository is untouched


def test_a_git_file_naming_another_repository_is_not_followed(tmp_path: Path) -> None:
    """A cloned repository whose .git file names some other repository on this machine (its
    private objects and config) is not a linked worktree: nothing of that repository goes in."""
    private = make_repo(tmp_path / "private", {"secret.txt": "s\n"})
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "x").mkdir()
    (evil / "x" / "commondir").write_text(str(private / ".git") + "\n")
    (evil / "x" / "gitdir").write_text(str(evil / ".git") + "\n")
    (evil / "x" / "HEAD").write_text("ref: refs/heads/main\n")
    (evil / ".git").write_text("gitdir: x\n")
    (evil / "f.txt").write_text("f\n")
    from kimi_code.sandbox.host_tree import linked_worktree

    assert linked_worktree(evil) is None
    sync, ws = _sync(tmp_path, evil, watch=False)
    sync.seed()
    assert not (ws / ".git").is_dir() and not list(ws.rglob("objects"))


def test_pull_brings_changes_deletions_renames_and_symlinks_but_keeps_ignored_host_files(tmp_path: Path, watch: bool) -> None:
    repo = _repo(tmp_path)
    sync, ws = _sync(tmp_path, repo, watch)
    sync.seed()
    assert sync.pull().changed == 0
    _tick()
    (ws / "a.txt").write_text("changed\n")
    (ws / "new.txt").write_text("new\n")
    (ws / "sub/b.txt").unlink()
    os.rename(ws / "sub", ws / "moved")
    (ws / "moved" / "deep" / "er").mkdir(parents=True)
    (ws / "moved" / "deep" / "er" / "f.txt").write_text("deep\n")
    os.symlink("/etc/passwd", ws / "link")
    (ws / "suid").write_text("#!/bin/sh\n")
    os.chmod(ws / "suid", 0o4755)
    (ws / ".git" / "hooks" / "post-checkout").write_text("#!/bin/sh\necho pwned\n")
    report = sync.pull()
    assert report.journal is watch  # after the first sync, the journal answers when it can
    assert (repo / "a.txt").read_text() == "changed\n" and (repo / "new.txt").read_text() == "new\n"
    assert not (repo / "sub").exists()
    assert (repo / "moved" / "deep" / "er" / "f.txt").read_text() == "deep\n"
    assert os.readlink(repo / "link") == "/etc/passwd"
    assert not (repo / "suid").stat().st_mode & (stat.S_ISUID | stat.S_ISGID)
    assert not (repo / ".git" / "hooks" / "post-checkout").exists()  # .git never comes back
    # Ignored files never went into the container; its directory listing must not delete them.
    assert (repo / "secret.env").read_text() == "TOKEN=1\n" and (repo / "build" / "out.o").exists()
    assert "sub" in report.deleted and "a.txt" in report.written
    assert sync.pull().changed == 0  # applied once: nothing left to bring


def test_push_places_files_and_refuses_a_symlinked_directory_in_the_container(tmp_path: Path, watch: bool) -> None:
    repo = _repo(tmp_path)
    sync, ws = _sync(tmp_path, repo, watch)
    sync.seed()
    outside = tmp_path / "outside"
    outside.mkdir()
    (repo / "pkg").mkdir()
    (repo / "pkg" / "m.py").write_text("X = 1\n")
    assert sync.push(["pkg/m.py"]).written == ["pkg/m.py"]
    assert (ws / "pkg" / "m.py").read_text() == "X = 1\n"
    # The container's copy has 'esc' as a symlink out of its workspace; the host has a directory.
    os.symlink(str(outside), ws / "esc")
    (repo / "esc").mkdir()
    (repo / "esc" / "x.txt").write_text("x\n")
    report = sync.push(["esc/x.txt"])
    assert report.refused == ["esc/x.txt"] and not (outside / "x.txt").exists()


def test_a_kill_between_scan_and_apply_loses_nothing(tmp_path: Path, watch: bool) -> None:
    repo = _repo(tmp_path)
    sync, ws = _sync(tmp_path, repo, watch)
    sync.seed()
    _tick()
    (ws / "made-before-kill.txt").write_text("kept\n")
    # The container scans and advances its stamp, but the host process dies before applying.
    sync._call("__ks_scan", str(sync._base), str(sync._next))
    sync.close()
    fresh, _ = _sync(tmp_path, repo, watch)
    fresh.reconcile()
    assert (repo / "made-before-kill.txt").read_text() == "kept\n"


def test_reconcile_sends_host_changes_and_the_host_wins_a_conflict(tmp_path: Path, watch: bool) -> None:
    repo = _repo(tmp_path)
    sync, ws = _sync(tmp_path, repo, watch)
    sync.seed()
    sync.pull()
    sync.close()
    _tick()
    (ws / "a.txt").write_text("container\n")  # changed by a command the host never heard back from
    (ws / "only-container.txt").write_text("c\n")
    (repo / "a.txt").write_text("host (rewind)\n")  # and by a rewind on the host
    (repo / "sub" / "b.txt").unlink()
    (repo / "restored.txt").write_text("r\n")
    fresh, _ = _sync(tmp_path, repo, watch)
    fresh.reconcile()
    assert (repo / "a.txt").read_text() == "host (rewind)\n" == (ws / "a.txt").read_text()
    assert (repo / "only-container.txt").read_text() == "c\n"
    assert (ws / "restored.txt").read_text() == "r\n"
    assert not (ws / "sub" / "b.txt").exists()


@pytest.mark.parametrize("name", ["/etc/evil", "../evil", "a/../../evil", ".git/hooks/pre-commit", ".GIT./config"])
def test_unsafe_names_in_an_archive_are_never_written(tmp_path: Path, name: str) -> None:
    root = tmp_path / "root"
    (root / ".git" / "hooks").mkdir(parents=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    HostTree(root).apply(buf.getvalue())
    assert not (tmp_path / "evil").exists() and not (root / ".git" / "hooks" / "pre-commit").exists()
    assert not (root / ".git" / "config").exists()


def test_a_member_below_a_host_symlink_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(str(outside), root / "link")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("link/planted.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    done = HostTree(root).apply(buf.getvalue())
    assert done.refused == ["link/planted.txt"] and not (outside / "planted.txt").exists()


def test_a_killed_watcher_falls_back_to_the_scan_and_comes_back(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    sync, ws = _sync(tmp_path, repo, watch=True)
    sync.seed()
    sync.pull()
    assert sync.pull().journal
    _stop_watcher(tmp_path)  # e.g. a command ran `pkill python3`
    _tick()
    (ws / "while-dead.txt").write_text("seen\n")
    report = sync.pull()
    assert not report.journal and "while-dead.txt" in report.written
    _tick()
    (ws / "later.txt").write_text("later\n")
    report = sync.pull()  # a new watcher started with the scan; its journal answers now
    assert report.journal and report.written == ["later.txt"]


def test_a_directory_made_and_filled_at_once_is_journaled_whole(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    sync, ws = _sync(tmp_path, repo, watch=True)
    sync.seed()
    sync.pull()
    subprocess.run(["bash", "-c", "mkdir -p x/y/z && for i in $(seq 50); do echo $i > x/y/z/f$i; done; "
                    "mkdir m && mv x m/"], cwd=ws, check=True)
    report = sync.pull()
    assert report.journal
    assert sorted(os.listdir(repo / "m" / "x" / "y" / "z")) == sorted(f"f{i}" for i in range(1, 51))
    assert (repo / "m/x/y/z/f50").read_text() == "50\n" and not (repo / "x").exists()


def test_ignored_files_the_container_made_are_deleted_when_it_deletes_them(tmp_path: Path, watch: bool) -> None:
    repo = _repo(tmp_path)
    sync, ws = _sync(tmp_path, repo, watch)
    sync.seed()
    sync.pull()
    _tick()
    (ws / "build").mkdir()  # .gitignore has build/: the host's build/out.o never went in
    (ws / "build" / "made-in-container.o").write_text("o")
    sync.pull()
    assert (repo / "build" / "made-in-container.o").exists() and (repo / "build" / "out.o").exists()
    sync.close()
    _tick()
    (ws / "build" / "made-in-container.o").unlink()
    fresh, _ = _sync(tmp_path, repo, watch)  # a resumed process remembers what came from the container
    fresh.reconcile()
    assert not (repo / "build" / "made-in-container.o").exists()
    assert (repo / "build" / "out.o").exists() and (repo / "secret.env").exists()


def test_a_host_only_ignored_file_is_never_replaced_by_the_containers(tmp_path: Path, watch: bool) -> None:
    repo = _repo(tmp_path)
    (repo / ".env.example").write_text("API_KEY=changeme\n")
    (repo / ".gitignore").write_text("secret.env\nbuild/\n.env\n")
    (repo / ".env").write_text("API_KEY=the-users-real-key\n")
    sync, ws = _sync(tmp_path, repo, watch)
    sync.seed()
    assert not (ws / ".env").exists()
    sync.pull()
    _tick()
    subprocess.run(["cp", ".env.example", ".env"], cwd=ws, check=True)
    report = sync.pull()
    assert (repo / ".env").read_text() == "API_KEY=the-users-real-key\n"
    assert any(r.startswith(".env (") for r in report.refused)


def test_moving_a_directory_keeps_the_host_only_files_inside_it(tmp_path: Path, watch: bool) -> None:
    repo = make_repo(tmp_path / "host", {"src/main.py": "print(1)\n", ".gitignore": "*.local\n"})
    (repo / "src" / ".env.local").write_text("TOKEN=2\n")
    sync, ws = _sync(tmp_path, repo, watch)
    sync.seed()
    sync.pull()
    _tick()
    os.rename(ws / "src", ws / "app")
    sync.pull()
    assert (repo / "app" / "main.py").read_text() == "print(1)\n"
    assert (repo / "src" / ".env.local").read_text() == "TOKEN=2\n"  # kept, and so is its directory
    assert not (repo / "src" / "main.py").exists()


def test_a_directory_replaced_by_a_moved_one_comes_back_with_its_contents(tmp_path: Path, watch: bool) -> None:
    repo = make_repo(tmp_path / "host", {"a/x.txt": "A\n", "b/x.txt": "B\n"})
    sync, ws = _sync(tmp_path, repo, watch)
    sync.seed()
    sync.pull()
    _tick()
    subprocess.run(["bash", "-c", "rm -rf b && mv a b"], cwd=ws, check=True)
    sync.pull()
    assert (repo / "b" / "x.txt").read_text() == "A\n" and not (repo / "a").exists()
    assert sync.pull().changed == 0


def test_submodules_and_nested_repositories_go_in_whole(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "host", {"main.c": "int main;\n"})
    nested = make_repo(repo / "vendor" / "lib", {"lib.c": "int lib;\n"})
    (nested / "local-wip.c").write_text("wip\n")
    sync, ws = _sync(tmp_path, repo)
    sync.seed()
    assert (ws / "vendor/lib/lib.c").read_text() == "int lib;\n"
    assert (ws / "vendor/lib/local-wip.c").exists() and (ws / "vendor/lib/.git/HEAD").exists()
    sync.pull()
    _tick()
    (ws / "vendor/lib/config.h").write_text("#define X\n")
    sync.pull()
    assert (repo / "vendor/lib/config.h").exists() and (repo / "vendor/lib/local-wip.c").exists()
    assert (repo / "vendor/lib/.git/HEAD").exists()


def test_a_leading_dash_in_a_host_directory_name_is_never_an_option(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "host", {"main.py": "x = 1\n", "setup.cfg": "[x]\n"})
    sync, ws = _sync(tmp_path, repo)
    sync.seed()
    sync.pull()
    sync.close()
    _tick()
    (repo / "-delete").mkdir()  # made here while nothing ran (a user, a rewind)
    (repo / "-delete" / "note.txt").write_text("n\n")
    fresh, _ = _sync(tmp_path, repo)
    fresh.reconcile()
    assert (ws / "main.py").exists() and (ws / "setup.cfg").exists()
    assert (ws / "-delete" / "note.txt").read_text() == "n\n"
    assert fresh.pull().changed == 0 and (repo / "main.py").exists()


def test_reconcile_never_sends_host_only_ignored_files(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    sync, ws = _sync(tmp_path, repo)
    sync.seed()
    sync.pull()
    sync.close()
    _tick()
    (repo / "secret.env").write_text("TOKEN=rotated\n")  # ignored, changed while nothing ran
    (repo / "notes.txt").write_text("n\n")
    fresh, _ = _sync(tmp_path, repo)
    fresh.reconcile()
    assert not (ws / "secret.env").exists() and (ws / "notes.txt").read_text() == "n\n"


def test_a_wiped_sync_directory_is_made_again_and_a_push_never_runs_as_commands(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    sync, ws = _sync(tmp_path, repo, watch=False)
    sync.seed()
    sync.pull()
    subprocess.run(["rm", "-rf", str(tmp_path / "syncdir")], check=True)  # a command ran rm -rf /tmp/*
    (repo / "tool.sh").write_text(f"touch {tmp_path}/pwned\n")
    assert sync.push(["tool.sh"]).written == ["tool.sh"]
    assert (ws / "tool.sh").exists() and not (tmp_path / "pwned").exists()
    _tick()
    (ws / "after.txt").write_text("a\n")
    assert "after.txt" in sync.pull().written


def test_a_watcher_that_cannot_start_costs_no_wait(tmp_path: Path, monkeypatch) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python3").write_text("#!/bin/sh\nexit 1\n")
    (fake / "python3").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    repo = _repo(tmp_path)
    sync, ws = _sync(tmp_path, repo, watch=True)
    sync.seed()
    _tick()
    (ws / "a.txt").write_text("scan\n")
    started = time.monotonic()
    report = sync.pull()
    assert not report.journal and "a.txt" in report.written
    assert time.monotonic() - started < 20  # it waited out no 60 s start-up (nor 10 s per scan)
    assert (repo / "a.txt").read_text() == "scan\n"


def test_a_large_file_is_streamed_not_held_in_memory(tmp_path: Path) -> None:
    import resource

    repo = _repo(tmp_path)
    sync, ws = _sync(tmp_path, repo)
    sync.seed()
    sync.pull()
    _tick()
    with open(ws / "big.bin", "wb") as f:
        for _ in range(200):
            f.write(os.urandom(1 << 20))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    sync.pull()
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert (repo / "big.bin").stat().st_size == 200 << 20
    assert grown_mb < 120, grown_mb  # a 200 MB file, spooled to disk and copied in chunks
