"""``kimi-code sandbox build | ls | prune``: a typer sub-app the CLI registers as ``sandbox``.

Errors are raised as SandboxError; the CLI's entry point prints them as one line with exit code 5.
"""

from __future__ import annotations

import json
import os

import typer
from rich.console import Console
from rich.table import Column, Table

from .base import BASE_IMAGE, BUILD_TAG

def table_console() -> Console:
    """A console for a table: a terminal's own width; piped (no terminal, no COLUMNS), a wide one,
    so ids and tasks come out whole instead of cut to 80 columns."""
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=200)
    return console


sandbox_app = typer.Typer(help="Manage kimi-code's Docker sandboxes.", no_args_is_help=True)


@sandbox_app.command("build")
def build(
    tag: str = typer.Option(BUILD_TAG, "--tag", help="Name of the image to build."),
    base: str = typer.Option(BASE_IMAGE, "--base", help="Debian-based image to start from."),
    pull: bool = typer.Option(False, "--pull", help="Fetch the base image again even if present."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Do not print the build log."),
) -> None:
    """Build the development image from sandbox/Dockerfile (needs the base image from a registry;
    without one use `sudo bash sandbox/build-offline-image.sh`)."""
    err = Console(stderr=True)
    err.print(f"building {tag} from {base} ...", highlight=False)
    from .images import build_image

    image_id = build_image(
        tag, base=base, pull=pull, on_output=None if quiet else (lambda s: err.out(s, end="", highlight=False))
    )
    typer.echo(f"built {tag} ({image_id[:19]}); use it with --image {tag}")


@sandbox_app.command("ls")
def ls(
    json_out: bool = typer.Option(False, "--json", help="Print JSON lines instead of a table."),
    all_owners: bool = typer.Option(False, "--all-owners", help="Also other users' containers (on a shared engine)."),
) -> None:
    """List your kimi-code containers with their sessions and status."""
    from .manage import list_containers

    rows = list_containers(all_owners=all_owners)
    if json_out:
        for row in rows:
            typer.echo(json.dumps(row.to_dict()))
        return
    if not rows:
        typer.echo("no kimi-code containers")
        return
    table = Table(Column("container", no_wrap=True), Column("session", no_wrap=True), "status", "image", "created",
                  "workspace", "mode", *(["owner"] if all_owners else []))
    for r in rows:
        table.add_row(r.name, r.session_id, r.status, r.image, r.created, r.workspace, r.workspace_mode,
                      *([r.owner or "?"] if all_owners else []))
    table_console().print(table)


@sandbox_app.command("prune")
def prune(
    all_: bool = typer.Option(False, "--all", help="Also remove running containers."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only show what would be removed."),
    copies: bool = typer.Option(False, "--copies", help="Also copy-mode containers (their work may not be on this machine)."),
    all_owners: bool = typer.Option(False, "--all-owners", help="Also other users' containers (on a shared engine)."),
) -> None:
    """Remove your containers of ended sessions (stopped ones; with --all, running ones too).
    Copy-mode containers are kept unless --copies: `kimi-code resume SESSION` brings their work back."""
    from .manage import ContainerSummary, prune_containers

    kept: list[ContainerSummary] = []
    removed = prune_containers(include_running=all_, dry_run=dry_run, all_owners=all_owners, copies=copies, kept=kept)
    verb = "would remove" if dry_run else "removed"
    for r in removed:
        typer.echo(f"{verb} {r.name} (session {r.session_id}, {r.status})")
    for r in kept:
        typer.echo(f"kept {r.name}: its workspace is a copy (session {r.session_id}); `kimi-code resume "
                   f"{r.session_id}` brings its work back, `--copies` removes it")
    typer.echo(f"{verb} {len(removed)} container(s)")
