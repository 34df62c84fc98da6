"""Logs written by the first wave of kimi-code keep loading, folding and resuming.

tests/fixtures/first_wave/ holds a session made by kimi-code at 66e3db7 (compacted, resumed,
rewound; see tests/first_wave_fixture.py) and the state that version folded it into.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from helpers import cli_env, run_cli
from kimi_code.agent.fake_kimi import FakeKimi, ToolCallSpec, Turn

import first_wave_fixture as fixture

FIXTURE = Path(__file__).parent / "fixtures" / "first_wave"
SESSION_ID = json.loads((FIXTURE / "session.jsonl").read_text().splitlines()[0])["payload"]["session_id"]

# Folds the fixture in a fresh process whose tokenizer is the estimate, as when it was made.
_FOLD = """
import json, sys
from kimi_code.agent.state import SessionState
from kimi_code.agent.store import EventLog
state = SessionState.fold(EventLog(__import__("pathlib").Path(sys.argv[1])).load())
print(json.dumps(state.snapshot(), sort_keys=True, default=sorted))
"""


def _fold_fresh(log: Path, tmp_path: Path) -> dict[str, Any]:
    empty = tmp_path / "no-tiktoken-cache"
    empty.mkdir(exist_ok=True)
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(empty)}
    out = subprocess.run([sys.executable, "-c", _FOLD, str(log)], env=env, capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out)


def test_the_first_wave_log_folds_to_the_state_it_folded_to_then(tmp_path: Path) -> None:
    expected = json.loads((FIXTURE / "state.json").read_text())
    assert _fold_fresh(FIXTURE / "session.jsonl", tmp_path) == expected
    assert expected["compactions"] == 1 and expected["step"] == 16  # compacted, and rewound from 18


def test_the_demo_recording_still_loads_as_a_recording_and_folds() -> None:
    from kimi_code.agent import demo
    from kimi_code.agent.replay import Recording
    from kimi_code.agent.state import SessionState
    from kimi_code.agent.store import EventLog

    recording = Recording.load(demo.RECORDING)
    state = SessionState.fold(EventLog(demo.RECORDING).load())
    assert state.finished and state.step == len(recording.turns) == 10


@pytest.fixture
def fixture_repo():
    """The fixture's repository at its recorded path, in the state the rewind left it in."""
    fixture.make_repo(fixture.REPO)
    for k in range(2, 17, 2):
        (fixture.REPO / f"step-{k}.txt").write_text(f"step {k}\n")
    yield fixture.REPO
    shutil.rmtree(fixture.REPO.parent, ignore_errors=True)


def test_the_first_wave_session_resumes_with_this_version(tmp_path: Path, fixture_repo: Path) -> None:
    state_dir = tmp_path / "state"
    (state_dir / SESSION_ID).mkdir(parents=True)
    shutil.copy(FIXTURE / "session.jsonl", state_dir / SESSION_ID / "events.jsonl")  # no meta.json: rebuilt
    env = cli_env(tmp_path, KIMI_CODE_CONTEXT_WINDOW="16000", KIMI_CODE_MAX_OUTPUT_TOKENS="2000")
    expected = json.loads((FIXTURE / "state.json").read_text())
    requests: list[dict[str, Any]] = []

    def model(body: dict[str, Any]) -> Turn:
        if body.get("tools"):
            requests.append(body)
        if not body.get("tools"):
            return Turn(content="Summary: continue.")
        return Turn(reasoning="done", tool_calls=[ToolCallSpec("finish", {"summary": "resumed fine"})])

    with FakeKimi(model, api_key=fixture.KEY, context_window=16000) as fake:
        env["MOONSHOT_API_KEY"] = fixture.KEY
        proc = run_cli(["resume", "--last", "--base-url", fake.base_url, "--output", "json"], env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["session_id"] == SESSION_ID and out["summary"] == "resumed fine" and out["steps"] == 17
    # The first request carries the whole folded context of the old log, unchanged.
    first = requests[0]["messages"]
    assert first[0] == {"role": "system", "content": expected["system_prompt"]}
    assert first[1 : 1 + len(expected["messages"])] == expected["messages"]
