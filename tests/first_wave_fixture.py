"""Writes tests/fixtures/first_wave/: a session log made by the first wave of kimi-code, and the
state the first wave folded it into, so later versions can prove they still load, fold and resume
such logs (tests/test_old_logs.py).

The committed fixture was made by running this script with kimi-code at commit 66e3db7:

    python tests/first_wave_fixture.py

The session: a run stopped by --max-steps after a compaction (a 16,000-token window), resumed,
stopped again, rewound to an earlier step, and left there (unfinished, so a test can resume it).
Its repository lives at a fixed path (REPO below) so that resuming it later finds it again.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from kimi_code.agent.fake_kimi import FakeKimi, ToolCallSpec, Turn
from kimi_code.agent.state import SessionState

HERE = Path(__file__).resolve().parent
OUT = HERE / "fixtures" / "first_wave"
REPO = Path("/tmp/kimi-code-first-wave-fixture/repo")
KEY = "sk-first-wave-fixture"
BIG = "\n".join(f"{i:03d} lorem ipsum dolor sit amet consectetur " * 2 for i in range(60)) + "\n"
FILES = {"big.txt": BIG, "notes.md": "# notes\n"}


def make_repo(path: Path) -> None:
    """The fixture's repository, as it was before the session (also used by the test)."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    for name, text in FILES.items():
        (path / name).write_text(text)
    subprocess.run(["git", "-C", str(path), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "initial"],
                   check=True)


def model(body: dict) -> Turn:
    """Step k writes step-k.txt on even steps and reads big.txt on odd ones; summaries are short."""
    if not body.get("tools"):
        return Turn(content="Summary: the agent alternates writing step files and reading big.txt.")
    k = sum(1 for m in body["messages"] if m["role"] == "assistant") + 1
    if k % 2 == 0:
        call = ToolCallSpec("write_file", {"path": f"step-{k}.txt", "content": f"step {k}\n"})
    else:
        call = ToolCallSpec("read_file", {"path": "big.txt", "offset": 1 + k % 3})
    return Turn(reasoning=f"reasoning for step {k}", content=f"step {k}", tool_calls=[call])


def main() -> int:
    make_repo(REPO)
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.toml"
        config.write_text("")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MOONSHOT_", "KIMI_API", "KIMI_CODE_"))}
        env.update({"MOONSHOT_API_KEY": KEY, "KIMI_CODE_STATE_DIR": f"{tmp}/state", "KIMI_CODE_CONFIG": str(config),
                    "KIMI_CODE_CONTEXT_WINDOW": "16000", "KIMI_CODE_MAX_OUTPUT_TOKENS": "2000",
                    "KIMI_CODE_RETRY_WINDOW": "5"})

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "kimi_code.agent.cli", *args], env=env, capture_output=True,
                                  text=True, timeout=300)

        with FakeKimi(model, api_key=KEY, context_window=16000) as fake:
            first = cli("run", "--repo", str(REPO), "--base-url", fake.base_url, "--sandbox", "none", "--output",
                        "json", "--max-steps", "14", "alternate writing and reading")
            assert first.returncode == 3, first.stderr
            sid = json.loads(first.stdout)["session_id"]
            again = cli("resume", sid, "--base-url", fake.base_url, "--output", "json", "--max-steps", "18")
            assert again.returncode == 3, again.stderr
            back = cli("rewind", sid, "--to", "16")
            assert back.returncode == 0, back.stderr
        log = Path(tmp) / "state" / sid / "events.jsonl"
        events = [json.loads(line) for line in log.read_text().splitlines()]
        assert any(e["type"] == "compaction" for e in events), "no compaction happened"
        assert any(e["type"] == "resumed" for e in events) and any(e["type"] == "rewind" for e in events)
        OUT.mkdir(parents=True, exist_ok=True)
        shutil.copy(log, OUT / "session.jsonl")
        from kimi_code.agent.store import EventLog

        state = SessionState.fold(EventLog(log).load())
        (OUT / "state.json").write_text(json.dumps(state.snapshot(), indent=1, sort_keys=True, default=sorted) + "\n")
    print(f"wrote {OUT} (session {sid}, {len(events)} events)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
