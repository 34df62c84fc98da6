"""Test logs to per-test statuses, the way SWE-bench's harness reads them, per repository.

The FAIL_TO_PASS and PASS_TO_PASS lists of the dataset were made with SWE-bench's own parsers, so a
test is found only under the id *those* parsers give it: for pytest, the second whitespace-separated
word of a ``-rA`` summary line (a parametrised id with a space in it is cut there); for requests,
pydicom and pylint, a parameter that is an absolute path shortened to its last part; django's and
sympy's runners have formats of their own. Behaviour follows ``swebench.harness.log_parsers.python``
of the ``swebench`` package (5.x), re-implemented here; ``tests/test_swebench.py`` pins the cases.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# SWE-bench's statuses (XPASS is not one: such a line is not a result, and the test counts as failed).
STATUSES = ("FAILED", "PASSED", "SKIPPED", "ERROR", "XFAIL")
_SKIP_COUNT = re.compile(r"^\[\d+\]$")  # "SKIPPED [3] path:line: reason" is a summary, not a test
_OPTION = re.compile(r"(.*?)\[(.*)\]")
_COLOUR_CODE = re.compile(r"\[(\d+)m")
_CONTROL = str.maketrans("", "", "".join(chr(c) for c in range(1, 32)))

Parser = Callable[[str], dict[str, str]]


def _summary_words(log: str, *, cut_message: bool = False, rewrite: Callable[[str], str] | None = None):
    """(status, words) of each line that starts with a status. A FAILED line's " - message"
    separators become spaces (pytest's plain parser) or end the line (``cut_message``)."""
    for line in log.split("\n"):
        if rewrite is not None:
            line = rewrite(line)
        if not line.startswith(STATUSES):
            continue
        if line.startswith("FAILED"):
            line = line.split(" - ", 1)[0] if cut_message else line.replace(" - ", " ")
        words = line.split()
        if len(words) < 2 or (words[0] == "SKIPPED" and _SKIP_COUNT.match(words[1])):
            continue
        yield words[0], words


def pytest_plain(log: str) -> dict[str, str]:
    """``STATUS id ...``: the id is the second word."""
    return {words[1]: status for status, words in _summary_words(log)}


def pytest_options(log: str) -> dict[str, str]:
    """As :func:`pytest_plain`, with a parameter that is an absolute path (not ``//…``, no glob)
    reduced to ``/<last part>`` (requests, pydicom, pylint)."""
    out: dict[str, str] = {}
    for status, words in _summary_words(log):
        name = words[1]
        m = _OPTION.search(name)
        if m:
            main, option = m.groups()
            if option.startswith("/") and not option.startswith("//") and "*" not in option:
                option = "/" + option.split("/")[-1]
            name = f"{main}[{option}]"
        out[name] = status
    return out


def pytest_v2(log: str) -> dict[str, str]:
    """Later pytest output (astropy, scikit-learn, sphinx): colour codes and control characters
    removed, the id is everything after the status (a FAILED line ends at its first " - "); lines
    of old pytest that *end* with a status are read too."""
    out: dict[str, str] = {}
    for raw in log.split("\n"):
        line = _COLOUR_CODE.sub("", raw).translate(_CONTROL)
        if line.startswith(STATUSES):
            if line.startswith("FAILED"):
                line = line.split(" - ", 1)[0]
            words = line.split()
            if len(words) >= 2 and not (words[0] == "SKIPPED" and _SKIP_COUNT.match(words[1])):
                out[" ".join(words[1:])] = words[0]
        elif line.endswith(STATUSES):
            words = line.split()
            if len(words) >= 2:
                out[" ".join(words[:-1])] = words[-1]
    return out


def matplotlib(log: str) -> dict[str, str]:
    """As :func:`pytest_plain`, with mouse-button enum names written as their values."""
    def rewrite(line: str) -> str:
        return line.replace("MouseButton.LEFT", "1").replace("MouseButton.RIGHT", "3")

    return {words[1]: status for status, words in _summary_words(log, rewrite=rewrite)}


def seaborn(log: str) -> dict[str, str]:
    """``FAILED id``, ``PASSED id`` or ``id PASSED ...`` (verbose progress lines)."""
    out: dict[str, str] = {}
    for line in log.split("\n"):
        words = line.split()
        if len(words) < 2:
            continue
        if line.startswith("FAILED"):
            out[words[1]] = "FAILED"
        elif " PASSED " in line:
            if words[1] == "PASSED":
                out[words[0]] = "PASSED"
        elif line.startswith("PASSED"):
            out[words[1]] = "PASSED"
    return out


_SYMPY_FAILURE = re.compile(r"(_*) (.*)\.py:(.*) (_*)")


def sympy(log: str) -> dict[str, str]:
    """sympy's ``bin/test``: ``test_name ok|F|E`` lines, and failure headers ``___ file.py:test ___``."""
    out = {f"{m[1]}.py:{m[2]}": "FAILED" for m in _SYMPY_FAILURE.findall(log)}
    for raw in log.split("\n"):
        line = raw.strip()
        if not line.startswith("test_"):
            continue
        for suffix, status in ((" E", "ERROR"), (" F", "FAILED"), (" ok", "PASSED")):
            if line.endswith(suffix):
                out[line.split()[0]] = status
    return out


_DJANGO_PASSED_AFTER_NOISE = (
    re.compile(r"^(.*?)\s\.\.\.\sTesting\ against\ Django\ installed\ in\ ((?s:.*?))\ silenced\)\.\nok$", re.M),
    re.compile(r"^(.*?)\s\.\.\.\sInternal\ Server\ Error:\ \/(.*)\/\nok$", re.M),
    re.compile(r"^(.*?)\s\.\.\.\sSystem check identified no issues \(0 silenced\)\nok$", re.M),
)


# unittest on Python 3.11+ names a test "name (module.Class.name)", older Pythons "name
# (module.Class)": the dataset has the form its version's Python printed (django 5 on 3.11, the
# older ones on 3.6-3.9), and a run may use another Python, so a test is found under both.
_DJANGO_311_ID = re.compile(r"^(\w+) \(([\w.]+)\.\1\)$")


def django(log: str) -> dict[str, str]:
    """django's ``runtests.py --verbosity 2``: ``name (module.Class) ... ok|skipped|FAIL|ERROR``,
    ``FAIL: name``/``ERROR: name`` headers, and an ``ok`` on a later line after printed output.
    An id printed by Python 3.11+ is also given in the form older Pythons print."""
    out: dict[str, str] = {}
    for name, status in _django(log).items():
        out[name] = status
        old = _DJANGO_311_ID.sub(r"\1 (\2)", name)
        if old != name:
            out.setdefault(old, status)
    return out


def _django(log: str) -> dict[str, str]:
    out: dict[str, str] = {}
    previous: str | None = None
    for raw in log.split("\n"):
        line = raw.strip()
        if "--version is equivalent to version" in line:
            out["--version is equivalent to version"] = "PASSED"
        if " ... " in line:
            previous = line.split(" ... ")[0]
        for suffix in (" ... ok", " ... OK", " ...  OK"):
            if line.endswith(suffix):
                if line.startswith("Applying sites.0002_alter_domain_unique...test_no_migrations"):
                    line = line.split("...", 1)[-1].strip()  # a migration's output ran into the name
                out[line.rsplit(suffix, 1)[0]] = "PASSED"
                break
        if " ... skipped" in line:
            out[line.split(" ... skipped")[0]] = "SKIPPED"
        if line.endswith(" ... FAIL"):
            out[line.split(" ... FAIL")[0]] = "FAILED"
        if line.startswith("FAIL:"):
            out[line.split()[1].strip()] = "FAILED"
        if line.endswith(" ... ERROR"):
            out[line.split(" ... ERROR")[0]] = "ERROR"
        if line.startswith("ERROR:"):
            out[line.split()[1].strip()] = "ERROR"
        if line.lstrip().startswith("ok") and previous is not None:
            out[previous] = "PASSED"
    for pattern in _DJANGO_PASSED_AFTER_NOISE:
        for m in pattern.finditer(log):
            out[m.group(1)] = "PASSED"
    return out


BY_REPO: dict[str, Parser] = {
    "astropy/astropy": pytest_v2,
    "django/django": django,
    "marshmallow-code/marshmallow": pytest_plain,
    "matplotlib/matplotlib": matplotlib,
    "mwaskom/seaborn": seaborn,
    "pallets/flask": pytest_plain,
    "psf/requests": pytest_options,
    "pvlib/pvlib-python": pytest_plain,
    "pydata/xarray": pytest_plain,
    "pydicom/pydicom": pytest_options,
    "pylint-dev/astroid": pytest_plain,
    "pylint-dev/pylint": pytest_options,
    "pytest-dev/pytest": pytest_plain,
    "pyvista/pyvista": pytest_plain,
    "scikit-learn/scikit-learn": pytest_v2,
    "sqlfluff/sqlfluff": pytest_plain,
    "sphinx-doc/sphinx": pytest_v2,
    "sympy/sympy": sympy,
}


def parser_for(repo: str) -> Parser:
    """The repository's parser; pytest's plain one for any other repository."""
    return BY_REPO.get(repo, pytest_plain)
