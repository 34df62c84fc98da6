"""Every event type has a declared payload; what the loop writes fits it; the README shows it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from helpers import KEY, cli_env, make_repo, run_cli
from kimi_code.agent import events as ev
from kimi_code.agent.event_payloads import PAYLOADS, check_payload, payload_table
from kimi_code.agent.fake_kimi import FakeKimi, Fault, ToolCallSpec, Turn
from media_files import png

README = Path(__file__).resolve().parent.parent / "README.md"


def test_every_event_type_has_a_model_with_a_described_field_each() -> None:
    assert set(PAYLOADS) == set(ev.ALL_TYPES)
    for model in PAYLOADS.values():
        assert (model.__doc__ or "").strip(), model
        for name, info in model.model_fields.items():
            assert info.description and "\n" not in info.description, (model.__name__, name)


def test_the_readme_table_is_the_one_the_models_give() -> None:
    text = "\n".join(line.strip() for line in README.read_text().splitlines())
    assert payload_table() in text


def test_a_payload_that_does_not_fit_is_refused() -> None:
    with pytest.raises(ValueError, match="surprise: Extra inputs"):
        check_payload(ev.LIMIT, {"kind": "steps", "value": 3, "limit": 3, "surprise": 1})
    with pytest.raises(ValueError, match="reason"):
        check_payload(ev.INTERRUPTED, {})
    with pytest.raises(ValueError, match="unknown event type"):
        check_payload("nope", {})


def _call(name: str, **arguments: Any) -> ToolCallSpec:
    return ToolCallSpec(name, arguments)


def test_what_a_real_session_writes_fits_the_declared_payloads(tmp_path: Path) -> None:
    """A run with an attached (uploaded) image, a retry, tools, a compaction, a limit, a resume, a
    rewind and a finish: every event on disk fits its model (the CLI also checks each one as it
    writes it, in the tests)."""
    big = "\n".join(f"{i} lorem ipsum dolor sit amet " * 3 for i in range(150))
    repo = make_repo(tmp_path / "repo", {"big.txt": big, "a.txt": "x\n"})
    (tmp_path / "shot.png").write_bytes(png(8, 8))
    env = cli_env(tmp_path, KIMI_CODE_CONTEXT_WINDOW="16000", KIMI_CODE_MAX_OUTPUT_TOKENS="2000",
                  KIMI_CODE_MEDIA_INLINE_BYTES="0")
    steps = [0]
    faults = {1: Fault.rate_limited(retry_after=0),  # retried: api_retry
              12: Fault(401, "invalid_authentication_error", "bad key")}  # not retried: interrupted
    requests = [0]

    def model(body: dict[str, Any]) -> Turn | Fault:
        if not body.get("tools"):
            return Turn(content="Summary: reading and writing.")
        requests[0] += 1
        if requests[0] in faults:
            return faults[requests[0]]
        steps[0] += 1
        if steps[0] > 14:
            return Turn(reasoning="f", tool_calls=[_call("finish", summary="ok")])
        if steps[0] % 4 == 0:
            return Turn(reasoning=f"w{steps[0]}", tool_calls=[_call("write_file", path=f"s{steps[0]}.txt", content="s\n")])
        if steps[0] % 4 == 1:
            return Turn(reasoning=f"t{steps[0]}", tool_calls=[_call("todo", items=[
                {"id": "1", "content": "read", "status": "in_progress"}])])
        return Turn(reasoning=f"r{steps[0]}", tool_calls=[_call("read_file", path="big.txt", offset=1 + steps[0] % 2)])

    with FakeKimi(model, api_key=KEY, context_window=16000) as fake:
        base = ["--base-url", fake.base_url, "--output", "json"]
        proc = run_cli(["run", "--repo", str(repo), "--sandbox", "none", "--max-steps", "9", *base,
                        "--attach", str(tmp_path / "shot.png"), "t"], env)
        assert proc.returncode == 3, proc.stderr
        sid = json.loads(proc.stdout)["session_id"]
        assert run_cli(["rewind", sid, "--to", "6"], env).returncode == 0
        proc = run_cli(["resume", sid, *base], env)
        assert proc.returncode == 4, proc.stderr  # the 401
        proc = run_cli(["resume", sid, *base], env)
        assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in (tmp_path / "state" / sid / "events.jsonl").read_text().splitlines()]
    for event in events:
        check_payload(event["type"], event["payload"])
    seen = {e["type"] for e in events}
    # todo: first-wave logs only; settings_changed: only a chat writes it (test_chat_terminal.py checks it);
    # the child_* events: only a parent of sub-agents writes them (test_swarm.py checks them).
    swarm = {ev.CHILD_SPAWNED, ev.CHILD_STARTED, ev.CHILD_ENDED, ev.CHILD_MERGE}
    assert seen >= set(ev.ALL_TYPES) - {ev.TODO, ev.SETTINGS_CHANGED} - swarm, set(ev.ALL_TYPES) - seen
