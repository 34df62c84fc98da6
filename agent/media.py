"""Images and videos in a session: stored once, referenced in the log, built into requests on send.

- **Store.** Every image or video the model is shown (``run --attach``, ``resume --continue
  --attach``, ``view_image``, ``view_video``) is copied into the session directory as
  ``media/<sha256>.<ext>`` (written to a temporary name, fsynced, renamed, directory fsynced) before
  any event refers to it, so a later change to the user's file cannot change a resumed request and
  a kill -9 never leaves a reference without its copy. Attachments given with the task are copied
  into the new session directory before it appears (``stage_attachments``).
- **Reference.** The log holds, in place of the media, a content part of kimi-code's own
  ``{"type": "media", "media": {kind, label, name, sha256, mime, bytes, file, width?, height?,
  duration?, tokens}}`` (``ref_part``): a few hundred bytes, not megabytes of base64 per event.
- **Wire.** ``MediaWire`` turns the message list into what is sent, just before each request: a
  reference becomes ``{"type": "image_url" | "video_url", ...: {"url": "data:<mime>;base64,..."}}``
  or, for a file uploaded with the endpoint's files API, ``{"url": "ms://<file_id>"}``. Each built
  message is cached by the identity of the logged one (which never changes), so a step does not
  re-encode any base64, and the client's per-message JSON cache keeps working; a resumed session
  builds byte-identical parts from the same copies and upload ids.
- **Inline or upload.** A file up to ``media_inline_bytes`` goes inline; a larger one is uploaded
  once per content hash (recorded as a ``media_uploaded`` event, so a resumed session reuses the id
  if the endpoint still has it and uploads again if not), and so are the largest inline ones when
  the request would exceed ``INLINE_BODY_BUDGET`` (Kimi takes request bodies under 100 MB).
  ``sessions prune`` deletes the uploads (``delete_uploads``).
- **Budget.** A request carries at most ``media_tokens`` (estimated) of media: older media beyond it
  become a one-line text placeholder naming the file (the newest message's media always go). The
  cut only ever moves forward, so the request prefix stays stable for the prompt cache.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import operator
import os
import secrets
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from kimi_code.tools.media import MAX_MEDIA_BYTES, MediaError, MediaInfo, human_size, inspect

from . import event_payloads as ep
from .errors import ConfigError, KimiCodeError
from .store import fsync_dir

if TYPE_CHECKING:
    from .config import Settings
    from .state import SessionState

log = logging.getLogger(__name__)

MEDIA_DIR = "media"
# Inline media (base64 data URLs) one request may carry: Kimi's request body must stay under
# 100 MB, and this leaves room for the text of a full context window.
INLINE_BODY_BUDGET = 90_000_000
_COPY_CHUNK = 1 << 20


def data_url_length(mime: str, size: int) -> int:
    """Characters of ``data:<mime>;base64,<data>`` for ``size`` bytes."""
    return len("data:;base64,") + len(mime) + 4 * ((size + 2) // 3)


# -- references ------------------------------------------------------------------------------------
def ref_part(info: MediaInfo, sha256: str, name: str) -> dict[str, Any]:
    """The content part the log holds for one stored image or video."""
    media: dict[str, Any] = {"kind": info.kind, "label": info.label, "name": name, "sha256": sha256,
                             "mime": info.mime, "bytes": info.bytes, "file": f"{MEDIA_DIR}/{sha256}.{info.ext}"}
    for key in ("width", "height", "duration"):
        value = getattr(info, key)
        if value is not None:
            media[key] = value
    media["tokens"] = info.tokens
    return {"type": "media", "media": media}


def is_ref(part: Any) -> bool:
    return isinstance(part, dict) and part.get("type") == "media" and isinstance(part.get("media"), dict)


def has_media(message: dict[str, Any]) -> bool:
    content = message.get("content")
    return isinstance(content, list) and any(map(is_ref, content))


def describe(media: dict[str, Any]) -> str:
    """``PNG, 1280x720, 54 KB`` for a reference's media dict."""
    parts = [str(media.get("label") or media.get("mime") or media.get("kind"))]
    if media.get("width") and media.get("height"):
        parts.append(f"{media['width']}x{media['height']}")
    if media.get("duration"):
        parts.append(f"{float(media['duration']):.1f} s")
    parts.append(human_size(int(media.get("bytes") or 0)))
    return ", ".join(parts)


def content(text: str, parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """A user message's content: ``text`` alone, or the text naming the attachments, then them."""
    if not parts:
        return text
    names = "; ".join(f"{p['media']['name']} ({describe(p['media'])})" for p in parts if is_ref(p))
    return [{"type": "text", "text": f"{text}{CAPTION}{names}.)"}, *parts]


CAPTION = "\n\n(Attached by the user: "


def instruction_text(content_value: Any) -> str:
    """The words of a task or --continue message without the caption naming its attachments."""
    return text_of(content_value).split(CAPTION, 1)[0]


def text_of(content_value: Any) -> str:
    """The text of a message's content (its text parts joined), for places that want words only."""
    if isinstance(content_value, str):
        return content_value
    if isinstance(content_value, list):
        return "\n".join(p.get("text", "") for p in content_value if isinstance(p, dict) and p.get("type") == "text")
    return ""


PLACEHOLDER_REASONS = {
    "compaction": "it was removed from the context when older history was compacted",
    "budget": "it is left out of this request to keep the media within the per-request budget (media_tokens)",
    "body": "it is left out of this request, which would otherwise exceed the endpoint's 100 MB limit",
    "missing": "its stored copy is missing from the session directory, so it cannot be sent",
}


def placeholder(media: dict[str, Any] | None, reason: str) -> dict[str, Any]:
    """The short text part that stands where an image or video no longer goes."""
    why = PLACEHOLDER_REASONS[reason]
    if media is None:
        return {"type": "text", "text": f"[kimi-code] An image or video was attached here; {why}."}
    kind = media.get("kind", "media")
    return {"type": "text", "text": f"[kimi-code] The {kind} {media.get('name')} ({describe(media)}) was attached "
                                    f"here; {why}."}


def strip_media(message: dict[str, Any], reason: str = "compaction") -> dict[str, Any]:
    """The message with every image or video part (references and inline parts of older logs)
    replaced by a placeholder; the very same object when it holds none."""
    parts = message.get("content")
    if not isinstance(parts, list):
        return message
    out, changed = [], False
    for part in parts:
        if is_ref(part):
            out.append(placeholder(part["media"], reason))
            changed = True
        elif isinstance(part, dict) and part.get("type") in ("image_url", "video_url"):
            out.append(placeholder(None, reason))
            changed = True
        else:
            out.append(part)
    return {**message, "content": out} if changed else message


# -- the store -------------------------------------------------------------------------------------
class MediaStore:
    """A session's ``media/`` directory: content-addressed, durable copies (``tools.types.MediaSink``).

    ``check(info)`` returns why the endpoint cannot take a file (None: it can); ``add`` then raises
    ``MediaError`` with that reason. Safe to use from concurrent tool calls."""

    def __init__(self, root: Path, check: Callable[[MediaInfo], str | None] | None = None) -> None:
        self.root = Path(root)
        self.check = check

    def add(self, fh: BinaryIO, info: MediaInfo, name: str) -> dict[str, Any]:
        if self.check is not None:
            refusal = self.check(info)
            if refusal:
                raise MediaError(f"{name} cannot be sent: {refusal}.")
        fh.seek(0)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = self.root / f".{secrets.token_hex(8)}.tmp"
            digest = hashlib.sha256()
            try:
                with open(tmp, "wb") as out:
                    while chunk := fh.read(_COPY_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
                    out.flush()
                    os.fsync(out.fileno())
                sha = digest.hexdigest()
                final = self.root / f"{sha}.{info.ext}"
                if final.exists():
                    tmp.unlink()
                else:
                    os.replace(tmp, final)
                    fsync_dir(self.root)
            finally:
                tmp.unlink(missing_ok=True)
        except OSError as exc:
            raise MediaError(f"{name} could not be copied into the session directory {self.root}: "
                             f"{exc.strerror or exc.__class__.__name__}") from None
        return ref_part(info, sha, name)

    def add_path(self, path: Path, name: str | None = None) -> dict[str, Any]:
        """Copy a file given by the user (``--attach``) and name it ``name`` (default: its file name);
        MediaError, starting with the path, for anything unusable."""
        with open_media(path) as fh:
            info = inspect(fh, str(path))
            return self.add(fh, info, name or path.name)


def open_media(path: Path) -> BinaryIO:
    """Open a user's file for reading, with one-line errors (missing, a directory, unreadable)."""
    try:
        if path.is_dir():
            raise MediaError(f"{path} is a directory, not an image or video file")
        return open(path, "rb")
    except MediaError:
        raise
    except OSError as exc:
        raise MediaError(f"{path} cannot be read: {exc.strerror or exc.__class__.__name__}") from None


# -- attachments given on the command line ------------------------------------------------------
def probe_attachments(paths: Iterable[Path]) -> list[MediaInfo]:
    """Judge every ``--attach`` file before anything is started: ConfigError (exit 2) with one line
    for a missing, unreadable, unknown, empty or too large file."""
    infos = []
    for path in paths:
        path = Path(path).expanduser()
        try:
            with open_media(path) as fh:
                infos.append(inspect(fh, str(path)))
        except MediaError as exc:
            raise ConfigError(f"--attach {exc}") from None  # the message starts with the path
    return infos


def endpoint_refusal(settings: Settings, info: MediaInfo) -> str | None:
    """Why the session's endpoint cannot take this image or video (None: it can)."""
    refusal = settings.media_refusal(info.kind)
    if refusal:
        return refusal
    if not settings.file_uploads and data_url_length(info.mime, info.bytes) > INLINE_BODY_BUDGET:
        return (f"it is {human_size(info.bytes)}, too large to send inline, and provider {settings.provider} has "
                "no files API to upload it to")
    return None


def check_attachments(settings: Settings, paths: list[Path], infos: list[MediaInfo]) -> None:
    """The endpoint can take these attachments, and they fit one request: ConfigError otherwise
    (at the start, rather than a 400 in the middle of a session)."""
    for path, info in zip(paths, infos):
        refusal = endpoint_refusal(settings, info)
        if refusal:
            raise ConfigError(f"--attach {path}: {refusal}")
        for warning in info.warnings():
            log.warning("--attach %s (%s): %s", path, info.describe(), warning)
    total = sum(info.tokens for info in infos)
    if total > settings.media_tokens:
        raise ConfigError(f"the attachments come to ~{total:,} tokens (estimated), more than one request may carry "
                          f"(media_tokens = {settings.media_tokens:,}): attach fewer or shorter files, or raise "
                          "media_tokens")
    inline = sum(data_url_length(i.mime, i.bytes) for i in infos)
    if not settings.file_uploads and inline > INLINE_BODY_BUDGET:
        raise ConfigError(f"the attachments come to {human_size(inline)} as base64, more than one request to "
                          f"provider {settings.provider} can carry (it has no files API): attach fewer or smaller files")


def stage_attachments(settings: Settings, state_dir: Path, session_id: str,
                      paths: list[Path]) -> tuple[Path | None, list[dict[str, Any]]]:
    """Check the ``--attach`` files (``check_attachments``) and copy them into a staging directory
    that becomes the new session's ``media/`` (``SessionStore.create`` adopts it): (the directory
    or None, their reference parts)."""
    if not paths:
        return None, []
    check_attachments(settings, paths, probe_attachments(paths))
    staging = Path(state_dir) / f".{session_id}.{os.getpid()}.media"
    store = MediaStore(staging)
    try:
        parts = [store.add_path(Path(p).expanduser(), Path(p).name) for p in paths]
    except MediaError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ConfigError(f"--attach {exc}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging, parts


def attach_to_session(settings: Settings, session_root: Path, paths: list[Path]) -> list[dict[str, Any]]:
    """Check the ``--attach`` files of ``resume --continue`` against the session's endpoint and copy
    them into its ``media/`` (durably, before the message that refers to them is recorded)."""
    if not paths:
        return []
    check_attachments(settings, paths, probe_attachments(paths))
    store = MediaStore(Path(session_root) / MEDIA_DIR)
    try:
        return [store.add_path(Path(p).expanduser(), Path(p).name) for p in paths]
    except MediaError as exc:
        raise ConfigError(f"--attach {exc}") from None


# -- building requests -------------------------------------------------------------------------
class MediaWire:
    """Turns a session's message list into the one sent (see the module docstring).

    ``client`` needs ``upload_file``, ``file_exists`` (agent/client.py); ``record`` records a payload
    (the loop's). Called with each request's messages; returns a list of the same length."""

    def __init__(self, session_root: Path, settings: Settings, client: Any, state: SessionState,
                 record: Callable[[ep.EventPayload], Any], notice: Callable[[str], None] | None = None, *,
                 inline_body_budget: int = INLINE_BODY_BUDGET) -> None:
        self.root = Path(session_root)
        self.settings = settings
        self.client = client
        self.state = state
        self.record = record
        self.notice = notice or (lambda text: None)
        self.inline_body_budget = inline_body_budget
        self._prev_in: list[dict[str, Any]] = []
        self._prev_out: list[dict[str, Any]] = []
        self._media_at: list[int] = []  # indices of the messages with media in _prev_in
        self._built: dict[int, tuple[dict[str, Any], tuple[str, ...], dict[str, Any]]] = {}
        self._present: dict[str, bool] = {}  # file id -> still on the endpoint (asked once per process)
        self.builds = 0  # wire messages built (tests: a step that adds no media builds none)

    def __call__(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        n = len(self._prev_in)
        if n and len(messages) >= n and all(map(operator.is_, messages[:n], self._prev_in)):
            added = [n + i for i, m in enumerate(messages[n:]) if has_media(m)]
            if not added:  # the common step: nothing new to decide or build
                out = self._prev_out + messages[n:]
                self._prev_in, self._prev_out = list(messages), out
                return out
            media_at = self._media_at + added
        else:
            media_at = [i for i, m in enumerate(messages) if has_media(m)]
        out = list(messages)
        if media_at:
            modes = self._decide(messages, media_at)
            built: dict[int, tuple[dict[str, Any], tuple[str, ...], dict[str, Any]]] = {}
            for i in media_at:
                out[i] = self._wire(messages[i], modes[i], built)
            self._built = built
        self._prev_in, self._prev_out, self._media_at = list(messages), out, media_at
        return out

    # -- decisions: one mode per media part: "inline", "ms://<id>", or a placeholder reason
    def _decide(self, messages: list[dict[str, Any]], media_at: list[int]) -> dict[int, list[str]]:
        parts = [(i, j, p["media"]) for i in media_at for j, p in enumerate(messages[i]["content"]) if is_ref(p)]
        modes: dict[int, list[str]] = {i: [] for i in media_at}
        chosen: dict[tuple[int, int], str] = {}
        newest = media_at[-1]
        used, over = 0, False
        for i, j, media in reversed(parts):  # newest first: the cut point only moves forward
            used += int(media.get("tokens") or 0)
            if i != newest and (over or used > self.settings.media_tokens):
                over = True
                chosen[(i, j)] = "budget"
            elif not (self.root / str(media.get("file", ""))).is_file():
                chosen[(i, j)] = "missing"
        by_sha: dict[str, str] = {}
        for i, j, media in parts:
            if (i, j) in chosen:
                continue
            sha = media["sha256"]
            if sha not in by_sha:
                by_sha[sha] = self._mode(media)
        # The request body must stay under the endpoint's limit: upload (or leave out) the largest.
        while True:
            inline = [(i, j, m) for i, j, m in parts if (i, j) not in chosen and by_sha[m["sha256"]] == "inline"]
            total = sum(data_url_length(m["mime"], int(m["bytes"])) for _, _, m in inline)
            if total <= self.inline_body_budget or not inline:
                break
            if self.settings.file_uploads:
                largest = max(inline, key=lambda x: int(x[2]["bytes"]))[2]
                by_sha[largest["sha256"]] = self._upload(largest)
            else:
                i, j, _ = inline[0]  # the oldest goes first
                chosen[(i, j)] = "body"
        for i, j, media in parts:
            modes[i].append(chosen.get((i, j)) or by_sha[media["sha256"]])
        return modes

    def _mode(self, media: dict[str, Any]) -> str:
        file_id = self.state.uploads.get(media["sha256"])
        if file_id and self.settings.file_uploads and self._still_there(file_id):
            return f"ms://{file_id}"
        if int(media["bytes"]) > self.settings.media_inline_bytes and self.settings.file_uploads:
            return self._upload(media)
        return "inline"

    def _still_there(self, file_id: str) -> bool:
        if file_id not in self._present:
            self._present[file_id] = bool(self.client.file_exists(file_id))
            if not self._present[file_id]:
                self.notice(f"uploaded file {file_id} is gone from the endpoint: uploading it again")
        return self._present[file_id]

    def _upload(self, media: dict[str, Any]) -> str:
        path = self.root / media["file"]
        name = os.path.basename(str(media.get("name") or path.name)) or path.name
        self.notice(f"uploading {media.get('name')} ({describe(media)}) with the files API")
        file_id = self.client.upload_file(path, purpose=media["kind"], filename=name, mime=media["mime"])
        self.record(ep.MediaUploaded(sha256=media["sha256"], file_id=file_id, purpose=media["kind"],
                                     bytes=int(media["bytes"]), name=str(media.get("name") or name)))
        self._present[file_id] = True
        return f"ms://{file_id}"

    # -- building
    def _wire(self, message: dict[str, Any], modes: list[str],
              built: dict[int, tuple[dict[str, Any], tuple[str, ...], dict[str, Any]]]) -> dict[str, Any]:
        signature = tuple(modes)
        hit = self._built.get(id(message))
        if hit is not None and hit[0] is message and hit[1] == signature:
            built[id(message)] = hit
            return hit[2]
        self.builds += 1
        parts: list[dict[str, Any]] = []
        k = 0
        for part in message["content"]:
            if not is_ref(part):
                parts.append(part)
                continue
            media, mode = part["media"], modes[k]
            k += 1
            url = mode if mode.startswith("ms://") else self._data_url(media) if mode == "inline" else None
            if url is None:
                parts.append(placeholder(media, mode if mode in PLACEHOLDER_REASONS else "missing"))
                continue
            key = "image_url" if media.get("kind") == "image" else "video_url"
            parts.append({"type": key, key: {"url": url}})
        wire = {**message, "content": parts}
        built[id(message)] = (message, signature, wire)
        return wire

    def _data_url(self, media: dict[str, Any]) -> str | None:
        try:
            data = (self.root / media["file"]).read_bytes()
        except OSError as exc:
            log.warning("stored media %s unreadable: %s", media.get("file"), exc)
            return None
        return f"data:{media['mime']};base64,{base64.b64encode(data).decode('ascii')}"


# -- pruning ------------------------------------------------------------------------------------
def uploaded_file_ids(events: Iterable[Any]) -> list[str]:
    """Every file id a session uploaded, in order, once each."""
    seen: dict[str, None] = {}
    for e in events:
        if e.type == ep.MediaUploaded.TYPE and isinstance(e.payload.get("file_id"), str):
            seen.setdefault(e.payload["file_id"], None)
    return list(seen)


def delete_uploads(events: list[Any], load_settings: Callable[[dict[str, Any]], Settings],
                   make_client: Callable[[Settings], Any]) -> list[str]:
    """Delete the files a session uploaded (``sessions prune``), through the endpoint the session
    used; a warning line for each one that could not be deleted."""
    ids = uploaded_file_ids(events)
    if not ids:
        return []
    recorded = (events[0].payload.get("settings") or {}) if events else {}
    if recorded.get("replay"):
        return []  # uploaded to the replay's local endpoint, which is gone
    flags = {k: recorded.get(k) for k in ("provider", "base_url", "model")}
    try:
        settings = load_settings({k: v for k, v in flags.items() if v is not None})
        client = make_client(settings)
    except KimiCodeError as exc:
        return [f"{len(ids)} uploaded file(s) not deleted ({', '.join(ids)}): {exc}"]
    warnings = []
    try:
        for file_id in ids:
            try:
                client.delete_file(file_id)
            except KimiCodeError as exc:
                warnings.append(f"uploaded file {file_id} not deleted: {exc}")
    finally:
        client.close()
    return warnings


__all__ = ["INLINE_BODY_BUDGET", "MAX_MEDIA_BYTES", "MEDIA_DIR", "MediaStore", "MediaWire", "attach_to_session",
           "check_attachments", "content", "delete_uploads", "endpoint_refusal", "has_media", "placeholder",
           "probe_attachments", "ref_part", "stage_attachments", "strip_media", "text_of", "uploaded_file_ids"]
