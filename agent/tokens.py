"""Token counting that never needs the network and never crashes.

Kimi's own tokenizer is not available offline, and tiktoken downloads its encodings on first use.
So: use tiktoken's ``o200k_base`` when it is already in tiktoken's cache (``TIKTOKEN_CACHE_DIR``,
or its default cache; set ``KIMI_CODE_TOKENIZER_DOWNLOAD=1`` to let tiktoken fetch it once), and
otherwise a documented estimate — ASCII characters / 4 plus one token per other character — with a
one-time warning. Either way counts are only estimates of Kimi's tokens: the loop corrects them with
the ``prompt_tokens`` the API reports after each response.

Each message is counted once, when it is recorded (see ``state.py``), never re-tokenized.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from typing import Any, Callable

log = logging.getLogger(__name__)

ENCODING = "o200k_base"
MESSAGE_OVERHEAD = 4  # role and separators per message
# Flat estimates for media parts of unknown size (see tools/media.py for the sized estimate).
IMAGE_TOKENS = 1_000
VIDEO_TOKENS = 8_000
_lock = threading.Lock()
_encoder: list[Callable[[str], int] | None] = []
_warned = [False]


def estimate_text_tokens(text: str, nbytes: int | None = None) -> int:
    """The offline estimate: ASCII/4 + 1 per non-ASCII character (CJK is roughly 1 token each).

    ``nbytes`` (the UTF-8 length, when already known) makes it O(1): non-ASCII characters are
    counted as (bytes - characters) / 2, exact for CJK text (3 bytes each).
    """
    if not text:
        return 0
    if nbytes is None:
        if text.isascii():
            return (len(text) + 3) // 4
        # surrogatepass: a lone surrogate (an undecodable file name, a JSON "\udcff" escape) counts
        # as the 3 bytes it would take, instead of raising.
        nbytes = len(text.encode("utf-8", "surrogatepass"))
    other = (nbytes - len(text)) // 2
    return (len(text) - other + 3) // 4 + other


def _load_tiktoken() -> Callable[[str], int] | None:
    try:
        import tiktoken
        import tiktoken.load as tl
    except ImportError:
        return None
    allow_download = os.environ.get("KIMI_CODE_TOKENIZER_DOWNLOAD") == "1"
    original = tl.read_file

    def cache_only(blobpath: str) -> bytes:
        if blobpath.startswith(("http://", "https://")) and not allow_download:
            raise OSError("tokenizer not cached and downloads are off")
        return original(blobpath)

    tl.read_file = cache_only  # tiktoken's cache lookup stays; only the network fallback is blocked
    try:
        enc = tiktoken.get_encoding(ENCODING)
    except Exception:  # noqa: BLE001 - any failure means "no tokenizer here"
        return None
    finally:
        tl.read_file = original
    return lambda text: len(enc.encode(text, disallowed_special=()))


def _encoder_fn() -> Callable[[str], int] | None:
    if not _encoder:
        with _lock:
            if not _encoder:
                _encoder.append(_load_tiktoken())
    return _encoder[0]


def tokenizer_name() -> str:
    return f"tiktoken {ENCODING}" if _encoder_fn() else "estimate (ASCII/4 + 1 per other character)"


def count_text(text: str) -> int:
    if not text:
        return 0
    enc = _encoder_fn()
    if enc is None:
        if not _warned[0]:
            _warned[0] = True
            log.warning(
                "tiktoken encoding %s is not cached and downloads are off: token counts are estimates "
                "(set TIKTOKEN_CACHE_DIR or KIMI_CODE_TOKENIZER_DOWNLOAD=1 for exact counts)", ENCODING
            )
        return estimate_text_tokens(text)
    try:
        return enc(text)
    except Exception:  # noqa: BLE001 - e.g. text the encoder rejects: counting must never fail
        return estimate_text_tokens(text)


def count_message(message: dict[str, Any]) -> int:
    """Tokens of one chat message as sent: text, reasoning, tool calls; media by their estimate."""
    total = MESSAGE_OVERHEAD
    content = message.get("content")
    if isinstance(content, str):
        total += count_text(content)
    elif isinstance(content, list):
        for part in content:
            if part.get("type") == "text":
                total += count_text(part.get("text", ""))
            elif part.get("type") == "media":  # a stored image or video: its estimate was made once
                total += int((part.get("media") or {}).get("tokens") or IMAGE_TOKENS)
            elif part.get("type") == "image_url":
                total += IMAGE_TOKENS  # flat estimate; corrected by the API's prompt_tokens
            elif part.get("type") == "video_url":
                total += VIDEO_TOKENS
    reasoning = message.get("reasoning_content")
    if reasoning:
        total += count_text(reasoning)
    for call in message.get("tool_calls") or ():
        fn = call.get("function", {})
        total += 8 + count_text(fn.get("name", "")) + count_text(fn.get("arguments", ""))
    return total


def count_tools(tools: list[dict[str, Any]]) -> int:
    return count_text(json.dumps(tools, separators=(",", ":"))) if tools else 0


def reset_for_tests() -> None:
    _encoder.clear()
    _warned[0] = False
