"""Summaries of test-runner output: counts, failing test ids and trimmed failure output.

Each parser recognises its runner by the summary line the runner always prints, so the right one
is found from the output alone (``npm test`` and ``make test`` wrap other runners). Failure output
is trimmed per test and in total: the model needs the assertion and the location, not pages of
stack frames.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

FAILURE_BLOCK_HEAD = 8  # lines kept from the start of one failure
FAILURE_BLOCK_TAIL = 30  # and from its end
FAILURE_BLOCK_CHARS = 3000
FAILURE_TOTAL_CHARS = 8000
MAX_FAILING_IDS = 100

_ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


@dataclass
class TestSummary:
    framework: str  # pytest | unittest | go | cargo | jest | mocha | node:test | unknown
    passed: int | None = 0  # None when the runner does not report passes (go test without -v)
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    failing: list[str] = field(default_factory=list)  # ids of failed and errored tests
    failures: str = ""  # trimmed failure output
    parsed: bool = True  # False when no known summary was found
    notes: list[str] = field(default_factory=list)

    __test__ = False  # not a pytest test class

    @property
    def ok(self) -> bool:
        return self.parsed and self.failed == 0 and self.errors == 0

    def counts(self) -> str:
        passed = "?" if self.passed is None else str(self.passed)
        return f"{passed} passed, {self.failed} failed, {self.errors} errors, {self.skipped} skipped"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def strip_ansi(text: str) -> str:
    return _ANSI_RE.sub("", text).replace("\r\n", "\n")


def trim_block(lines: list[str]) -> str:
    """One failure, cut in the middle when long (its start names it, its end says why)."""
    while lines and not lines[0].strip():
        lines = lines[1:]
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    if len(lines) > FAILURE_BLOCK_HEAD + FAILURE_BLOCK_TAIL:
        cut = len(lines) - FAILURE_BLOCK_HEAD - FAILURE_BLOCK_TAIL
        lines = lines[:FAILURE_BLOCK_HEAD] + [f"… ({cut} lines cut) …"] + lines[-FAILURE_BLOCK_TAIL:]
    text = "\n".join(lines)
    if len(text) > FAILURE_BLOCK_CHARS:
        half = FAILURE_BLOCK_CHARS // 2
        text = text[:half] + f"\n… ({len(text) - 2 * half} characters cut) …\n" + text[-half:]
    return text


def join_blocks(blocks: list[str]) -> str:
    out: list[str] = []
    used = 0
    for i, block in enumerate(blocks):
        if out and used + len(block) > FAILURE_TOTAL_CHARS:
            out.append(f"… ({len(blocks) - i} more failures not shown)")
            break
        out.append(block)
        used += len(block) + 2
    return "\n\n".join(out)


def _dedupe(ids: list[str]) -> list[str]:
    return list(dict.fromkeys(ids))[:MAX_FAILING_IDS]


def _collect_blocks(
    lines: list[str],
    start: Callable[[int, str], str | None],
    end: Callable[[str, list[str]], bool] = lambda line, block: False,
) -> tuple[list[str], list[str]]:
    """The failure blocks in ``lines``, trimmed, and the key of each (its test id, as a rule).

    A block opens at line ``i`` when ``start(i, line)`` gives a key, and runs to the next opening,
    to the end, or up to (not including) a line for which ``end(line, block_so_far)`` holds.
    """
    keys: list[str] = []
    blocks: list[str] = []
    current: list[str] | None = None
    for i, line in enumerate(lines):
        key = start(i, line)
        if key is not None:
            if current:
                blocks.append(trim_block(current))
            keys.append(key)
            current = [line]
        elif current is not None:
            if end(line, current):
                blocks.append(trim_block(current))
                current = None
            else:
                current.append(line)
    if current:
        blocks.append(trim_block(current))
    return keys, blocks


# -- pytest -------------------------------------------------------------------------------------

_PYTEST_COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|deselected|warnings?|rerun)")
_PYTEST_SUMMARY = re.compile(
    r"^(?:=+ )?((?:\d+ (?:passed|failed|errors?|skipped|xfailed|xpassed|deselected|warnings?|rerun)"
    r"(?:, )?)+|no tests ran)(?: in [\d.]+s.*?)?(?: =+)?$"
)
_PYTEST_BANNER = re.compile(r"^=+ (.*?) =+$")
_PYTEST_BLOCK = re.compile(r"^_{3,} (.+?) _{3,}$")
_PYTEST_SHORT = re.compile(r"^(FAILED|ERROR) (\S+)(?: - .*)?$")
_PYTEST_VERBOSE = re.compile(r"^(\S+::\S+) (FAILED|ERROR)\b")


def _pytest_banner(line: str) -> str | None:
    """The title of a section banner (``=== FAILURES ===``); a test's ``___ name ___`` is none."""
    m = _PYTEST_BANNER.match(line)
    return m.group(1) if m and not _PYTEST_BLOCK.match(line) else None


def parse_pytest(text: str) -> TestSummary | None:
    lines = text.split("\n")
    summary = None
    for line in reversed(lines):
        m = _PYTEST_SUMMARY.match(line.strip())
        if m and (" in " in line or line.startswith("=")):
            summary = m.group(1)
            break
    if summary is None:
        return None
    s = TestSummary("pytest")
    for n, word in _PYTEST_COUNT.findall(summary):
        n = int(n)
        if word == "passed":
            s.passed = n
        elif word == "failed":
            s.failed = n
        elif word.startswith("error"):
            s.errors = n
        elif word == "skipped":
            s.skipped = n
        elif word == "xpassed":
            s.notes.append(f"{n} xpassed")
        elif word == "xfailed":
            s.notes.append(f"{n} xfailed")
    ids = [m.group(2) for m in map(_PYTEST_SHORT.match, lines) if m]
    if not ids:
        ids = [m.group(1) for m in map(_PYTEST_VERBOSE.match, lines) if m]
    s.failing = _dedupe(ids)
    # Blocks stand under the FAILURES and ERRORS banners; any banner ends the one before it.
    in_failures: list[bool] = []
    section = False
    for line in lines:
        title = _pytest_banner(line)
        if title is not None:
            section = title in ("FAILURES", "ERRORS")
        in_failures.append(section)
    _, blocks = _collect_blocks(
        lines,
        lambda i, line: line if in_failures[i] and _PYTEST_BLOCK.match(line) else None,
        lambda line, _: _pytest_banner(line) is not None,
    )
    s.failures = join_blocks(blocks)
    if "Interrupted:" in text:
        s.notes.append(next(ln.strip("! ") for ln in lines if "Interrupted:" in ln))
    return s


# -- unittest -----------------------------------------------------------------------------------

_UT_RAN = re.compile(r"^Ran (\d+) tests? in [\d.]+s$")
_UT_RESULT = re.compile(r"^(OK|FAILED|NO TESTS RAN)(?: \((.*)\))?$")
_UT_HEAD = re.compile(r"^(FAIL|ERROR|UNEXPECTED SUCCESS): (\S+) \(([^)]*)\)(.*)$")


def parse_unittest(text: str) -> TestSummary | None:
    lines = text.split("\n")
    ran_at = None
    for i in range(len(lines) - 1, -1, -1):
        if _UT_RAN.match(lines[i].strip()):
            ran_at = i
            break
    if ran_at is None:
        return None
    total = int(_UT_RAN.match(lines[ran_at].strip()).group(1))  # type: ignore[union-attr]
    s = TestSummary("unittest")
    extra = {}
    for line in lines[ran_at + 1:]:
        m = _UT_RESULT.match(line.strip())
        if m:
            for part in (m.group(2) or "").split(","):
                if "=" in part:
                    key, value = part.split("=", 1)
                    extra[key.strip()] = int(value)
            break
    s.failed = extra.get("failures", 0) + extra.get("unexpected successes", 0)
    s.errors = extra.get("errors", 0)
    s.skipped = extra.get("skipped", 0)
    xfail = extra.get("expected failures", 0)
    if xfail:
        s.notes.append(f"{xfail} expected failures")
    s.passed = max(0, total - s.failed - s.errors - s.skipped - xfail)

    def head(i: int, line: str) -> str | None:  # "FAIL: test (module.Class)" under a rule of "="
        m = _UT_HEAD.match(line)
        if not (m and i > 0 and set(lines[i - 1].strip()) == {"="}):
            return None
        name, where, rest = m.group(2), m.group(3), m.group(4).strip()
        test_id = where if where.endswith("." + name) else f"{where}.{name}"
        return f"{test_id} {rest}".strip()

    def rule(line: str, block: list[str]) -> bool:  # the "=" before the next test, the "-" after the last
        bar = line.strip()
        return len(bar) >= 20 and (set(bar) == {"="} or (set(bar) == {"-"} and len(block) > 2))

    ids, blocks = _collect_blocks(lines[:ran_at], head, rule)
    s.failing = _dedupe(ids)
    s.failures = join_blocks(blocks)
    return s


# -- jest / mocha / node:test -------------------------------------------------------------------

_JEST_TESTS = re.compile(r"^Tests:\s+(.*\d+ total)$")
_JEST_BULLET = re.compile(r"^\s*● (.+)$")


def parse_jest(text: str) -> TestSummary | None:
    lines = text.split("\n")
    summary = next((m.group(1) for m in map(_JEST_TESTS.match, reversed(lines)) if m), None)
    if summary is None:
        return None
    s = TestSummary("jest")
    counts = dict((w, int(n)) for n, w in re.findall(r"(\d+) (failed|passed|skipped|todo|pending)", summary))
    s.passed = counts.get("passed", 0)
    s.failed = counts.get("failed", 0)
    s.skipped = counts.get("skipped", 0) + counts.get("todo", 0) + counts.get("pending", 0)
    titles, blocks = _collect_blocks(
        lines,
        lambda _, line: m.group(1).strip() if (m := _JEST_BULLET.match(line)) else None,
        lambda line, _: bool(re.match(r"^(PASS|FAIL) \S", line)) or line.startswith(("Test Suites:", "Tests:")),
    )
    s.errors += titles.count("Test suite failed to run")
    s.failing = _dedupe([t for t in titles if t != "Test suite failed to run"])
    s.failures = join_blocks(blocks)
    return s


_MOCHA_PASSING = re.compile(r"^\s+(\d+) passing \(")
_MOCHA_BLOCK = re.compile(r"^\s{1,4}(\d+)\) (.*)$")


def parse_mocha(text: str) -> TestSummary | None:
    lines = text.split("\n")
    start = next((i for i in range(len(lines) - 1, -1, -1) if _MOCHA_PASSING.match(lines[i])), None)
    if start is None:
        return None
    s = TestSummary("mocha")
    s.passed = int(_MOCHA_PASSING.match(lines[start]).group(1))  # type: ignore[union-attr]
    failing_at = None
    for i in range(start + 1, min(len(lines), start + 4)):
        m = re.match(r"^\s+(\d+) (pending|failing)$", lines[i])
        if m and m.group(2) == "pending":
            s.skipped = int(m.group(1))
        elif m:
            s.failed = int(m.group(1))
            failing_at = i
    ids, blocks = [], []
    if failing_at is not None:
        current: list[str] | None = None
        title: list[str] = []
        for line in lines[failing_at + 1:]:
            m = _MOCHA_BLOCK.match(line)
            if m:
                if current:
                    blocks.append(trim_block(current))
                    ids.append(" ".join(title).rstrip(":"))
                current = [line]
                title = [m.group(2).strip()]
                continue
            if current is not None:
                current.append(line)
                # The title goes on over indented lines until the one ending with ":".
                if title and not title[-1].endswith(":") and line.strip():
                    title.append(line.strip())
        if current:
            blocks.append(trim_block(current))
            ids.append(" ".join(title).rstrip(":"))
    s.failing = _dedupe(ids)
    s.failures = join_blocks(blocks)
    return s


_NODE_COUNT = re.compile(r"^(?:#|ℹ) (tests|pass|fail|cancelled|skipped|todo) (\d+)$")


def parse_node_test(text: str) -> TestSummary | None:
    lines = text.split("\n")
    counts: dict[str, int] = {}
    for line in lines:
        m = _NODE_COUNT.match(line.strip())
        if m:
            counts[m.group(1)] = int(m.group(2))
    if "tests" not in counts or "pass" not in counts:
        return None
    s = TestSummary("node:test", passed=counts.get("pass", 0), failed=counts.get("fail", 0),
                    errors=counts.get("cancelled", 0),
                    skipped=counts.get("skipped", 0) + counts.get("todo", 0))
    ids, blocks = [], []
    if any(line.startswith("TAP version") for line in lines[:5]):
        stack: list[str] = []
        i = 0
        while i < len(lines):
            line = lines[i]
            m = re.match(r"^(\s*)# Subtest: (.*)$", line)
            if m:
                depth = len(m.group(1)) // 4
                stack[depth:] = [m.group(2)]
            m = re.match(r"^(\s*)not ok \d+ - (.*?)(?: # .*)?$", line)
            if m:
                depth = len(m.group(1)) // 4
                block = [line]
                j = i + 1
                while j < len(lines) and (lines[j].startswith(m.group(1) + "  ") or not lines[j].strip()):
                    if lines[j].strip() == "...":
                        block.append(lines[j])
                        j += 1
                        break
                    block.append(lines[j])
                    j += 1
                body = "\n".join(block)
                if "type: 'suite'" not in body and "subtestsFailed" not in body:
                    ids.append(" > ".join(stack[:depth] + [m.group(2)]))
                    blocks.append(trim_block([ln for ln in block if not re.match(r"^\s+duration_ms:", ln)]))
                i = j
                continue
            i += 1
    else:
        try:
            at = next(i for i, ln in enumerate(lines) if ln.strip() == "✖ failing tests:")
        except StopIteration:
            at = None
        if at is not None:
            ids, blocks = _collect_blocks(
                [ln for ln in lines[at + 1:] if not ln.startswith("test at ")],
                lambda _, line: m.group(1) if (m := re.match(r"^✖ (.*?)(?: \([\d.]+m?s\))?$", line)) else None,
            )
    s.failing = _dedupe(ids)
    s.failures = join_blocks(blocks)
    return s


# -- cargo / go ---------------------------------------------------------------------------------

_CARGO_RESULT = re.compile(r"^test result: (?:ok|FAILED)\. (\d+) passed; (\d+) failed; (\d+) ignored")


def parse_cargo(text: str) -> TestSummary | None:
    lines = text.split("\n")
    results = [m for m in map(_CARGO_RESULT.match, lines) if m]
    compile_error = any(re.match(r"^error(\[E\d+\])?: could not compile", ln) for ln in lines)
    if not results and not compile_error:
        return None
    s = TestSummary("cargo")
    for m in results:
        s.passed = (s.passed or 0) + int(m.group(1))
        s.failed += int(m.group(2))
        s.skipped += int(m.group(3))
    ids = [m.group(1) for m in (re.match(r"^test (\S+) \.\.\. FAILED$", ln) for ln in lines) if m]
    _, blocks = _collect_blocks(
        lines,
        lambda _, line: line if re.match(r"^---- (\S+) stdout ----$", line) else None,
        lambda line, _: line == "failures:" or line.startswith("test result:"),
    )
    if compile_error:
        s.errors += 1
        s.notes.append("compilation failed")
        errs: list[list[str]] = []
        inside = False
        for line in lines:
            if re.match(r"^error(\[E\d+\])?: ", line):
                errs.append([line])
                inside = True
            elif re.match(r"^(warning|\s+Compiling|\s+Running|\s+Finished)", line):
                inside = False
            elif inside and len(errs[-1]) < 40:
                errs[-1].append(line)
        blocks = [trim_block(e) for e in errs] + blocks
    s.failing = _dedupe(ids)
    s.failures = join_blocks(blocks)
    return s


def parse_go(text: str) -> TestSummary | None:
    lines = text.split("\n")
    pkg_ok = [ln for ln in lines if re.match(r"^ok\s+\S+", ln)]
    pkg_fail = [ln for ln in lines if re.match(r"^FAIL\s+\S+", ln)]
    fails = [m for m in (re.match(r"^(\s*)--- FAIL: (\S+)", ln) for ln in lines) if m]
    if not (pkg_ok or pkg_fail or fails):
        return None
    passes = sum(1 for ln in lines if re.match(r"^\s*--- PASS: ", ln))
    s = TestSummary("go")
    s.passed = passes if passes or any(ln.startswith("=== RUN") for ln in lines) else None
    s.skipped = sum(1 for ln in lines if re.match(r"^\s*--- SKIP: ", ln))
    # A parent test fails when a subtest does: count the leaves only.
    names = [m.group(2) for m in fails]
    leaves = [n for n in names if not any(o.startswith(n + "/") for o in names)]
    s.failed = len(leaves)
    s.errors = sum(1 for ln in pkg_fail if "[build failed]" in ln or "[setup failed]" in ln)
    if s.passed is None:
        s.notes.append(f"{len(pkg_ok)} packages ok, {len(pkg_fail)} failed (run with -v to count passes)")
    _, blocks = _collect_blocks(
        lines,
        lambda _, line: line if re.match(r"^\s*--- FAIL: ", line) or line.startswith("# ") else None,
        lambda line, _: bool(re.match(r"^(=== RUN|--- PASS|ok\s|FAIL$|FAIL\s|PASS$)", line)),
    )
    s.failing = _dedupe(leaves + [ln.split()[1] for ln in pkg_fail if "[build failed]" in ln])
    s.failures = join_blocks(blocks)
    return s


PARSERS: dict[str, Callable[[str], TestSummary | None]] = {
    "pytest": parse_pytest,
    "unittest": parse_unittest,
    "jest": parse_jest,
    "mocha": parse_mocha,
    "node:test": parse_node_test,
    "cargo": parse_cargo,
    "go": parse_go,
}


def parse_test_output(output: str, hint: str | None = None) -> TestSummary:
    """Summarise a test run; ``hint`` (a framework name) is tried first."""
    text = strip_ansi(output)
    order = list(PARSERS)
    if hint in PARSERS:
        order.remove(hint)
        order.insert(0, hint)
    for name in order:
        summary = PARSERS[name](text)
        if summary is not None:
            if re.search(r"^make(\[\d+\])?: \*\*\* .*Error \d+", text, re.M):
                summary.notes.append("make reported an error")
            return summary
    return TestSummary("unknown", passed=None, parsed=False)
