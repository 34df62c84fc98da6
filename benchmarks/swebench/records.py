"""SWE-bench task records (the dataset's JSONL format) and the per-task result line we write."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import BenchError

REQUIRED = ("instance_id", "repo", "base_commit", "problem_statement", "patch", "test_patch",
            "FAIL_TO_PASS", "PASS_TO_PASS", "version")


def _test_list(value: Any, name: str, instance_id: str) -> list[str]:
    """SWE-bench stores the two test lists as JSON-encoded strings; accept real lists too."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else []
        except ValueError:
            raise BenchError(f"{instance_id}: {name} is not a JSON list") from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BenchError(f"{instance_id}: {name} must be a list of test ids")
    return list(value)


@dataclass
class Task:
    """One SWE-bench instance. ``env_recipe`` (our extension) overrides the recipe table's fields."""

    instance_id: str
    repo: str  # owner/name
    base_commit: str
    problem_statement: str
    patch: str
    test_patch: str
    fail_to_pass: list[str]
    pass_to_pass: list[str]
    version: str
    environment_setup_commit: str
    env_recipe: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> Task:
        iid = str(rec.get("instance_id") or "?")
        missing = [k for k in REQUIRED if k not in rec]
        if missing:
            raise BenchError(f"{iid}: record lacks {', '.join(missing)}")
        override = rec.get("env_recipe") or {}
        if not isinstance(override, dict):
            raise BenchError(f"{iid}: env_recipe must be an object")
        return cls(
            instance_id=iid, repo=str(rec["repo"]), base_commit=str(rec["base_commit"]),
            problem_statement=str(rec["problem_statement"]), patch=str(rec["patch"]),
            test_patch=str(rec["test_patch"]),
            fail_to_pass=_test_list(rec["FAIL_TO_PASS"], "FAIL_TO_PASS", iid),
            pass_to_pass=_test_list(rec["PASS_TO_PASS"], "PASS_TO_PASS", iid),
            version=str(rec["version"]),
            environment_setup_commit=str(rec.get("environment_setup_commit") or rec["base_commit"]),
            env_recipe=override,
        )

    @property
    def repo_dir_name(self) -> str:
        """The ``owner+name`` folder name used under --repos-dir."""
        return self.repo.replace("/", "+")


def load_tasks(path: Path, ids: list[str] | None = None) -> list[Task]:
    """Read a JSONL (or a JSON list) of records; keep ``ids`` (in file order) when given."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BenchError(f"cannot read {path}: {exc.strerror}") from None
    records: list[Any]
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            records = json.loads(stripped)
        except ValueError as exc:
            raise BenchError(f"{path}: not valid JSON: {exc}") from None
    else:
        records = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except ValueError as exc:
                raise BenchError(f"{path}:{n}: not valid JSON: {exc}") from None
    tasks = []
    for n, rec in enumerate(records, 1):
        if not isinstance(rec, dict):
            raise BenchError(f"{path}: record {n} is not an object")
        tasks.append(Task.from_record(rec))
    if ids:
        wanted = set(ids)
        unknown = wanted - {t.instance_id for t in tasks}
        if unknown:
            raise BenchError(f"{path} has no instance {', '.join(sorted(unknown))}")
        tasks = [t for t in tasks if t.instance_id in wanted]
    if not tasks:
        raise BenchError(f"{path} holds no tasks")
    return tasks


@dataclass
class TaskResult:
    """One line of the results JSONL."""

    instance_id: str
    resolved: bool = False
    # resolved | unresolved | patch_failed | error | env_error | timeout | limit | api_error | sandbox_error
    status: str = "error"
    agent_status: str | None = None  # what kimi-code run reported (success, failure, limit, ...)
    exit_code: int | None = None
    steps: int = 0
    tokens: dict[str, int] = field(default_factory=lambda: {"prompt": 0, "cached": 0, "completion": 0})
    cached_share: float = 0.0
    cost: float = 0.0
    wall_time: float = 0.0
    agent_time: float = 0.0
    env_image: str | None = None
    env_built: bool = False  # this task built the environment image (else it was reused)
    patch_lines: int = 0
    fail_to_pass_failed: list[str] = field(default_factory=list)
    pass_to_pass_failed: list[str] = field(default_factory=list)
    error: str | None = None
    # The agent's diff against the base commit: written to the predictions file, not the results.
    model_patch: str = field(default="", repr=False)

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("model_patch")
        return json.dumps(data, ensure_ascii=False)

    def prediction(self, model_name: str) -> str:
        """One line of SWE-bench's predictions format, for its official harness."""
        return json.dumps({"instance_id": self.instance_id, "model_name_or_path": model_name,
                           "model_patch": self.model_patch}, ensure_ascii=False)
