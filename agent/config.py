"""Settings, providers and *the* model table.

Precedence, lowest to highest: built-in defaults < TOML config file < environment < CLI flags.
The API key is only ever read from the environment (or the config file) and is held as a
``SecretStr``: it is never printed, logged, or written to session files.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping
from urllib.parse import urlsplit

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from kimi_code.tools.mcp_config import McpServerConfig, check_server_name, parse_servers

from .errors import ConfigError

APP_NAME = "kimi-code"

# Environment variable that points at another config file (tests, CI, several profiles).
CONFIG_ENV = "KIMI_CODE_CONFIG"
# Every setting can also be given as KIMI_CODE_<FIELD> (e.g. KIMI_CODE_MAX_OUTPUT_TOKENS).
ENV_PREFIX = "KIMI_CODE_"
API_KEY_ENVS = ("MOONSHOT_API_KEY", "KIMI_API_KEY")
BASE_URL_ENVS = ("MOONSHOT_BASE_URL",)


@dataclass(frozen=True)
class ModelInfo:
    """What the harness must know of a model: limits, thinking, prices (USD per million tokens)."""

    name: str
    context_window: int
    max_output_tokens: int
    thinks: bool
    price_input: float
    price_cached_input: float
    price_output: float
    # Inputs besides text the model understands (K2.5 and K2.6 are natively multimodal).
    image_input: bool = True
    video_input: bool = True

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> float:
        """Cost in USD of one call; cached tokens are part of ``prompt_tokens``."""
        cached = min(cached_tokens, prompt_tokens)
        fresh = prompt_tokens - cached
        return (
            fresh * self.price_input
            + cached * self.price_cached_input
            + completion_tokens * self.price_output
        ) / 1_000_000


# The one model table (source: ../shared/KIMI_API.md). Sampling parameters of these models are
# fixed by the server and never sent.
MODELS: dict[str, ModelInfo] = {
    m.name: m
    for m in (
        ModelInfo("kimi-k2.6", 262_144, 65_536, True, 0.95, 0.16, 4.00),
        ModelInfo("kimi-k2.5", 262_144, 65_536, True, 0.60, 0.10, 3.00),
    )
}
DEFAULT_MODEL = "kimi-k2.6"
REPLAY_PREFIX = "replay:"


def model_info(name: str) -> ModelInfo:
    """The table entry for ``name``; unknown models (self-hosted names) get K2-like limits, no price."""
    if name in MODELS:
        return MODELS[name]
    lowered = name.lower()
    for known in MODELS.values():
        # Provider-specific ids such as "moonshotai/kimi-k2.6" or "Kimi-K2.6".
        if lowered.endswith(known.name) or lowered.endswith(known.name.replace(".", "p")):
            return ModelInfo(name, known.context_window, known.max_output_tokens, known.thinks,
                             known.price_input, known.price_cached_input, known.price_output,
                             known.image_input, known.video_input)
    return ModelInfo(name, 262_144, 32_768, True, 0.0, 0.0, 0.0)


@dataclass(frozen=True)
class Provider:
    """An OpenAI-compatible endpoint preset."""

    name: str
    base_url: str | None
    key_envs: tuple[str, ...]
    description: str
    # Canonical model name -> the provider's id for it (absent: sent as given).
    model_ids: tuple[tuple[str, str], ...] = ()
    # True when the endpoint understands Kimi's `thinking: {"type": ...}` body field.
    kimi_thinking_field: bool = True
    # What the endpoint takes besides text: image parts (data URLs), video parts, and Kimi's files
    # API (POST /files, then ms://<id> references). Only Moonshot's own endpoints are known to take
    # video and uploads; a self-hosted server that does sets `video_input = true`.
    image_input: bool = True
    video_input: bool = False
    file_uploads: bool = False

    def model_id(self, model: str) -> str:
        return dict(self.model_ids).get(model, model)


def secret_env_names() -> frozenset[str]:
    """Environment variables that hold model API keys: never passed into a sandbox or its commands."""
    return frozenset(API_KEY_ENVS) | {name for p in PROVIDERS.values() for name in p.key_envs}


PROVIDERS: dict[str, Provider] = {
    p.name: p
    for p in (
        Provider("moonshot", "https://api.moonshot.ai/v1", API_KEY_ENVS, "Moonshot AI (international)",
                 video_input=True, file_uploads=True),
        Provider("moonshot-cn", "https://api.moonshot.cn/v1", API_KEY_ENVS, "Moonshot AI (China)",
                 video_input=True, file_uploads=True),
        Provider(
            "openrouter", "https://openrouter.ai/api/v1", ("OPENROUTER_API_KEY",) + API_KEY_ENVS,
            "OpenRouter",
            (("kimi-k2.6", "moonshotai/kimi-k2.6"), ("kimi-k2.5", "moonshotai/kimi-k2.5")),
            kimi_thinking_field=False,
        ),
        Provider(
            "together", "https://api.together.xyz/v1", ("TOGETHER_API_KEY",) + API_KEY_ENVS,
            "Together AI",
            (("kimi-k2.6", "moonshotai/Kimi-K2.6"), ("kimi-k2.5", "moonshotai/Kimi-K2.5")),
            kimi_thinking_field=False,
        ),
        Provider(
            "fireworks", "https://api.fireworks.ai/inference/v1", ("FIREWORKS_API_KEY",) + API_KEY_ENVS,
            "Fireworks AI",
            (("kimi-k2.6", "accounts/fireworks/models/kimi-k2p6"),
             ("kimi-k2.5", "accounts/fireworks/models/kimi-k2p5")),
            kimi_thinking_field=False,
        ),
        Provider(
            "openai-compatible", None, ("OPENAI_API_KEY",) + API_KEY_ENVS,
            "Any OpenAI-compatible endpoint (self-hosted vLLM / SGLang serving Kimi K2.x); needs --base-url",
        ),
    )
}
DEFAULT_PROVIDER = "moonshot"

# A `docker pull`-able default; `kimi-code sandbox build` makes the richer kimi-code-sandbox image,
# and sandbox/build-offline-image.sh makes one without any registry access.
DEFAULT_IMAGE = "python:3.12-bookworm"


def user_config_path(environ: Mapping[str, str] | None = None) -> Path:
    override = (os.environ if environ is None else environ).get(CONFIG_ENV)
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_config_dir(APP_NAME)) / "config.toml"


def check_base_url(url: str) -> str:
    """``url`` if it is an http(s) URL with a host; else ValueError with one line naming it.

    Anything else (``localhost:8000/v1``, ``ftp://…``, a typo) could never be reached, and would
    otherwise only fail as a "connection error" retried for the whole retry window."""
    text = url.strip()
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number in 0-65535
    except ValueError:
        parts = None
    if parts is not None and parts.scheme.lower() in ("http", "https") and parts.hostname and " " not in text:
        return text
    hint = ""
    if parts is not None and "://" not in text and text and " " not in text:
        hint = f" (did you mean http://{text} ?)"
    raise ValueError(f"base URL {url!r} is not an http:// or https:// URL with a host{hint}")


def default_state_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME)) / "sessions"


class Settings(BaseModel):
    """Everything configurable. Field names are the config-file keys and the env suffixes."""

    # allow_inf_nan=False: no setting means anything at nan or infinity (cpus = inf, command_timeout = nan).
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    provider: str = Field(DEFAULT_PROVIDER, description="endpoint preset (see `kimi-code config providers`)")
    model: str = Field(DEFAULT_MODEL, description="model name; replay:FILE serves a recorded session instead")
    replay: Path | None = Field(None, description="recording whose model turns are served (set by --model replay:FILE)")
    base_url: str | None = Field(None, description="OpenAI-compatible base URL; overrides the provider's")
    api_key: SecretStr | None = Field(None, exclude=True, repr=False, description="API key (prefer the env)")
    thinking: bool | None = Field(None, description="thinking mode; default: on for thinking models")
    max_output_tokens: int = Field(32_768, ge=256, description="max_completion_tokens per request")
    context_window: int | None = Field(
        None, ge=4096, description="override the model table's window (e.g. a self-hosted server with a shorter max length)"
    )
    request_timeout: float = Field(600.0, gt=0, description="seconds before one model request times out")
    retry_window: float = Field(1800.0, ge=0, description="seconds to keep retrying a failing model API")

    sandbox: Literal["docker", "none"] = Field("docker", description="where commands run")
    image: str = Field(DEFAULT_IMAGE, description="sandbox Docker image")
    network: bool = Field(False, description="network inside the sandbox")
    workspace: Literal["auto", "mount", "copy"] = Field(
        "auto", description="mount: bind-mount the repository; copy: the container holds its own copy (auto: copy "
                            "when DOCKER_HOST names an engine that is not this machine's socket)")
    workspace_path: str = Field("/workspace", pattern=r"^/", description="the workspace's path inside the sandbox")
    ca_bundle: Path | None = Field(None, description="host CA bundle to trust inside the sandbox")
    memory: str = Field("4g", description="sandbox memory limit")
    cpus: float = Field(2.0, gt=0, description="sandbox CPU limit")
    pids_limit: int = Field(1024, ge=16, description="sandbox process-count limit")
    command_timeout: float = Field(120.0, gt=0, description="default per-command timeout (s)")
    keep_sandbox: bool = Field(False, description="keep the container after a normal end")

    state_dir: Path = Field(default_factory=default_state_dir, description="where sessions are stored")
    test_command: str | None = Field(None, description="command run_tests uses when none is given")
    tool_output_tokens: int = Field(12_000, ge=500, description="token budget of one tool result")
    compaction: bool = Field(True, description="summarize old history when the context fills up")
    compaction_threshold: float = Field(0.8, gt=0.1, le=0.95, description="share of the window")
    image_input: bool | None = Field(None, description="the endpoint takes images; default: from the provider and model table")
    video_input: bool | None = Field(None, description="the endpoint takes video; default: from the provider and model table")
    media_inline_bytes: int = Field(
        4_000_000, ge=0, description="media files larger than this are uploaded (files API, ms://) instead of sent inline")
    media_tokens: int = Field(100_000, ge=1_000, description="estimated tokens of media one request may carry")
    git_author: str | None = Field(None, description="'Name <email>' for --branch commits")
    max_agents: int = Field(16, ge=1, le=300, description="sub-agents that run at once (the rest wait in order)")
    max_depth: int = Field(1, ge=0, le=4, description="levels of sub-agents below the root (0: none)")
    # [mcp_servers.NAME] tables (tools/mcp_config.py). Not printed or recorded with the other
    # settings: env values and headers may hold secrets (`kimi-code mcp list` shows the servers).
    mcp_servers: dict[str, McpServerConfig] = Field(
        default_factory=dict, exclude=True, repr=False, description="MCP servers whose tools the agent gets")

    @field_validator("replay")
    @classmethod
    def _absolute_recording(cls, v: Path | None) -> Path | None:
        return v.expanduser().resolve() if v is not None else None

    @field_validator("base_url")
    @classmethod
    def _usable_base_url(cls, v: str | None) -> str | None:
        return check_base_url(v) if v is not None else None

    @field_validator("model")
    @classmethod
    def _model_named(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("the model name is empty")
        return v

    @field_validator("mcp_servers")
    @classmethod
    def _server_names(cls, v: dict[str, McpServerConfig]) -> dict[str, McpServerConfig]:
        for name in v:
            check_server_name(name)
        return v

    @field_validator("provider")
    @classmethod
    def _known_provider(cls, v: str) -> str:
        if v not in PROVIDERS:
            raise ValueError(f"unknown provider {v!r}; known: {', '.join(PROVIDERS)}")
        return v

    # -- derived ---------------------------------------------------------------------------
    @property
    def provider_info(self) -> Provider:
        return PROVIDERS[self.provider]

    @property
    def model_info(self) -> ModelInfo:
        info = model_info(self.model)
        if self.context_window:
            info = dataclasses.replace(info, context_window=self.context_window)
        return info

    @property
    def output_reserve(self) -> int:
        """Output tokens asked per request (what AgentLoop.max_output returns): never more than a
        quarter of the window, so a small window (a self-hosted server) still leaves room for history."""
        info = self.model_info
        return max(256, min(self.max_output_tokens, info.max_output_tokens, info.context_window // 4))

    @property
    def input_budget(self) -> int:
        """Tokens a request's input may take: the window minus the output reservation."""
        return self.model_info.context_window - self.output_reserve

    @property
    def wire_model(self) -> str:
        """The model id as the endpoint knows it."""
        return self.provider_info.model_id(self.model)

    def media_refusal(self, kind: str) -> str | None:
        """Why this endpoint cannot take ``kind`` ("image" or "video") input, or None when it can:
        the setting (image_input / video_input) if given, else the provider and model tables."""
        override = self.image_input if kind == "image" else self.video_input
        if override is not None:
            return None if override else f"{kind} input is turned off ({kind}_input = false)"
        provider, model = self.provider_info, self.model_info
        if not (provider.image_input if kind == "image" else provider.video_input):
            return (f"provider {provider.name} is not known to take {kind} input (set {kind}_input = true if "
                    "this endpoint does)")
        if not (model.image_input if kind == "image" else model.video_input):
            return f"model {self.model} takes no {kind} input"
        return None

    @property
    def file_uploads(self) -> bool:
        """The endpoint has Kimi's files API (large media are uploaded and sent as ms://<id>)."""
        return self.provider_info.file_uploads

    @property
    def effective_base_url(self) -> str:
        url = self.base_url or self.provider_info.base_url
        if not url:
            raise ConfigError(
                f"provider {self.provider!r} needs a base URL: pass --base-url or set MOONSHOT_BASE_URL"
            )
        return url.rstrip("/")

    @property
    def thinking_enabled(self) -> bool:
        return self.model_info.thinks if self.thinking is None else self.thinking

    @property
    def key_required(self) -> bool:
        """Hosted providers need a key; a self-hosted server (the openai-compatible preset, or a
        --base-url that is none of the presets' hosts) often does not."""
        if self.provider == "openai-compatible":
            return False
        if self.base_url:
            preset_urls = {p.base_url.rstrip("/") for p in PROVIDERS.values() if p.base_url}
            return self.base_url.rstrip("/") in preset_urls
        return True

    def require_api_key(self) -> str:
        if self.api_key is None or not self.api_key.get_secret_value().strip():
            if not self.key_required:
                return "not-needed"  # OpenAI-compatible servers without auth ignore the header
            envs = " or ".join(self.provider_info.key_envs[:2])
            raise ConfigError(f"no API key: set {envs}")
        key = self.api_key.get_secret_value().strip()
        if not key.isascii() or not key.isprintable() or any(c.isspace() for c in key):
            # It goes into an HTTP header, which takes neither; never shown (it is a secret).
            envs = " or ".join(self.provider_info.key_envs[:2])
            raise ConfigError(f"the API key contains spaces, control or non-ASCII characters: check {envs} "
                              "(or api_key in the config file)")
        return key

    def public_dict(self) -> dict[str, Any]:
        """Settings safe to print or store (no key)."""
        data = self.model_dump(mode="json", exclude={"api_key"})
        data["api_key"] = "set" if self.api_key else "not set"
        return data


# Settings that are tables, given only in the config file or by their own flags.
_NOT_FROM_ENV = ("mcp_servers",)


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in Settings.model_fields:
        if name in _NOT_FROM_ENV:
            continue
        value = environ.get(ENV_PREFIX + name.upper())
        if value not in (None, ""):
            out[name] = value
    for env in BASE_URL_ENVS:
        if environ.get(env) and "base_url" not in out:
            out["base_url"] = environ[env]
    return out


def _api_key_from_env(provider: str, environ: dict[str, str]) -> str | None:
    envs = PROVIDERS[provider].key_envs if provider in PROVIDERS else API_KEY_ENVS
    for env in envs:
        if environ.get(env):
            return environ[env]
    return None


def read_config_file(path: Path, *, required: bool = False) -> dict[str, Any]:
    """The file's settings; a missing file is no settings unless ``required`` (named explicitly)."""
    if not path.exists():
        if required:
            raise ConfigError(f"config file {path} (from {CONFIG_ENV}) does not exist")
        return {}
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"cannot read config file {path}: it is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    unknown = set(data) - set(Settings.model_fields)
    if unknown:
        raise ConfigError(f"unknown key(s) in {path}: {', '.join(sorted(unknown))}")
    if "mcp_servers" in data:
        try:
            data["mcp_servers"] = parse_servers(data["mcp_servers"], str(path))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    return data


def _read_toml(path: Path, what: str) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"cannot read {what} {path}: it is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def read_mcp_file(path: Path, what: str = "MCP config") -> dict[str, McpServerConfig]:
    """The ``[mcp_servers.NAME]`` tables of a file that holds only those (``--mcp-config FILE``, a
    repository's ``.kimi-code/mcp.toml``)."""
    data = _read_toml(path, what)
    unknown = set(data) - {"mcp_servers"}
    if unknown:
        raise ConfigError(f"{what} {path} may only hold [mcp_servers.NAME] tables, not: {', '.join(sorted(unknown))}")
    try:
        return parse_servers(data.get("mcp_servers", {}), str(path))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def parse_mcp_flag(text: str) -> tuple[str, McpServerConfig]:
    """``--mcp NAME=COMMAND [ARGS...]`` (a stdio server) or ``--mcp NAME=URL`` (an HTTP server)."""
    import shlex

    name, sep, rest = text.partition("=")
    name, rest = name.strip(), rest.strip()
    if not sep or not name or not rest:
        raise ConfigError(f"--mcp {text!r}: give NAME=COMMAND (e.g. --mcp 'time=mcp-server-time') or NAME=URL")
    try:
        check_server_name(name)
        if rest.startswith(("http://", "https://")):
            return name, McpServerConfig(url=rest)
        argv = shlex.split(rest)
        return name, McpServerConfig(command=argv[0], args=argv[1:])
    except ValueError as exc:  # a bad name, unbalanced quotes, a URL without a host
        message = str(exc.errors()[0]["msg"]).removeprefix("Value error, ") if isinstance(exc, ValidationError) else str(exc)
        raise ConfigError(f"--mcp {text!r}: {message}") from None


def mcp_flag_servers(specs: list[str] | None, files: list[Path] | None) -> dict[str, McpServerConfig] | None:
    """The servers of ``--mcp-config FILE`` and ``--mcp NAME=...`` flags (later ones win), or None
    when none was given."""
    if not specs and not files:
        return None
    servers: dict[str, McpServerConfig] = {}
    for file in files or ():
        servers.update(read_mcp_file(file.expanduser(), "--mcp-config file"))
    for spec in specs or ():
        name, config = parse_mcp_flag(spec)
        servers[name] = config
    return servers


def load_settings(
    flags: dict[str, Any] | None = None,
    *,
    environ: dict[str, str] | None = None,
    config_path: Path | None = None,
) -> Settings:
    """Merge defaults, the config file, the environment and CLI flags (``None`` flags are unset)."""
    env = dict(os.environ if environ is None else environ)
    path = config_path or user_config_path(env)
    merged: dict[str, Any] = {}
    # A file named by KIMI_CODE_CONFIG must exist (a typo must not silently mean "defaults");
    # the default location may be absent.
    merged.update(read_config_file(path, required=config_path is None and bool(env.get(CONFIG_ENV))))
    merged.update(_env_overrides(env))
    file_servers = merged.get("mcp_servers") or {}
    merged.update({k: v for k, v in (flags or {}).items() if v is not None})
    if (flags or {}).get("mcp_servers"):  # flags add servers to the file's (and win by name)
        merged["mcp_servers"] = {**file_servers, **flags["mcp_servers"]}
    model = merged.get("model")
    if isinstance(model, str) and model.startswith(REPLAY_PREFIX):
        # The recording names its own model; the endpoint is a local server started per run.
        name = model[len(REPLAY_PREFIX):].strip()
        if not name:
            raise ConfigError("--model replay: needs a file, e.g. --model replay:session.jsonl")
        merged["replay"], merged["model"] = Path(name).expanduser().resolve(), DEFAULT_MODEL
    if not merged.get("api_key"):
        key = _api_key_from_env(str(merged.get("provider", DEFAULT_PROVIDER)), env)
        if key:
            merged["api_key"] = key
    try:
        return Settings(**merged)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"invalid setting {where}: {message}".replace("\n", " ")) from None
