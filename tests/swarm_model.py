"""A scripted 'model' for swarm tests: the fake Kimi server's responder, routing each request to
the script of the session it comes from by the session's task text (the first user message).

Scripts are stateless: the turn to answer is the number of assistant messages already in the
request, so a session resumed after a kill gets the turn it had not had an answer for.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Callable
from typing import Any

from kimi_code.agent.fake_kimi import ToolCallSpec, Turn

Script = Callable[[int, list[dict[str, Any]]], Turn]
_TAG = re.compile(r"\[agent:([A-Za-z0-9_.-]+)\]")
ROOT = "root"


def task_of(messages: list[dict[str, Any]]) -> str:
    for m in messages:
        if m.get("role") == "user":
            content = m.get("content")
            return content if isinstance(content, str) else json.dumps(content)
    return ""


def tag_of(messages: list[dict[str, Any]]) -> str:
    """``[agent:NAME]`` in the task routes to NAME's script; the root's task has none."""
    found = _TAG.search(task_of(messages))
    return found.group(1) if found else ROOT


def turn_index(messages: list[dict[str, Any]]) -> int:
    return sum(1 for m in messages if m.get("role") == "assistant")


def tool_results(messages: list[dict[str, Any]], name: str) -> list[str]:
    return [str(m.get("content")) for m in messages if m.get("role") == "tool" and m.get("name") == name]


class SwarmModel:
    """``scripts``: tag -> script(turn, messages) -> Turn. Every answered request is logged with its
    tag and turn (``answered``), and every distinct reasoning text sent (``sent``)."""

    def __init__(self, scripts: dict[str, Script], default: Script | None = None) -> None:
        self.scripts = scripts
        self.default = default
        self.lock = threading.Lock()
        self.answered: list[tuple[str, int]] = []
        self.bodies: dict[str, list[dict[str, Any]]] = {}  # tag -> the last request's messages
        self.prompts: dict[str, tuple[str, str]] = {}  # tag -> (system prompt, tools JSON)

    def __call__(self, body: dict[str, Any]) -> Turn:
        messages = body["messages"]
        tag = tag_of(messages)
        turn = turn_index(messages)
        script = self.scripts.get(tag) or self.default
        if script is None:
            raise KeyError(f"no script for {tag}")
        answer = script(turn, messages)
        if not answer.reasoning:
            answer.reasoning = f"{tag} turn {turn} {uuid.uuid4().hex[:8]}"
        with self.lock:
            self.answered.append((tag, turn))
            self.bodies[tag] = messages
            system = messages[0].get("content") if messages and messages[0].get("role") == "system" else ""
            self.prompts[tag] = (str(system), json.dumps(body.get("tools"), sort_keys=True))
        return answer


def call(name: str, **arguments: Any) -> ToolCallSpec:
    return ToolCallSpec(name, arguments)


def steps(*turns: list[ToolCallSpec] | Turn) -> Script:
    """A script of fixed turns (lists of calls or Turns); after them, finish."""
    def script(turn: int, messages: list[dict[str, Any]]) -> Turn:
        if turn < len(turns):
            t = turns[turn]
            return t if isinstance(t, Turn) else Turn(tool_calls=list(t))
        return Turn(tool_calls=[call("finish", summary="done")])
    return script
