"""What kimi-code knows about images and videos: formats, sizes, limits and token estimates.

Shared by the ``view_image`` / ``view_video`` tools and by ``kimi-code run --attach`` (agent/media.py),
so a file is judged the same way wherever it comes from. Formats are recognised by their content,
never by the file name. Image sizes come from the file header (no imaging library); a video's size
and duration come from ``ffprobe`` when it is installed, and are otherwise unknown (no resolution
warning then).

Limits and formats follow Kimi's API (../shared/KIMI_API.md, "Images", "Video and uploaded files"):
PNG, JPEG, WebP, GIF; MP4, MPEG, MOV, AVI, FLV, WebM, WMV, 3GPP; 100 MB per file; more than
4096x2160 (images) or 2048x1080 (video) adds cost without better understanding.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
import subprocess
from dataclasses import asdict, dataclass
from typing import Any, BinaryIO

from .types import ToolError

# Kimi's files API takes files up to 100 MB; inline media are bounded by the same figure.
MAX_MEDIA_BYTES = 100_000_000
# Above these resolutions Kimi spends more tokens without seeing more.
USEFUL_IMAGE_PIXELS = (4096, 2160)
USEFUL_VIDEO_PIXELS = (2048, 1080)
# Token estimates (Kimi computes media tokens from the resolution and, for video, the key frames;
# the API's reported prompt_tokens correct the estimate after every request).
IMAGE_PATCH = 28  # one token per 28x28 pixels
IMAGE_TOKENS_UNKNOWN = 1_000
VIDEO_TOKENS_PER_SECOND = 256
VIDEO_TOKENS_UNKNOWN = 8_000
VIDEO_TOKENS_MAX = 100_000
HEAD_BYTES = 256 * 1024  # enough of an image for its header (a JPEG's size follows its EXIF block)
FFPROBE_TIMEOUT = 30.0


@dataclass(frozen=True)
class MediaFormat:
    kind: str  # image | video
    label: str  # PNG, MP4, ...
    mime: str  # the MIME type sent in data URLs
    ext: str  # the extension of the stored copy


# The MIME subtypes are the names Kimi's documentation lists (mp4, mpeg, mov, avi, x-flv, webm, wmv, 3gpp).
_FORMATS = {f.label: f for f in (
    MediaFormat("image", "PNG", "image/png", "png"),
    MediaFormat("image", "JPEG", "image/jpeg", "jpg"),
    MediaFormat("image", "GIF", "image/gif", "gif"),
    MediaFormat("image", "WebP", "image/webp", "webp"),
    MediaFormat("video", "MP4", "video/mp4", "mp4"),
    MediaFormat("video", "MOV", "video/mov", "mov"),
    MediaFormat("video", "3GPP", "video/3gpp", "3gp"),
    MediaFormat("video", "WebM", "video/webm", "webm"),
    MediaFormat("video", "AVI", "video/avi", "avi"),
    MediaFormat("video", "FLV", "video/x-flv", "flv"),
    MediaFormat("video", "MPEG", "video/mpeg", "mpg"),
    MediaFormat("video", "WMV", "video/wmv", "wmv"),
)}
IMAGE_MIMES = frozenset(f.mime for f in _FORMATS.values() if f.kind == "image")
VIDEO_MIMES = frozenset(f.mime for f in _FORMATS.values() if f.kind == "video")
IMAGE_FORMATS_TEXT = "PNG, JPEG, WebP or GIF"
VIDEO_FORMATS_TEXT = "MP4, MPEG, MOV, AVI, FLV, WebM, WMV or 3GPP"

_ASF_GUID = bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c")


class MediaError(ToolError):
    """A file that cannot be sent as an image or video, with the reason in one line."""


def sniff(head: bytes) -> MediaFormat | None:
    """The format Kimi accepts that these bytes (the file's first 64 or more) start with, or None."""
    label: str | None = None
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        label = "PNG"
    elif head.startswith(b"\xff\xd8\xff"):
        label = "JPEG"
    elif head.startswith((b"GIF87a", b"GIF89a")):
        label = "GIF"
    elif len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        label = "WebP"
    elif len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        label = "AVI"
    elif len(head) >= 12 and head[4:8] == b"ftyp":
        brand = head[8:12]
        label = "MOV" if brand == b"qt  " else "3GPP" if brand[:3] in (b"3gp", b"3g2") else "MP4"
    elif len(head) >= 8 and head[4:8] in (b"moov", b"mdat", b"wide"):
        label = "MOV"  # an old QuickTime file without an ftyp box
    elif head.startswith(b"\x1a\x45\xdf\xa3"):
        label = "WebM" if b"webm" in head[:64] else None  # Matroska (.mkv) is not among Kimi's formats
    elif head.startswith(b"FLV\x01"):
        label = "FLV"
    elif head.startswith((b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3")):
        label = "MPEG"
    elif head.startswith(_ASF_GUID):
        label = "WMV"
    return _FORMATS[label] if label else None


def image_size(kind: str, data: bytes) -> tuple[int, int] | None:
    """(width, height) of an image from its header, without an imaging library; None if it cannot tell."""
    try:
        if kind == "PNG":
            return struct.unpack(">II", data[16:24])
        if kind == "GIF":
            return struct.unpack("<HH", data[6:10])
        if kind == "WebP":
            chunk = data[12:16]
            if chunk == b"VP8X":
                w = int.from_bytes(data[24:27], "little") + 1
                h = int.from_bytes(data[27:30], "little") + 1
                return w, h
            if chunk == b"VP8 ":
                w, h = struct.unpack("<HH", data[26:30])
                return w & 0x3FFF, h & 0x3FFF
            if chunk == b"VP8L":
                bits = int.from_bytes(data[21:25], "little")
                return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
            return None
        if kind == "JPEG":
            i = 2
            while i + 9 < len(data):
                if data[i] != 0xFF:
                    i += 1
                    continue
                marker = data[i + 1]
                if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
                    i += 1 if marker == 0xFF else 2
                    continue
                length = struct.unpack(">H", data[i + 2:i + 4])[0]
                if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                    h, w = struct.unpack(">HH", data[i + 5:i + 9])
                    return w, h
                i += 2 + length
    except (struct.error, IndexError):
        return None
    return None


def probe_video(fh: BinaryIO) -> tuple[int | None, int | None, float | None]:
    """(width, height, duration in seconds) of an open video file from ffprobe; Nones when ffprobe is
    missing or cannot tell. ffprobe reads the very file that is open (``/dev/fd/N``), not a path
    that could have been swapped since."""
    exe = shutil.which("ffprobe")
    if exe is None:
        return None, None, None
    fd = fh.fileno()
    try:
        proc = subprocess.run(
            [exe, "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height:format=duration",
             "-of", "json", f"/dev/fd/{fd}"],
            pass_fds=(fd,), capture_output=True, timeout=FFPROBE_TIMEOUT, stdin=subprocess.DEVNULL)
        data = json.loads(proc.stdout or b"{}")
    except (OSError, subprocess.SubprocessError, ValueError):
        return None, None, None
    stream = (data.get("streams") or [{}])[0] if isinstance(data, dict) else {}
    fmt = data.get("format") or {} if isinstance(data, dict) else {}

    def number(value: Any, cast: Any) -> Any:
        try:
            x = cast(value)
        except (TypeError, ValueError):
            return None
        return x if math.isfinite(x) and x > 0 else None

    return number(stream.get("width"), int), number(stream.get("height"), int), number(fmt.get("duration"), float)


def estimate_tokens(kind: str, width: int | None, height: int | None, duration: float | None) -> int:
    """The documented estimate of what one image or video costs in the context."""
    if kind == "image":
        if not width or not height:
            return IMAGE_TOKENS_UNKNOWN
        scale = min(1.0, USEFUL_IMAGE_PIXELS[0] / max(width, height), USEFUL_IMAGE_PIXELS[1] / min(width, height))
        w, h = max(1, int(width * scale)), max(1, int(height * scale))
        return max(64, math.ceil(w / IMAGE_PATCH) * math.ceil(h / IMAGE_PATCH))
    if not duration:
        return VIDEO_TOKENS_UNKNOWN
    return max(VIDEO_TOKENS_PER_SECOND, min(VIDEO_TOKENS_MAX, math.ceil(duration * VIDEO_TOKENS_PER_SECOND)))


@dataclass(frozen=True)
class MediaInfo:
    """One image or video file as judged by its content."""

    kind: str  # image | video
    label: str  # PNG, MP4, ...
    mime: str
    ext: str
    bytes: int
    width: int | None = None
    height: int | None = None
    duration: float | None = None  # seconds (video, when ffprobe could tell)
    tokens: int = 0  # estimated context cost

    def describe(self) -> str:
        """``PNG, 1280x720, 54 KB`` / ``MP4, 640x360, 2.0 s, 1.2 MB``."""
        parts = [self.label]
        if self.width and self.height:
            parts.append(f"{self.width}x{self.height}")
        if self.duration:
            parts.append(f"{self.duration:.1f} s")
        parts.append(human_size(self.bytes))
        return ", ".join(parts)

    def warnings(self) -> list[str]:
        """A note when the resolution is higher than Kimi makes use of."""
        if not (self.width and self.height):
            return []
        limit = USEFUL_IMAGE_PIXELS if self.kind == "image" else USEFUL_VIDEO_PIXELS
        if max(self.width, self.height) > limit[0] or min(self.width, self.height) > limit[1]:
            what = "a scaled-down copy" if self.kind == "image" else "a copy scaled down to 2K or less"
            return [f"It is larger than {limit[0]}x{limit[1]}: {what} would cost fewer tokens."]
        return []

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def human_size(n: int) -> str:
    """``54 KB`` (KiB, as view_image has always reported images up to its 10 MB) or ``12.3 MB``."""
    if n > 10 * 1024 * 1024:
        return f"{n / 1_000_000:.1f} MB"
    return f"{max(1, round(n / 1024))} KB"


def inspect(fh: BinaryIO, name: str, *, kinds: tuple[str, ...] = ("image", "video"),
            max_bytes: int = MAX_MEDIA_BYTES) -> MediaInfo:
    """Judge an open file: its format, size, resolution and token estimate. Raises MediaError with
    one line naming ``name`` for an unknown format, an empty file or one over ``max_bytes``."""
    size = os.fstat(fh.fileno()).st_size
    if size > max_bytes:
        raise MediaError(f"{name} is {human_size(size)}; media files can be at most {human_size(max_bytes)}. "
                         "Make a smaller copy first (scale it down, shorten it or re-encode it, e.g. with ffmpeg).")
    fh.seek(0)
    head = fh.read(HEAD_BYTES)
    fh.seek(0)
    fmt = sniff(head)
    if fmt is None or fmt.kind not in kinds:
        raise MediaError(unknown_format_message(name, head, kinds, fmt))
    width = height = None
    duration = None
    if fmt.kind == "image":
        dims = image_size(fmt.label, head)
        if dims:
            width, height = dims
    else:
        width, height, duration = probe_video(fh)
        fh.seek(0)
    return MediaInfo(fmt.kind, fmt.label, fmt.mime, fmt.ext, size, width, height, duration,
                     estimate_tokens(fmt.kind, width, height, duration))


def unknown_format_message(name: str, head: bytes, kinds: tuple[str, ...], found: MediaFormat | None) -> str:
    wanted = {"image": f"an image ({IMAGE_FORMATS_TEXT})", "video": f"a video ({VIDEO_FORMATS_TEXT})"}
    text = f"{name} is not " + " or ".join(wanted[k] for k in kinds) + " (judged by its content)"
    if found is not None:
        text += f"; it is {'an' if found.kind == 'image' else 'a'} {found.kind} ({found.label})"
        text += ": use view_image" if found.kind == "image" else ": use view_video"
    elif not head:
        text += "; it is empty"
    elif head.startswith(b"\x1a\x45\xdf\xa3"):
        text += "; Matroska (.mkv) is not among the formats Kimi takes: convert it to MP4 or WebM"
    elif head.lstrip()[:5].lower() in (b"<svg ", b"<?xml", b"<svg>") or b"<svg" in head[:512]:
        text += "; SVG is text: read it with read_file, or render it to PNG"
    return text + "."
