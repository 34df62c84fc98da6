"""``python -m benchmarks.swebench run TASKS.jsonl ...``: the command line of the harness."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from .errors import BenchError
from .progress import Progress
from .records import load_tasks
from .runner import DEFAULT_IMAGE, ENV_SOURCES, BenchRunner, RunConfig, parse_duration, parse_python_images

app = typer.Typer(name="swebench", help="Run kimi-code on SWE-bench-format tasks and grade the results.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


@app.callback()
def _root() -> None:
    """SWE-bench-format task runner."""


@app.command()
def run(
    tasks_file: Path = typer.Argument(..., help="JSONL of SWE-bench records."),
    ids: Optional[list[str]] = typer.Option(None, "--ids", help="Instance ids to run (repeat, or comma-separated)."),
    repos_dir: Optional[Path] = typer.Option(None, "--repos-dir", help="Local clones or bare mirrors, one owner+name folder per repository (else cloned from GitHub)."),
    model: str = typer.Option("kimi-k2.6", "--model", help="Model for kimi-code, or 'oracle' (the gold patch through the real loop, no model)."),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint (default: kimi-code's)."),
    thinking: Optional[bool] = typer.Option(None, "--thinking/--no-thinking", help="Kimi thinking mode."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", min=1, help="Per task: stop after this many model turns."),
    max_cost: Optional[float] = typer.Option(None, "--max-cost", min=0, help="Per task: stop at this cost (USD)."),
    max_time: Optional[str] = typer.Option(None, "--max-time", help="Per task: stop after this long (e.g. 30m)."),
    workers: int = typer.Option(1, "--workers", min=1, help="Tasks run concurrently."),
    image: str = typer.Option(DEFAULT_IMAGE, "--image", help="Base image the environment images are built from."),
    python_image: Optional[list[str]] = typer.Option(None, "--python-image", help="VERSION=IMAGE: build environments that need this Python from IMAGE, which has it (no uv download). Repeatable."),
    ca_bundle: Optional[Path] = typer.Option(None, "--ca-bundle", help="Host CA bundle trusted by environment builds and the agent's sandbox."),
    network: bool = typer.Option(False, "--network/--no-network", help="Network in the agent's sandbox (environment builds always have it)."),
    out: Path = typer.Option(Path("results.jsonl"), "--out", help="Results JSONL (one line per task)."),
    predictions: Optional[Path] = typer.Option(None, "--predictions", help="SWE-bench predictions JSONL for the official harness (default: beside --out, NAME.predictions.jsonl)."),
    model_name: Optional[str] = typer.Option(None, "--model-name", help="model_name_or_path in the predictions (default: kimi-code/MODEL)."),
    work_dir: Path = typer.Option(Path(".swebench-work"), "--work-dir", help="Mirrors, checkouts, logs and session state."),
    env_timeout: float = typer.Option(3600, "--env-timeout", help="Seconds allowed to build one environment."),
    test_timeout: float = typer.Option(1800, "--test-timeout", help="Seconds allowed for grading one task's tests."),
    keep_trees: bool = typer.Option(False, "--keep-trees", help="Keep each task's checkouts (for debugging)."),
    docker_host: Optional[str] = typer.Option(None, "--docker-host", help="Docker engine URL (e.g. tcp://build-host:2375) for environment builds, grading and the agent's sandbox; one that is not this machine's own socket gets the files copied in, never mounted."),
    env: str = typer.Option("build", "--env", help="Environments: 'build' (images built from the recipes) or 'swebench-images' (SWE-bench's own per-instance images, the repository installed at /testbed)."),
    swebench_namespace: str = typer.Option("swebench", "--swebench-namespace", help="Registry namespace of the SWE-bench images (--env swebench-images)."),
    verbose: bool = typer.Option(False, "--verbose", help="Show environment builds' output on the console too (it always goes to work-dir/env-logs/)."),
) -> None:
    """Run the agent on each task, grade it like SWE-bench, write results and print a summary."""
    from .report import ResultsWriter, print_summary

    python_images = parse_python_images(python_image or [])  # flags first, before any work
    if env not in ENV_SOURCES:
        raise BenchError(f"--env {env!r}: use one of {', '.join(ENV_SOURCES)}")
    wanted = [i.strip() for chunk in (ids or []) for i in chunk.split(",") if i.strip()]
    tasks = load_tasks(tasks_file, wanted or None)
    parse_duration(max_time)
    cfg = RunConfig(work_dir=work_dir.resolve(), model=model, base_url=base_url, thinking=thinking,
                    max_steps=max_steps, max_cost=max_cost, max_time=max_time, image=image,
                    ca_bundle=ca_bundle.resolve() if ca_bundle else None, network=network,
                    repos_dir=repos_dir.resolve() if repos_dir else None, workers=workers,
                    env_timeout=env_timeout, test_timeout=test_timeout, keep_trees=keep_trees,
                    python_images=python_images, verbose=verbose, docker_host=docker_host or None,
                    env=env, swebench_namespace=swebench_namespace)
    predictions = predictions or out.with_name(out.stem + ".predictions.jsonl")
    writer = ResultsWriter(out, predictions, model_name or f"kimi-code/{model}")
    progress = Progress(len(tasks), workers)

    def finished(result) -> None:  # type: ignore[no-untyped-def]
        writer.write(result)
        progress.finish(result)

    try:
        results = BenchRunner(cfg, on_result=finished, on_notice=progress.notice, on_start=progress.start).run(tasks)
    finally:
        progress.close()
        writer.close()
    print_summary(results)
    typer.echo(f"results: {out}; predictions (SWE-bench format): {predictions}", err=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point: a user error is one line and exit 2, never a traceback."""
    try:
        app(args=argv, standalone_mode=False)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # click usage errors carry their own message and code
        if callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":  # pragma: no cover
    main()
