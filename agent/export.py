"""``kimi-code export``: a session as a replayable recording or as a shareable trajectory.

Both are meant to leave the machine (bug reports, demos, benchmarks), so every string in them is
scrubbed first: the values of the exporting environment's secret-looking variables (``*_KEY``,
``*_TOKEN``, ``*_SECRET``, ``*_PASSWORD``, ...) and text shaped like well-known credentials are
replaced by ``[REDACTED]`` markers. A tool that printed a secret (``env`` on the host) therefore
exports without it; replaying such a recording reports a divergence at that result, which is the
honest outcome.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping
from typing import Any

from . import events as ev
from .events import Event
from .events import effective_events
from .store import SessionMeta

FORMATS = ("recording", "trajectory")
# Events a replay needs: the model's turns, the results it saw, and what shaped its context.
RECORDING_TYPES = frozenset({ev.SESSION_STARTED, ev.USER_MESSAGE, ev.ASSISTANT, ev.TOOL_RESULT, ev.TODO,
                             ev.COMPACTION, ev.LIMIT, ev.FINISHED, ev.SETTINGS_CHANGED})
_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)$|API_?KEY|ACCESS_KEY|PRIVATE", re.I)
_MIN_SECRET = 6  # shorter values ("1", "true") would redact ordinary text
_CREDENTIAL_PATTERNS = (
    re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}"),  # OpenAI-style keys (Moonshot's too)
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}|\bgithub_pat_[A-Za-z0-9_]{20,}"),
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    re.compile(r"\bxox[abprs]-[A-Za-z0-9\-]{10,}"),
    re.compile(r"\bglpat-[A-Za-z0-9_\-]{20,}"),
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._\-+/=]{16,}"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S),
)
# scheme://user:password@host: the password part.
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.\-]*://[^/\s:@]+:)([^/\s@]+)(@)", re.I)
# NAME_KEY=value / "api_token": "value" with a value that looks generated (letters and digits, long).
_ASSIGNMENT = re.compile(
    r"(?i)(\b[A-Za-z0-9_]*(?:key|token|secret|password)\b[\"']?\s*[=:]\s*[\"']?)([A-Za-z0-9_\-+/=.]{16,})")


class Scrubber:
    """Replaces secrets in every string of a JSON-like value (keys included).

    ``extra`` names more secrets than the environment holds (the configured API key). Each value is
    also looked for in its JSON-escaped form: tool-call arguments are JSON text inside the export.
    """

    def __init__(self, environ: Mapping[str, str] | None = None, extra: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        found: dict[str, str] = {}
        for name, value in [*env.items(), *(extra or {}).items()]:
            if not (_SECRET_NAME.search(name) or (extra and name in extra)):
                continue
            form = value.strip()  # a stray newline or space around a value must not hide it
            if len(form) >= _MIN_SECRET:
                found.setdefault(form, name)
                for escaped in {json.dumps(form)[1:-1], json.dumps(form, ensure_ascii=False)[1:-1]} - {form}:
                    found.setdefault(escaped, name)
        # Longest first, so a value containing another is replaced whole.
        self._values = sorted(found.items(), key=lambda kv: -len(kv[0]))

    def text(self, text: str) -> str:
        for value, name in self._values:
            if value in text:
                text = text.replace(value, f"[REDACTED:{name}]")
        for pattern in _CREDENTIAL_PATTERNS:
            text = pattern.sub("[REDACTED]", text)
        text = _URL_PASSWORD.sub(r"\1[REDACTED]\3", text)
        return _ASSIGNMENT.sub(_redact_assignment, text)

    def value(self, obj: Any) -> Any:
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, dict):
            return {self.text(k) if isinstance(k, str) else k: self.value(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [self.value(v) for v in obj]
        return obj

    def arguments(self, arguments: Any) -> Any:
        """Tool-call arguments (JSON text): scrubbed as data, so escaping can't hide a secret."""
        if isinstance(arguments, str):
            try:
                parsed = json.loads(arguments)
            except ValueError:
                return self.text(arguments)
            return json.dumps(self.value(parsed), ensure_ascii=False)
        return self.value(arguments)


def _redact_assignment(match: re.Match[str]) -> str:
    value = match.group(2)
    if any(c.isdigit() for c in value) and any(c.isalpha() for c in value):
        return match.group(1) + "[REDACTED]"
    return match.group(0)


def recording_lines(events: list[Event], scrubber: Scrubber) -> list[str]:
    """The session's model turns, and what they saw, as session events (``--model replay:FILE``)."""
    out: list[str] = []
    for e in effective_events(events):
        if e.type not in RECORDING_TYPES:
            continue
        payload = scrubber.value(e.payload)
        if e.type == ev.ASSISTANT:
            original = (e.payload.get("message") or {}).get("tool_calls") or ()
            for call, before in zip((payload.get("message") or {}).get("tool_calls") or (), original):
                if "arguments" in (before.get("function") or {}):
                    call["function"]["arguments"] = scrubber.arguments(before["function"]["arguments"])
        if e.type == ev.SESSION_STARTED:
            payload.pop("pid", None)
        out.append(Event(type=e.type, payload=payload, step=e.step, seq=len(out), time=e.time, v=e.v).to_json())
    return out


def trajectory(meta: SessionMeta, events: list[Event], scrubber: Scrubber) -> dict[str, Any]:
    """Everything that happened, readable: one entry per model turn with its tool results, plus
    every other event in order. For sharing and bug reports."""
    start = next((e.payload for e in events if e.type == ev.SESSION_STARTED), {})
    turns: list[dict[str, Any]] = []
    other: list[dict[str, Any]] = []
    for e in events:
        p = e.payload
        if e.type == ev.ASSISTANT:
            message = p.get("message") or {}
            turns.append({
                "step": e.step, "time": e.time, "reasoning": message.get("reasoning_content") or "",
                "content": message.get("content") or "",
                "tool_calls": [{"id": c.get("id"), "name": c["function"]["name"],
                                "arguments": _parsed(c["function"].get("arguments"))}
                               for c in message.get("tool_calls") or ()],
                "results": [], "usage": p.get("usage"), "cost": p.get("cost"),
                "finish_reason": p.get("finish_reason"),
            })
        elif e.type == ev.TOOL_RESULT and turns:
            turns[-1]["results"].append({k: p.get(k) for k in ("call_id", "name", "content", "is_error", "metadata")})
        elif e.type in (ev.TOOL_STARTED, ev.SESSION_STARTED):
            continue
        else:
            other.append({"type": e.type, "step": e.step, "time": e.time, **p})
    data = {
        "format": "kimi-code-trajectory", "version": 1,
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "session": {"id": meta.id, "task": start.get("task", meta.task), "repo": meta.repo, "model": meta.model,
                    "provider": start.get("provider"), "status": meta.status, "steps": meta.steps,
                    "cost": meta.cost, "tokens": {"prompt": meta.prompt_tokens, "cached": meta.cached_tokens,
                                                  "completion": meta.completion_tokens},
                    "created": meta.created, "updated": meta.updated, "settings": start.get("settings", {})},
        "system_prompt": start.get("system_prompt", ""),
        "tools": [t.get("function", {}).get("name") for t in start.get("tools") or ()],
        "turns": turns,
        "events": other,
    }
    return scrubber.value(data)


def _parsed(arguments: Any) -> Any:
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except ValueError:
            return arguments
    return arguments
