"""The `kimi-code` command line: parses flags, builds objects, maps errors to exit codes.

Kept thin on purpose: every behaviour lives in a module of its own; this file only wires them.
"""

from __future__ import annotations

import json
import sys
import traceback
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from . import config as config_mod
from .errors import EXIT_INTERRUPTED, KimiCodeError

app = typer.Typer(
    name="kimi-code",
    help="A long-horizon, crash-safe coding agent for Kimi K2.x.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Show the configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")

err_console = Console(stderr=True)
_debug = {"on": False}


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors.", envvar="KIMI_CODE_DEBUG"),
) -> None:
    _debug["on"] = debug


# -- shared option helpers ---------------------------------------------------------------------
ModelOpt = typer.Option(None, "--model", help="Model name (default kimi-k2.6).")
BaseUrlOpt = typer.Option(None, "--base-url", help="OpenAI-compatible base URL (env MOONSHOT_BASE_URL).")
ProviderOpt = typer.Option(None, "--provider", help="Endpoint preset: " + ", ".join(config_mod.PROVIDERS))


def endpoint_flags(model: Optional[str], base_url: Optional[str], provider: Optional[str]) -> dict[str, Any]:
    return {"model": model, "base_url": base_url, "provider": provider}


# -- config ------------------------------------------------------------------------------------
@config_app.command("path")
def config_path() -> None:
    """Print the config file's path."""
    typer.echo(str(config_mod.user_config_path()))


@config_app.command("show")
def config_show(
    model: Optional[str] = ModelOpt, base_url: Optional[str] = BaseUrlOpt, provider: Optional[str] = ProviderOpt
) -> None:
    """Print the effective settings as JSON (the API key only as set / not set)."""
    settings = config_mod.load_settings(endpoint_flags(model, base_url, provider))
    typer.echo(json.dumps(settings.public_dict(), indent=2))


@config_app.command("providers")
def config_providers() -> None:
    """List the endpoint presets and the model table."""
    console = Console()
    table = Table("provider", "base URL", "key variables", "description")
    for p in config_mod.PROVIDERS.values():
        table.add_row(p.name, p.base_url or "(--base-url)", ", ".join(p.key_envs), p.description)
    console.print(table)
    models = Table("model", "context", "max output", "thinks", "$/M input", "$/M cached", "$/M output")
    for m in config_mod.MODELS.values():
        models.add_row(m.name, f"{m.context_window:,}", f"{m.max_output_tokens:,}", "yes" if m.thinks else "no",
                       f"{m.price_input:.2f}", f"{m.price_cached_input:.2f}", f"{m.price_output:.2f}")
    console.print(models)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: one clear line and an exit code for user errors."""
    try:
        app(args=argv, standalone_mode=False)
    except KimiCodeError as exc:
        if _debug["on"]:
            traceback.print_exc()
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except SystemExit:
        raise
    except Exception as exc:  # click usage errors (typer vendors click) and anything unexpected
        if callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()
            sys.exit(exc.exit_code)
        if exc.__class__.__name__ == "Abort":
            err_console.print("aborted")
            sys.exit(EXIT_INTERRUPTED)
        if _debug["on"]:
            traceback.print_exc()
        err_console.print(f"[bold red]internal error:[/] {exc.__class__.__name__}: {exc} (run with --debug for the traceback)",
                          highlight=False, soft_wrap=True)
        sys.exit(70)


if __name__ == "__main__":  # pragma: no cover
    main()
