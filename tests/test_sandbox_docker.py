"""DockerSandbox against the real daemon and the offline-built test image (no fake client)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from conftest import TEST_IMAGE
from kimi_code.agent.errors import SandboxError
from kimi_code.sandbox.base import Sandbox
from kimi_code.sandbox.docker import CA_ENV_VARS, CA_PATH, DockerSandbox, connect, container_name
from kimi_code.sandbox.shell import TIMEOUT_EXIT_CODE

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parent.parent


def test_container_is_locked_down(docker_sandbox_factory, docker_client) -> None:
    sb = docker_sandbox_factory(memory="512m", cpus=1.5, pids_limit=200)
    assert isinstance(sb, Sandbox)
    info = sb.info()
    assert info.backend == "docker" and info.workspace == "/workspace" and info.status == "running"
    assert info.container_name == container_name(sb.session_id) and "Debian" in (info.os_release or "")
    attrs = docker_client.containers.get(sb.name).attrs
    host = attrs["HostConfig"]
    assert host["CapDrop"] == ["ALL"] and not host.get("CapAdd")
    # A root container also gets the profile that refuses setuid bits (sandbox/seccomp.py).
    from kimi_code.sandbox.seccomp import security_opt

    assert host["SecurityOpt"] == ["no-new-privileges", *([security_opt()] if sb._runs_as_root() else [])]
    assert host["Privileged"] is False
    assert host["NetworkMode"] == "none" and host["Init"] is True
    assert host["Memory"] == 512 * 2**20 and host["NanoCpus"] == 1_500_000_000 and host["PidsLimit"] == 200
    mounts = attrs["Mounts"]
    assert [(m["Type"], m["Destination"], m["RW"]) for m in mounts] == [("bind", "/workspace", True)]
    assert mounts[0]["Source"] == str(sb.workspace)
    labels = attrs["Config"]["Labels"]
    assert labels["kimi-code.managed"] == "1" and labels["kimi-code.session"] == sb.session_id
    assert labels["kimi-code.workspace"] == str(sb.workspace)
    assert sb.exec("test -e /var/run/docker.sock || echo no-socket").output == "no-socket\n"


def test_state_persists_across_commands(docker_sandbox_factory) -> None:
    sb = docker_sandbox_factory()
    assert sb.exec("pwd").output == "/workspace\n"
    assert sb.exec("mkdir -p a/b && cd a/b && export X='x y'").exit_code == 0
    assert sb.exec('pwd; echo "$X"').output == "/workspace/a/b\nx y\n"
    r = sb.exec("python3 -m venv --without-pip /tmp/venv && . /tmp/venv/bin/activate", timeout=60)
    assert r.exit_code == 0, r.output
    assert sb.exec("command -v python").output == "/tmp/venv/bin/python\n"


def test_exit_codes_output_and_duration(docker_sandbox_factory) -> None:
    sb = docker_sandbox_factory()
    r = sb.exec("echo out; echo err >&2; echo out2; (exit 42)")
    assert r.output == "out\nerr\nout2\n" and r.exit_code == 42 and 0 < r.duration < 5
    assert sb.exec("true").exit_code == 0
    assert sb.exec("false").exit_code == 1
    assert sb.exec("sh -c 'kill -9 $$'").exit_code == 137
    r = sb.exec("cd /tmp; exit 3")
    assert r.exit_code == 3 and r.shell_restarted
    assert sb.exec("pwd").output == "/tmp\n"


def test_memory_limit_kill_is_reported(docker_sandbox_factory) -> None:
    sb = docker_sandbox_factory(memory="96m")
    r = sb.exec("python3 -c 'x = bytearray(400 * 2**20)'")
    assert r.exit_code == 137 and any("memory limit (96m)" in n for n in r.notes), r
    assert sb.exec("echo still-here").output == "still-here\n"


def test_timeout_kills_process_tree_and_next_command_works(docker_sandbox_factory) -> None:
    sb = docker_sandbox_factory(kill_grace=1.0)
    sb.exec("export KEEP=yes")
    t = time.monotonic()
    r = sb.exec("sleep 1000 & bash -c 'sleep 1001 & sleep 1002; wait' & wait", timeout=1.5)
    assert time.monotonic() - t < 8
    assert r.timed_out and r.exit_code == TIMEOUT_EXIT_CODE and not r.shell_restarted
    ps = sb.exec("ps -eo args")
    assert ps.exit_code == 0 and "sleep 100" not in ps.output
    assert sb.exec('echo "$KEEP"').output == "yes\n"


@pytest.mark.slow
def test_timeout_in_a_shell_builtin_restarts_the_shell(docker_sandbox_factory) -> None:
    sb = docker_sandbox_factory(kill_grace=0.5)
    sb.exec("cd /tmp")
    r = sb.exec("while :; do :; done", timeout=1)
    assert r.timed_out and r.shell_restarted and any("new shell" in n for n in r.notes)
    assert sb.exec("pwd").output == "/tmp\n"


def test_50mb_output_is_capped_and_saved(docker_sandbox_factory) -> None:
    sb = docker_sandbox_factory()
    t = time.monotonic()
    r = sb.exec("echo START; yes 0123456789abcdefghij | head -c 50000000; echo; echo END", timeout=60)
    elapsed = time.monotonic() - t
    assert r.exit_code == 0 and r.truncated and r.full_output_path
    assert r.output.startswith("START\n0123456789") and r.output.endswith("\nEND\n")
    assert len(r.output) <= sb.output_cap + 300 and r.full_output_path in r.output
    assert elapsed < 15
    size = sb.exec(f"stat -c %s {r.full_output_path}; tail -n 1 {r.full_output_path}").output.split()
    assert int(size[0]) == 50_000_000 + len("START\n") + len("\nEND\n") and size[1] == "END"


def test_files_are_owned_by_the_workspace_user(docker_sandbox_factory, tmp_path: Path) -> None:
    ws = tmp_path / "owned"
    ws.mkdir()
    os.chown(ws, 1234, 1234)
    sb = docker_sandbox_factory(ws)
    r = sb.exec("id -u; id -g; echo $HOME; touch new.txt; mkdir made; touch $HOME/ok && echo home-ok")
    assert r.output.split() == ["1234", "1234", "/tmp/kimi-home", "home-ok"], r.output
    for name in ("new.txt", "made"):
        st = (ws / name).stat()
        assert (st.st_uid, st.st_gid) == (1234, 1234)


def test_no_network_by_default(docker_sandbox_factory) -> None:
    sb = docker_sandbox_factory()
    assert sb.exec("ls /sys/class/net").output.split() == ["lo"]
    r = sb.exec("python3 -c \"import socket; socket.create_connection(('1.1.1.1', 53), timeout=3)\"")
    assert r.exit_code != 0 and "unreachable" in r.output.lower()
    net = docker_sandbox_factory(network=True)
    assert "eth0" in net.exec("ls /sys/class/net").output.split()


def test_api_key_never_enters(docker_sandbox_factory, docker_client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOONSHOT_API_KEY", "sk-should-never-leak")
    monkeypatch.setenv("KIMI_CODE_HOST_ONLY", "host-value")
    sb = docker_sandbox_factory(env={"KIMI_API_KEY": "sk-explicit-leak", "FOO": "bar"})
    r = sb.exec("env; tr '\\0' '\\n' </proc/1/environ")
    assert "sk-should-never-leak" not in r.output and "MOONSHOT_API_KEY" not in r.output
    assert "sk-explicit-leak" not in r.output and "KIMI_API_KEY" not in r.output
    assert "host-value" not in r.output
    assert "FOO=bar" in r.output and "HOME=/tmp/kimi-home" in r.output
    env = docker_client.containers.get(sb.name).attrs["Config"]["Env"]
    assert not any("sk-" in e for e in env)


def test_ca_bundle_is_copied_and_trusted(docker_sandbox_factory, tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\nkimi-test\n-----END CERTIFICATE-----\n")
    sb = docker_sandbox_factory(ca_bundle=bundle)
    r = sb.exec(f"cat {CA_PATH}; " + "; ".join(f'echo "${v}"' for v in CA_ENV_VARS))
    lines = r.output.splitlines()
    assert lines[:3] == bundle.read_text().splitlines()
    assert lines[3:] == [CA_PATH] * len(CA_ENV_VARS)


def test_stdin_eof_background_and_binary(docker_sandbox_factory) -> None:
    sb = docker_sandbox_factory()
    t = time.monotonic()
    r = sb.exec("cat; read -r x; echo read=$?; python3 -c 'input()' 2>&1 | tail -1", timeout=20)
    assert time.monotonic() - t < 5 and "read=1" in r.output and "EOFError" in r.output
    t = time.monotonic()
    r = sb.exec("python3 -m http.server 8123 >/dev/null 2>&1 & sleep 300 & echo started", timeout=20)
    assert time.monotonic() - t < 3 and r.output == "started\n"
    assert "sleep 300" in sb.exec("ps -eo args").output
    r = sb.exec(r"printf 'ok\xff\xfe\x00'; head -c 100000 /dev/urandom")
    assert r.exit_code == 0 and r.output.startswith("ok\ufffd\ufffd\x00")


@pytest.mark.slow
def test_fork_bomb_is_contained(docker_sandbox_factory) -> None:
    sb = docker_sandbox_factory(pids_limit=128, kill_grace=1.0)
    latencies: list[float] = []
    done = threading.Event()

    def probe() -> None:
        while not done.is_set():
            t = time.monotonic()
            subprocess.run(["true"], check=True)
            latencies.append(time.monotonic() - t)
            time.sleep(0.1)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    t = time.monotonic()
    try:
        r = sb.exec("bomb() { bomb | bomb & }; bomb; sleep 60", timeout=4)
    finally:
        done.set()
        thread.join(10)
    assert time.monotonic() - t < 45
    assert r.timed_out
    assert latencies and max(latencies) < 2.0  # the host kept answering
    r = sb.exec("echo alive; ps -e --no-headers | wc -l", timeout=30)
    lines = r.output.split()
    assert lines[0] == "alive" and int(lines[1]) < 20, r.output


def test_reattach_after_the_controller_is_sigkilled(docker_sandbox_factory, tmp_path: Path) -> None:
    holder = docker_sandbox_factory(tmp_path, start=False)  # registers cleanup for the session
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from kimi_code.sandbox.docker import DockerSandbox
        sb = DockerSandbox({holder.session_id!r}, Path({str(tmp_path)!r}), image={TEST_IMAGE!r})
        sb.start()
        r = sb.exec("mkdir -p $HOME/.local/lib && echo pkg-v1 > $HOME/.local/lib/installed && echo ok")
        print(r.output.strip(), flush=True)
        sb.exec("sleep 600")  # killed in the middle of a command
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ok"
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    sb = DockerSandbox(holder.session_id, tmp_path, image=TEST_IMAGE, client=holder.client)
    assert sb.reattach() is True
    assert sb.exec("cat $HOME/.local/lib/installed").output == "pkg-v1\n"
    sb.stop(remove=False)  # kept: stopped, and a later reattach starts it again
    again = DockerSandbox(holder.session_id, tmp_path, image=TEST_IMAGE, client=holder.client)
    assert again.reattach() is True and again.info().status == "running"
    assert again.exec("cat $HOME/.local/lib/installed").output == "pkg-v1\n"
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    with pytest.raises(SandboxError, match="mounts"):  # same session, another directory: refused
        DockerSandbox(holder.session_id, elsewhere, image=TEST_IMAGE, client=holder.client).reattach()
    again.stop()
    assert DockerSandbox(holder.session_id, tmp_path, image=TEST_IMAGE, client=holder.client).reattach() is False


@pytest.mark.slow
def test_dead_container_is_restarted_and_reported(docker_sandbox_factory, docker_client) -> None:
    sb = docker_sandbox_factory()
    sb.exec("echo kept > /tmp/outside-workspace")
    killer = threading.Timer(1.0, lambda: docker_client.containers.get(sb.name).kill())
    killer.start()
    r = sb.exec("sleep 30", timeout=60)
    killer.join()
    assert r.sandbox_restarted and r.shell_restarted and r.duration < 20
    assert any("died" in n for n in r.notes)
    assert sb.exec("cat /tmp/outside-workspace").output == "kept\n"
    # Removed behind our back: a new container is created, and the loss is said.
    docker_client.containers.get(sb.name).remove(force=True)
    r = sb.exec("echo hello")
    assert r.sandbox_restarted and any("was gone" in n for n in r.notes)
    assert sb.exec("echo hello").output == "hello\n"


def test_foreign_container_with_our_name_is_left_alone(docker_sandbox_factory, docker_client) -> None:
    sb = docker_sandbox_factory(start=False)
    foreign = docker_client.containers.create(TEST_IMAGE, ["sleep", "5"], name=sb.name)
    try:
        with pytest.raises(SandboxError, match="not created by kimi-code"):
            sb.start()
        with pytest.raises(SandboxError, match="not created by kimi-code"):
            sb.reattach()
        foreign.reload()
        assert foreign.status == "created"
    finally:
        foreign.remove(force=True)


def test_missing_image_names_every_way_to_get_one(docker_sandbox_factory) -> None:
    sb = docker_sandbox_factory(image="kimi-code-test-missing:nope", start=False)
    with pytest.raises(SandboxError) as err:
        sb.start()
    message = str(err.value)
    assert "docker pull kimi-code-test-missing:nope" in message
    assert "kimi-code sandbox build" in message and "sandbox/build-offline-image.sh" in message
    assert "\n" not in message


def test_daemon_not_running_is_one_clear_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-daemon.sock")
    with pytest.raises(SandboxError, match="Docker daemon is not running") as err:
        connect(timeout=5)
    assert "\n" not in str(err.value)


def test_no_permission_on_the_socket_is_one_clear_line(docker_client) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to try the socket as another uid")
    connect(timeout=5).close()  # everything the client needs is imported before the fork
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: an unprivileged uid not in the docker group
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(4321)
            os.setuid(4321)
            try:
                connect(timeout=5)
                message = "connected?!"
            except SandboxError as exc:
                message = str(exc)
            os.write(write_end, message.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as fh:
        message = fh.read().decode()
    os.waitpid(pid, 0)
    assert message.startswith("no permission to use the Docker socket"), message
    assert "\n" not in message


@pytest.mark.docker
def test_git_dir_is_read_only_inside_so_host_git_cannot_be_subverted(docker_sandbox_factory, tmp_path: Path) -> None:
    """Hooks, fsmonitor or filter drivers planted in .git would run on the host when kimi-code's
    checkpoints run git there: the sandbox must not be able to write .git at all."""
    import subprocess

    ws = tmp_path / "repo"
    ws.mkdir()
    subprocess.run(["git", "init", "-q", str(ws)], check=True)
    (ws / "a.txt").write_text("a\n")
    sandbox = docker_sandbox_factory(ws)
    planted = sandbox.exec(
        "printf '#!/bin/sh\\ntouch /workspace/PWNED\\n' > .git/hooks/reference-transaction; echo hook=$?; "
        "git config core.fsmonitor 'touch /workspace/PWNED'; echo cfg=$?; git status --short; echo status=$?"
    )
    assert "hook=0" not in planted.output and "cfg=0" not in planted.output
    assert "status=0" in planted.output and "a.txt" in planted.output  # history is still readable
    assert not (ws / ".git" / "hooks" / "reference-transaction").exists()
    assert (sandbox.exec("echo ok > b.txt && cat b.txt").output.strip() == "ok")  # the worktree stays writable


def _repo_and_worktree(tmp_path: Path) -> tuple[Path, Path]:
    """A repository with one commit ("initial") and a linked worktree of it on branch "feature"."""
    from helpers import git, make_repo

    main = make_repo(tmp_path / "main", {"a.txt": "a\n"})
    wt = tmp_path / "wt"
    git(main, "worktree", "add", "-q", "-b", "feature", str(wt))
    return main, wt


@pytest.mark.docker
def test_git_works_in_a_linked_worktree_and_its_repository_stays_read_only(docker_sandbox_factory, tmp_path: Path) -> None:
    """A workspace made by `git worktree add` names the main repository's .git by its host path:
    that directory is there in the sandbox, read-only, so git sees the worktree's branch and
    changes and still cannot plant anything the host's git would run."""
    main, wt = _repo_and_worktree(tmp_path)
    (wt / "a.txt").write_text("changed\n")
    sandbox = docker_sandbox_factory(wt)
    dot_git = (wt / ".git").read_text()
    out = sandbox.exec("git rev-parse --abbrev-ref HEAD; git status --short; "
                       "printf x > \"$(git rev-parse --git-common-dir)/hooks/post-checkout\"; echo hook=$?; "
                       "echo 'gitdir: .evil' > .git; echo redirect=$?").output
    assert out.splitlines()[:2] == ["feature", " M a.txt"], out
    assert "hook=0" not in out and not (main / ".git" / "hooks" / "post-checkout").exists()
    # The .git file cannot be pointed elsewhere: the host's git would follow it.
    assert "redirect=0" not in out and (wt / ".git").read_text() == dot_git


@pytest.mark.docker
def test_a_worktree_linked_by_a_relative_path_works_in_the_sandbox(docker_sandbox_factory, tmp_path: Path) -> None:
    """`git worktree add` with relative paths (git 2.48's worktree.useRelativePaths) names the git
    directory relative to the worktree: it is mounted where that resolves from /workspace."""
    main, wt = _repo_and_worktree(tmp_path)
    # What git writes with relative paths (older gits write absolute ones).
    (wt / ".git").write_text("gitdir: ../main/.git/worktrees/wt\n")
    (main / ".git" / "worktrees" / "wt" / "gitdir").write_text("../../../../wt/.git\n")
    assert subprocess.run(["git", "-C", str(wt), "rev-parse", "--abbrev-ref", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip() == "feature"
    out = docker_sandbox_factory(wt).exec("git rev-parse --abbrev-ref HEAD; git log -1 --format=%s").output
    assert out.splitlines()[:2] == ["feature", "initial"], out


@pytest.mark.docker
def test_setuid_files_created_as_root_are_defused(docker_sandbox_factory, tmp_path: Path) -> None:
    """Running as root (CI: root CLI, root-owned checkout), the sandbox could leave a setuid-root
    shell in the workspace for a host user to run: no way of making one may work, not even from a
    background process that outlives its command, and ordinary modes still can be set."""
    ws = tmp_path / "rootws"
    ws.mkdir()
    os.chown(ws, 0, 0)
    sandbox = docker_sandbox_factory(ws)
    if not sandbox._runs_as_root():
        pytest.skip("the sandbox does not run as root here")
    attempts = (
        "cp /bin/sh a; chmod 4755 a; chmod g+s a; install -m 4755 /bin/sh b; "
        "perl -e 'use Fcntl; sysopen(F, \"c\", O_CREAT|O_WRONLY, 06755)'; "
        "python3 -c 'import os, ctypes; os.mknod(\"d\", 0o104755)'; "
        "python3 -c 'import ctypes; ctypes.CDLL(None).syscall(452, -100, b\"a\", 0o4755, 0)'; "
        "(sleep 1; cp /bin/sh late; chmod 4755 late; touch late-done) >/dev/null 2>&1 &"
    )
    sandbox.exec(attempts)
    assert sandbox.exec("chmod 700 a && stat -c %a a").output.strip() == "700"  # plain modes still work
    deadline = time.monotonic() + 20
    while not (ws / "late-done").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (ws / "late-done").exists()
    for path in ws.iterdir():
        assert not path.lstat().st_mode & 0o6000, path.name
    # The per-command sweep is gone: a command costs the persistent shell only.
    assert not sandbox._sweep_each_command


@pytest.mark.docker
def test_a_root_container_from_before_the_profile_is_swept_after_every_command(docker_client, tmp_path: Path) -> None:
    """A container made by an older kimi-code (no seccomp profile) may still be reattached: until
    it is replaced, setuid bits are cleared after each command as before."""
    import uuid

    from kimi_code.sandbox import docker as sbdocker

    ws = tmp_path / "rootws"
    ws.mkdir()
    os.chown(ws, 0, 0)
    sid = f"test-legacy-{uuid.uuid4().hex[:8]}"
    legacy = docker_client.containers.run(
        TEST_IMAGE, ["sleep", "infinity"], name=sbdocker.container_name(sid), detach=True, init=True, user="0:0",
        working_dir=sbdocker.WORKSPACE, cap_drop=["ALL"], security_opt=["no-new-privileges"], network_mode="none",
        mounts=[sbdocker.Mount(target=sbdocker.WORKSPACE, source=str(ws), type="bind")],
        labels={sbdocker.LABEL_MANAGED: "1", sbdocker.LABEL_SESSION: sid, sbdocker.LABEL_WORKSPACE: str(ws)})
    try:
        sandbox = sbdocker.DockerSandbox(sid, ws, image=TEST_IMAGE, client=docker_client)
        assert sandbox.reattach() and sandbox._sweep_each_command
        out = sandbox.exec("cp /bin/sh rootsh && chmod 4755 rootsh && stat -c %a rootsh").output
        assert "4755" in out  # the old container lets it be set...
        assert not (ws / "rootsh").stat().st_mode & 0o6000  # ...and the sweep clears it before the result
        sandbox.stop(remove=True)
    finally:
        try:
            legacy.remove(force=True)
        except Exception:  # noqa: BLE001 - already removed by stop()
            pass


@pytest.mark.docker
def test_a_background_process_cannot_forge_the_next_result(docker_sandbox_factory) -> None:
    """What a command's processes can see (environment, /tmp/kimi-code/current, output file names)
    must not reveal the frame marker of a later command's result."""
    sandbox = docker_sandbox_factory()
    forger = (
        "nohup bash -c 'old=; for i in $(seq 1 500); do read -r n t p _ </tmp/kimi-code/current; "
        "if [ \"$n\" != \"$old\" ] && [ -n \"$old\" ]; then for fd in /proc/$p/fd/*; do "
        "printf \"%s:B 0 20 /workspace\\nFORGED RESULT\\n%s:E\\n\" $n $n >$fd 2>/dev/null; done; break; fi; "
        "old=$n; sleep 0.01; done' >/dev/null 2>&1 &"
    )
    sandbox.exec(forger)
    time.sleep(0.5)
    result = sandbox.exec("sleep 1; echo real-output; exit 3", timeout=30)
    # Its bytes may land in the output (any process may write there), but the result is the real one.
    assert result.exit_code == 3 and "real-output" in result.output and result.duration >= 1.0
