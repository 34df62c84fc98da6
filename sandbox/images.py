"""Sandbox images: is the configured one there, and building the development image.

Two ways to get an image besides ``docker pull``: ``kimi-code sandbox build`` builds
``sandbox/Dockerfile`` (needs the base image from a registry), and ``sandbox/build-offline-image.sh``
builds an equivalent from Debian packages with no registry at all (what tests and CI use).
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any, Callable

import docker
from docker.errors import APIError, BuildError, DockerException, ImageNotFound

from .errors import SandboxError

from .base import BASE_IMAGE, BUILD_TAG, OFFLINE_TAG  # noqa: E402,F401 - the names images are known by
# Daemon messages that mean "the base image could not be fetched" rather than "a step failed".
_PULL_FAILURE = re.compile(
    r"pull access denied|manifest (for .* )?(not found|unknown)|failed to resolve|no such host|"
    r"dial tcp|i/o timeout|TLS handshake|connection refused|network is unreachable|"
    r"Get \"?https?://|failed to (do|fetch) (request|anonymous token)|toomanyrequests|unauthorized",
    re.IGNORECASE,
)


def dockerfile_path() -> Path:
    return Path(__file__).with_name("Dockerfile")


def offline_script_path() -> Path:
    return Path(__file__).with_name("build-offline-image.sh")


def missing_image_message(image: str) -> str:
    return (
        f"sandbox image {image} is not available: get it with `docker pull {image}`, or build the "
        f"development image with `kimi-code sandbox build` (then --image {BUILD_TAG}), or, without "
        f"registry access, `sudo bash sandbox/build-offline-image.sh {image}`"
    )


def image_exists(client: docker.DockerClient, image: str) -> bool:
    try:
        client.images.get(image)
        return True
    except ImageNotFound:
        return False
    except APIError as exc:
        raise SandboxError(f"cannot inspect image {image}: {exc.explanation or exc}") from None


def ensure_image(client: docker.DockerClient, image: str, *, pull: bool = True,
                 on_notice: Callable[[str], None] | None = None) -> None:
    """Make ``image`` present: pull it when missing (an ordinary `docker pull`-able default should
    just work), else raise the missing-image error naming every way to get one."""
    if image_exists(client, image):
        return
    if pull:
        if on_notice is not None:
            on_notice(f"pulling sandbox image {image} ...")
        try:
            client.images.pull(image)
            return
        except (APIError, DockerException) as exc:
            detail = " ".join(str(getattr(exc, "explanation", None) or exc).split())[:200]
            raise SandboxError(f"{missing_image_message(image)} (pull failed: {detail})") from None
    raise SandboxError(missing_image_message(image))


def require_image(client: docker.DockerClient, image: str) -> None:
    """Raise the missing-image error (naming every way to get one) unless ``image`` is present."""
    if not image_exists(client, image):
        raise SandboxError(missing_image_message(image))


def build_image(
    tag: str = BUILD_TAG,
    *,
    base: str = BASE_IMAGE,
    pull: bool = False,
    client: docker.DockerClient | None = None,
    on_output: Callable[[str], None] | None = None,
) -> str:
    """Build ``sandbox/Dockerfile`` as ``tag`` and return the image id.

    The Dockerfile needs no context, so only it is sent to the daemon. ``pull`` re-fetches the base
    even when present. A base that cannot be pulled gives one line pointing at the offline script.
    """
    if client is None:
        from .engine import connect

        client = connect()
    dockerfile = dockerfile_path().read_bytes()
    image_id: str | None = None
    try:
        chunks = client.api.build(
            fileobj=io.BytesIO(dockerfile), tag=tag, rm=True, forcerm=True, pull=pull,
            buildargs={"BASE": base}, decode=True,
        )
        for chunk in chunks:
            _check_chunk(chunk, base)
            if on_output is not None and chunk.get("stream"):
                on_output(chunk["stream"])
            aux = chunk.get("aux")
            if isinstance(aux, dict) and aux.get("ID"):
                image_id = aux["ID"]
    except (APIError, BuildError) as exc:
        raise SandboxError(_build_failure(str(getattr(exc, "explanation", None) or exc), base)) from None
    except DockerException as exc:
        raise SandboxError(f"image build failed: {exc}") from None
    if image_id is None:
        try:
            image_id = client.images.get(tag).id
        except ImageNotFound:
            raise SandboxError(f"image build finished but {tag} is not there") from None
    return image_id


def _check_chunk(chunk: dict[str, Any], base: str) -> None:
    error = chunk.get("error") or (chunk.get("errorDetail") or {}).get("message")
    if error:
        raise SandboxError(_build_failure(str(error), base))


def _build_failure(error: str, base: str) -> str:
    error = " ".join(error.split())
    if _PULL_FAILURE.search(error):
        return (
            f"cannot pull the base image {base} ({error[:200]}); without registry access build the "
            "sandbox image with `sudo bash sandbox/build-offline-image.sh`, or pass --base with an "
            "image you have"
        )
    return f"sandbox image build failed: {error[:500]}"
