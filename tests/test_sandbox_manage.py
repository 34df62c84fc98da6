"""`kimi-code sandbox ls / prune / build` and the backend factory, against the real daemon."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import TEST_IMAGE
from kimi_code.agent.config import Settings
from kimi_code.agent.errors import SandboxError
from kimi_code.sandbox.commands import sandbox_app
from kimi_code.sandbox.docker import DockerSandbox
from kimi_code.agent.assembly import LOCAL_WARNING, make_sandbox
from kimi_code.sandbox.images import build_image, missing_image_message
from kimi_code.sandbox.local import LocalSandbox
from kimi_code.sandbox.manage import list_containers, prune_containers


@pytest.mark.docker
def test_ls_and_prune_touch_only_labelled_containers(docker_sandbox_factory, docker_client) -> None:
    running = docker_sandbox_factory()
    stopped = docker_sandbox_factory()
    stopped.stop(remove=False)
    foreign = docker_client.containers.create(TEST_IMAGE, ["true"], name=f"not-kimi-{running.session_id}")
    try:
        names = {r.name: r for r in list_containers(docker_client)}
        assert names[running.name].status == "running" and names[running.name].session_id == running.session_id
        assert names[stopped.name].status == "exited"
        assert foreign.name not in names
        assert names[running.name].workspace == str(running.workspace)

        ours = {running.name, stopped.name, foreign.name}
        would = prune_containers(docker_client, dry_run=True)
        assert foreign.name not in {r.name for r in would}
        removed = prune_containers(docker_client, select=lambda r: r.name in ours)
        assert [r.name for r in removed] == [stopped.name]
        left = {c.name for c in docker_client.containers.list(all=True)}
        assert running.name in left and foreign.name in left and stopped.name not in left

        removed = prune_containers(docker_client, select=lambda r: r.name in ours, ended=lambda s: s == running.session_id)
        assert [r.name for r in removed] == [running.name]
        foreign.reload()  # still there, never touched
    finally:
        foreign.remove(force=True)


@pytest.mark.docker
def test_prune_keeps_to_its_owner_and_keeps_copies(docker_sandbox_factory, docker_client) -> None:
    """On a shared engine another user's containers are neither listed nor removed unless asked;
    one made before the owner label counts as anyone's; a stopped copy-mode container (whose copy
    may hold work not yet brought back) is kept unless --copies."""
    from kimi_code.sandbox.docker import LABEL_OWNER, owner_id

    mine = docker_sandbox_factory()
    mine.stop(remove=False)
    assert docker_client.containers.get(mine.name).labels[LABEL_OWNER] == owner_id()
    tag = mine.session_id[:8]

    def made(name: str, **labels: str):
        base = {"kimi-code.managed": "1", "kimi-code.session": f"{name}-{tag}", "kimi-code.created": "2026-01-01T00:00:00+00:00"}
        return docker_client.containers.create(TEST_IMAGE, ["true"], name=f"kimi-code-{name}-{tag}", labels={**base, **labels})

    theirs = made("theirs", **{LABEL_OWNER: "someone@elsewhere"})
    legacy = made("legacy")
    copy = made("copy", **{LABEL_OWNER: owner_id(), "kimi-code.workspace-mode": "copy"})
    names = {mine.name, theirs.name, legacy.name, copy.name}
    try:
        listed = {r.name for r in list_containers(docker_client)} & names
        assert listed == {mine.name, legacy.name, copy.name}
        everyone = {r.name: r for r in list_containers(docker_client, all_owners=True) if r.name in names}
        assert set(everyone) == names and everyone[theirs.name].owner == "someone@elsewhere"
        assert everyone[copy.name].workspace_mode == "copy" and everyone[mine.name].workspace_mode == "mount"

        kept: list = []
        removed = prune_containers(docker_client, select=lambda r: r.name in names, kept=kept)
        assert {r.name for r in removed} == {mine.name, legacy.name} and [r.name for r in kept] == [copy.name]
        left = {c.name for c in docker_client.containers.list(all=True)}
        assert theirs.name in left and copy.name in left

        result = CliRunner().invoke(sandbox_app, ["prune", "--dry-run"])
        assert result.exit_code == 0, result.output
        assert f"kept {copy.name}: its workspace is a copy" in result.output and theirs.name not in result.output
        removed = prune_containers(docker_client, select=lambda r: r.name in names, copies=True, all_owners=True)
        assert {r.name for r in removed} == {theirs.name, copy.name}
    finally:
        for c in (theirs, legacy, copy):
            with contextlib.suppress(Exception):
                c.remove(force=True)


@pytest.mark.docker
def test_cli_ls_json(docker_sandbox_factory) -> None:
    sb = docker_sandbox_factory()
    result = CliRunner().invoke(sandbox_app, ["ls", "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    mine = [r for r in rows if r["name"] == sb.name]
    assert mine and mine[0]["session_id"] == sb.session_id and mine[0]["status"] == "running"


@pytest.mark.docker
def test_build_reports_an_unpullable_base_in_one_line(docker_client) -> None:
    with pytest.raises(SandboxError) as err:
        build_image("kimi-code-test-build:never", base="kimi-code-test.invalid/none:latest", client=docker_client)
    message = str(err.value)
    assert message.startswith("cannot pull the base image kimi-code-test.invalid/none:latest")
    assert "build-offline-image.sh" in message and "\n" not in message


def test_missing_image_message() -> None:
    msg = missing_image_message("python:3.12-bookworm")
    assert "docker pull python:3.12-bookworm" in msg and "kimi-code sandbox build" in msg
    assert "bash sandbox/build-offline-image.sh python:3.12-bookworm" in msg


def test_factory_picks_backend(tmp_path: Path) -> None:
    warnings: list[str] = []
    local = make_sandbox(Settings(sandbox="none"), "s1", tmp_path, warn=warnings.append)
    assert isinstance(local, LocalSandbox) and warnings == [LOCAL_WARNING]
    settings = Settings(image="img:1", network=True, memory="1g", cpus=0.5, pids_limit=64, command_timeout=9.0)
    docker_sb = make_sandbox(settings, "s/2", tmp_path, warn=warnings.append)
    assert isinstance(docker_sb, DockerSandbox) and len(warnings) == 1
    assert (docker_sb.image, docker_sb.network, docker_sb.memory, docker_sb.cpus, docker_sb.pids_limit) == (
        "img:1", True, "1g", 0.5, 64,
    )
    assert docker_sb.default_timeout == 9.0 and docker_sb.name == "kimi-code-s-2"


def test_the_assembled_sandboxes_never_get_the_api_keys(tmp_path: Path, monkeypatch) -> None:
    """The sandbox package knows no providers: kimi-code's assembly names the keys to keep out."""
    monkeypatch.setenv("MOONSHOT_API_KEY", "sk-host")
    local = make_sandbox(Settings(sandbox="none"), "s1", tmp_path, warn=lambda _: None)
    assert "MOONSHOT_API_KEY" not in local._env
    docker_sb = make_sandbox(Settings(), "s2", tmp_path, warn=lambda _: None)
    assert {"MOONSHOT_API_KEY", "KIMI_API_KEY"} <= set(docker_sb._secret_env)
