"""Real media files for the tests: PNGs written by hand (zlib), videos made with ffmpeg."""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest


def png(width: int, height: int, color: bytes = b"\xff\x00\x00") -> bytes:
    """A valid RGB PNG of one colour."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + color * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def need_ffmpeg() -> str:
    exe = shutil.which("ffmpeg")
    if exe is None:
        pytest.fail("ffmpeg is not installed (tests/run.sh installs it): the video tests need real videos",
                    pytrace=False)
    return exe


def video(path: Path, *, size: str = "320x240", seconds: float = 1.0, rate: int = 10) -> Path:
    """A real test-pattern video; the container and codec follow the extension (.mp4, .webm, ...)."""
    codec = {".webm": ["-c:v", "libvpx", "-b:v", "200k"], ".mp4": ["-pix_fmt", "yuv420p"]}.get(path.suffix, [])
    subprocess.run([need_ffmpeg(), "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc=size={size}:rate={rate}:duration={seconds}", *codec, str(path)],
                   check=True, capture_output=True, timeout=120)
    return path
