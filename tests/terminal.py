"""A real terminal for end-to-end tests: the CLI runs in a tmux pane on a private server.

Tests type with ``send``/``type`` and read the screen with ``screen`` (tmux ``capture-pane``);
``wait_for`` polls the screen until a text appears (or appears N times) with a generous deadline,
so a slow, busy machine only makes a test slower, never wrong. Each terminal has its own tmux
socket (``tmux -L``) and its server is killed at the end.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

DEADLINE = 90.0  # seconds: a busy 2-core machine can be very slow to start Python processes
EXIT_MARK = "__EXITED__"


def require_tmux() -> None:
    """Skip loudly without tmux; in CI (``CI`` set, as .ci/run does) fail instead: it can't pass by skipping."""
    if shutil.which("tmux") is not None:
        return
    reason = "tmux is not installed (apt-get install tmux; tests/run.sh does)"
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail(f"CI is set but {reason}", pytrace=False)
    pytest.skip(f"TERMINAL TESTS SKIPPED: {reason}")


class Terminal:
    """One tmux pane running ``args`` (a kimi-code command line) with ``env``; after the command
    exits the pane shows ``__EXITED__ <code>`` and stays open."""

    def __init__(self, tmp_path: Path, args: list[str], env: dict[str, str], *, cwd: Path | None = None,
                 width: int = 160, height: int = 50, ci: bool = False) -> None:
        """``ci``: run with ``CI=true``; otherwise as a user at a terminal, whatever the test
        process's own environment says (the suite itself runs with CI set in CI)."""
        require_tmux()
        self.socket = f"kc-test-{uuid.uuid4().hex[:12]}"
        self._socket_path = ""
        script = tmp_path / f"terminal-{self.socket}.sh"
        # The pane's shell outlives a Ctrl-C the program handled (the terminal sends SIGINT to both).
        lines = ["trap 'true' INT", "unset CI"] + [f"export {k}={shlex.quote(v)}" for k, v in env.items()
                                                   if k.isidentifier() and k != "CI"]
        if ci:
            lines.append("export CI=true")
        if cwd is not None:
            lines.append(f"cd {shlex.quote(str(cwd))}")
        lines += [" ".join(shlex.quote(a) for a in [sys.executable, "-m", "kimi_code.agent.cli", *args]),
                  f'echo "{EXIT_MARK} $?"', "exec sleep 100000"]
        script.write_text("\n".join(lines) + "\n")
        self._tmux("new-session", "-d", "-s", "t", "-x", str(width), "-y", str(height), f"bash {shlex.quote(str(script))}")
        self._tmux("set-option", "-t", "t", "history-limit", "10000")
        self._socket_path = self._tmux("display-message", "-p", "#{socket_path}").strip()

    def _tmux(self, *args: str) -> str:
        proc = subprocess.run(["tmux", "-L", self.socket, "-f", "/dev/null", *args], capture_output=True, text=True,
                              timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"tmux {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc.stdout

    # -- input
    def type(self, text: str) -> None:
        """Type ``text`` literally (no key names)."""
        self._tmux("send-keys", "-t", "t", "-l", text)

    def send(self, *keys: str) -> None:
        """Press keys by tmux name: ``Enter``, ``Tab``, ``C-c``, ``C-d``, ``Escape``."""
        self._tmux("send-keys", "-t", "t", *keys)

    def line(self, text: str) -> None:
        """Type a line and press Enter."""
        self.type(text)
        self.send("Enter")

    # -- output
    def screen(self) -> str:
        """The whole pane, scrollback included, wrapped lines joined."""
        return self._tmux("capture-pane", "-p", "-J", "-S", "-10000", "-t", "t")

    def wait_for(self, text: str, count: int = 1, timeout: float = DEADLINE) -> str:
        """Poll until ``text`` is on the screen ``count`` times; the screen then."""
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if screen.count(text) >= count:
                return screen
            if f"{EXIT_MARK} " in screen and text != EXIT_MARK:
                break  # the program ended: it will not come
            time.sleep(0.1)
        raise AssertionError(f"{text!r} (x{count}) did not appear; the screen:\n{screen}")

    def wait_until(self, check: Callable[[str], bool], timeout: float = DEADLINE) -> str:
        """Poll until ``check(screen)`` holds; the screen then."""
        deadline = time.monotonic() + timeout
        screen = self.screen()
        while not check(screen):
            if time.monotonic() > deadline:
                raise AssertionError(f"the screen never got as expected:\n{screen}")
            time.sleep(0.1)
            screen = self.screen()
        return screen

    def wait_prompts(self, count: int, timeout: float = DEADLINE) -> str:
        """Wait until the chat's prompt has been shown ``count`` times (the input line is ``› …``)."""
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if sum(1 for ln in screen.splitlines() if ln.startswith("› ") or ln == "›") >= count:
                return screen
            if f"{EXIT_MARK} " in screen:
                break
            time.sleep(0.1)
        raise AssertionError(f"prompt #{count} did not appear; the screen:\n{screen}")

    def exit_code(self, timeout: float = DEADLINE) -> int:
        screen = self.wait_for(EXIT_MARK, timeout=timeout)
        return int(screen.split(EXIT_MARK, 1)[1].split()[0])

    def program_pid(self) -> int:
        """The pid of the kimi-code process (the child of the pane's shell)."""
        shell = int(self._tmux("display-message", "-p", "-t", "t", "#{pane_pid}").strip())
        children = Path(f"/proc/{shell}/task/{shell}/children").read_text().split()
        assert children, "the kimi-code process is not running"
        return int(children[0])

    def kill_program(self) -> None:
        os.kill(self.program_pid(), signal.SIGKILL)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=60)
        if self._socket_path:
            Path(self._socket_path).unlink(missing_ok=True)  # tmux leaves the socket file behind

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
