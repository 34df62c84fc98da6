"""A readable transcript of a session log (`kimi-code show`)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from . import events as ev
from .events import Event

MAX_RESULT_CHARS = 2_000


def _time(t: float) -> str:
    return dt.datetime.fromtimestamp(t).strftime("%H:%M:%S")


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(_part_text(p) if isinstance(p, dict) else str(p) for p in content)
    return ""


def _part_text(part: dict[str, Any]) -> str:
    if part.get("type") == "media":  # a stored image or video (media.py)
        media = part.get("media") or {}
        return f"[{media.get('kind', 'media')} {media.get('name', '')}]"
    return part.get("text", "[video]" if part.get("type") == "video_url" else "[image]")


def _clip(text: str, n: int = MAX_RESULT_CHARS) -> str:
    return text if len(text) <= n else text[:n] + f"\n… ({len(text) - n:,} more characters)"


def render_transcript(events: list[Event], *, reasoning: bool = False) -> str:
    out: list[str] = []
    for e in events:
        p = e.payload
        stamp = f"[{_time(e.time)} step {e.step}]"
        if e.type == ev.SESSION_STARTED:
            out.append(f"{stamp} session {p.get('session_id')} · model {p.get('model')} · repo {p.get('repo')}")
        elif e.type == ev.USER_MESSAGE:
            out.append(f"{stamp} USER ({p.get('kind', 'message')}):\n{_clip(_content_text(p['message'].get('content')))}")
        elif e.type == ev.ASSISTANT:
            m = p["message"]
            usage = p.get("usage") or {}
            out.append(f"{stamp} ASSISTANT ({usage.get('prompt_tokens', 0):,} in, "
                       f"{usage.get('cached_tokens', 0):,} cached, {usage.get('completion_tokens', 0):,} out, "
                       f"${float(p.get('cost') or 0):.4f})")
            if reasoning and m.get("reasoning_content"):
                out.append("  (thinking) " + _clip(m["reasoning_content"]).replace("\n", "\n  "))
            if m.get("content"):
                out.append("  " + _clip(m["content"]).replace("\n", "\n  "))
            for call in m.get("tool_calls") or ():
                fn = call["function"]
                out.append(f"  → {fn['name']}({_clip(fn.get('arguments', ''), 500)})")
        elif e.type == ev.TOOL_RESULT:
            flag = " ERROR" if p.get("is_error") else ""
            out.append(f"{stamp} RESULT {p.get('name')}{flag}:\n  " + _clip(p.get("content", "")).replace("\n", "\n  "))
        elif e.type == ev.COMPACTION:
            out.append(f"{stamp} CONTEXT COMPACTED ({p.get('tokens_before', 0):,} tokens before)")
        elif e.type == ev.CHECKPOINT:
            out.append(f"{stamp} checkpoint {str(p.get('commit'))[:12]} {json.dumps(p.get('changed') or [])[:300]}")
        elif e.type in (ev.FINISHED, ev.LIMIT, ev.INTERRUPTED, ev.RESUMED, ev.REWIND, ev.SETTINGS_CHANGED):
            out.append(f"{stamp} {e.type.upper()} {json.dumps(p, ensure_ascii=False)[:500]}")
    return "\n".join(out)
