"""``kimi-code demo``: the whole agent at work on a bundled bug, with no API key and no network.

A small sample repository (``demo-data/sample``: a word counter whose tokenizer ignores case,
punctuation and line breaks, with tests that show it) is copied into a fresh git repository, and a
bundled recording (``demo-data/recording.jsonl``) of a session that finds and fixes the bug is replayed
through the replay provider. Only the model's turns are recorded: the sandbox, the tools, the
session log and the checkpoints run for real, so the sample's tests really go from failing to
passing in the Docker sandbox.

The recording was produced by a scripted session (``tests/demo_recording.py`` regenerates it),
not by a live Kimi call; it shows what the agent does with a model's turns, not the model's quality.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .config import Settings, load_settings
from .errors import ConfigError

DEMO_DIR = Path(__file__).with_name("demo-data")
SAMPLE_DIR = DEMO_DIR / "sample"
RECORDING = DEMO_DIR / "recording.jsonl"
TASK = (
    "tally counts \"Hello,\" and \"hello\" as two different words, and words on either side of a line break "
    "come out glued together. Fix it so that the tests pass."
)
# The user's git config must not get in the way: no signing (a signer may fail or prompt), no hooks.
_GIT_OPTIONS = ("-c", "user.name=kimi-code demo", "-c", "user.email=demo@kimi-code.invalid",
                "-c", "commit.gpgsign=false", "-c", "core.hooksPath=/dev/null")


@dataclass
class DemoPlan:
    repo: Path
    settings: Settings
    notice: str | None  # why the demo runs without the Docker sandbox, when it does


def prepare_repo(dest: Path) -> Path:
    """Copy the sample into ``dest`` (which must not exist or be empty) as a one-commit git repo."""
    if dest.exists() and any(dest.iterdir()):
        raise ConfigError(f"--dir {dest} is not empty: give a new directory")
    shutil.copytree(SAMPLE_DIR, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))

    def git(*args: str) -> None:
        try:
            subprocess.run(["git", *_GIT_OPTIONS, "-C", str(dest), *args], check=True, capture_output=True,
                           text=True, timeout=60, stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise ConfigError("the demo needs git on PATH") from None
        except subprocess.TimeoutExpired:
            raise ConfigError(f"git {args[0]} in {dest} did not finish within 60 s") from None
        except subprocess.CalledProcessError as exc:
            raise ConfigError(f"git {args[0]} failed in {dest}: {exc.stderr.strip()[:200]}") from None

    git("init", "-q")
    git("symbolic-ref", "HEAD", "refs/heads/main")  # not `init -b`: git before 2.28 lacks it
    git("add", "-A")
    git("commit", "-q", "--no-verify", "-m", "tally: count words in text files")
    return dest


def docker_problem(image: str, notice: Callable[[str], None]) -> str | None:
    """Why the Docker sandbox can't be used for ``image`` (None when it can); pulls a missing image."""
    try:
        from kimi_code.sandbox.engine import connect
        from kimi_code.sandbox.images import ensure_image

        client = connect()
    except Exception as exc:  # noqa: BLE001 - any reason at all means: no Docker for the demo
        return f"no Docker daemon reachable: {' '.join(str(exc).split())[:200]}"
    try:
        ensure_image(client, image, on_notice=notice)
    except Exception:  # noqa: BLE001
        return f"the sandbox image {image} is not here and could not be pulled; --image IMAGE picks another"
    finally:
        client.close()
    return None


def plan(flags: dict[str, Any], directory: Path | None, notice: Callable[[str], None]) -> DemoPlan:
    """Where the demo runs and with which settings; falls back to ``--sandbox none`` without Docker."""
    if not RECORDING.is_file():
        raise ConfigError(f"the demo recording is missing from the installation ({RECORDING})")
    settings = load_settings({**flags, "model": f"replay:{RECORDING}"})
    why = None
    if settings.sandbox == "docker":
        problem = docker_problem(settings.image, notice)
        if problem is not None:
            what = "The Docker sandbox cannot be used" if problem.startswith("the sandbox image") else "Docker is not available"
            why = (f"{what} ({problem}). The demo runs with --sandbox none instead: its commands "
                   "(python3 running the sample's tests) run directly on this machine.")
            settings = settings.model_copy(update={"sandbox": "none"})
    base = directory or Path(tempfile.mkdtemp(prefix="kimi-code-demo-")) / "tally"
    return DemoPlan(prepare_repo(base.expanduser().resolve()), settings, why)


def epilogue(repo: Path, session_id: str, state_dir: Path, state_dir_given: bool = False) -> str:
    """What to look at next, and how to do the same with a real model."""
    flag = f" --state-dir {shlex.quote(str(state_dir))}" if state_dir_given else ""
    where = shlex.quote(str(repo))
    return "\n".join([
        "",
        f"The demo repository is {repo}",
        f"  the change:    git -C {where} diff",
        f"  the session:   kimi-code show {session_id}{flag}   (stored in {state_dir / session_id})",
        "",
        "That was a replay of a recorded session: no model was called and nothing was spent (the tokens and",
        "cost shown are the recorded session's). To have Kimi solve it for real, with your key:",
        f"  git -C {where} checkout -- .",
        f"  MOONSHOT_API_KEY=sk-... kimi-code run --repo {where} {shlex.quote(TASK)}",
    ])


def pace_for(output: str) -> float:
    """Streamed text is paced on a terminal so the run can be watched; elsewhere it comes at once."""
    return 0.004 if output == "text" and sys.stdout.isatty() else 0.0
