"""Making tool output valid text, and reading file names the model copied from it.

A Python ``str`` can hold what UTF-8 cannot: lone surrogates. They arrive from the file system,
where ``os.fsdecode`` turns each byte of a name that is not valid UTF-8 into U+DC80..U+DCFF
("surrogateescape"), and from JSON (``"\\udcff"`` is a legal JSON escape). Anything that encodes
such text as UTF-8 (the token counter, the session log, the HTTP request) fails, so every tool
result is made valid in one place: ``ToolRegistry.run`` passes each result through
``ToolRegistry.clean_result`` before anyone counts, records or sends it.

The rule (``valid_text``):

- U+DC80..U+DCFF, an escaped byte of a file name, becomes the visible escape ``\\xNN`` (the
  byte's value in lowercase hex), so ``bad\\xffname.txt`` still names the file;
- a high surrogate followed by a low one becomes the character the pair encodes;
- any other lone surrogate becomes U+FFFD.

Paths the model sends back go through ``unescape_name`` (see ``tools/paths.resolve``): ``\\xNN``
with NN >= 80 turns back into the original byte, when the name exists that way and not as typed.
"""

from __future__ import annotations

import re
from typing import Any

_SURROGATES = re.compile(r"[\ud800-\udbff][\udc00-\udfff]|[\ud800-\udfff]")
_BYTE_ESCAPE = re.compile(r"\\x([89a-fA-F][0-9a-fA-F])")


def _fix(m: re.Match[str]) -> str:
    s = m.group()
    if len(s) == 2:  # a surrogate pair: the character it stands for
        return chr(0x10000 + ((ord(s[0]) - 0xD800) << 10) + (ord(s[1]) - 0xDC00))
    code = ord(s)
    if 0xDC80 <= code <= 0xDCFF:  # a byte escaped by os.fsdecode
        return f"\\x{code - 0xDC00:02x}"
    return "\ufffd"


def valid_text(text: str) -> str:
    """``text`` with every surrogate replaced (see the module docstring); encodable as UTF-8."""
    if text.isascii() or _SURROGATES.search(text) is None:
        return text
    return _SURROGATES.sub(_fix, text)


def clean_value(value: Any) -> Any:
    """``valid_text`` applied to every string in a JSON-like value (dict keys included)."""
    if isinstance(value, str):
        return valid_text(value)
    if isinstance(value, dict):
        return {clean_value(k): clean_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(clean_value(v) for v in value)
    return value


def has_byte_escape(name: str) -> bool:
    return _BYTE_ESCAPE.search(name) is not None


def unescape_name(name: str) -> str:
    """Undo the ``\\xNN`` escapes of ``valid_text`` for NN >= 80: the name as ``os`` functions take
    it (the bytes come back through surrogateescape)."""
    return _BYTE_ESCAPE.sub(lambda m: chr(0xDC00 + int(m.group(1), 16)), name)
