"""Test-output parsing: real pytest runs (generated here) and captured output of other runners.

The non-pytest samples were captured from real runs (Python 3.11 unittest, cargo 1.9x, Node 20
node:test in TAP and spec reporters, jest 30, mocha 11); the go sample follows `go test ./...`'s
fixed format (no Go toolchain on the machine that captured them).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kimi_code.tools.testparse import (
    FAILURE_TOTAL_CHARS,
    parse_test_output,
    strip_ansi,
    trim_block,
)

FAILING_PROJECT = {
    "pytest.ini": "[pytest]\n",
    "calc.py": "def add(a, b):\n    return a + b + (1 if a == 2 else 0)\n",
    "tests/test_calc.py": textwrap.dedent('''\
        import pytest
        from calc import add

        def test_add_ok():
            assert add(1, 1) == 2

        def test_add_bug():
            assert add(2, 2) == 4

        @pytest.mark.skip(reason="not yet")
        def test_later():
            pass

        @pytest.fixture
        def db():
            raise RuntimeError("database unavailable")

        def test_with_db(db):
            pass

        class TestMore:
            @pytest.mark.parametrize("n", [1, 2, 3])
            def test_param(self, n):
                assert add(n, 0) == n

            def test_long_failure(self):
                data = list(range(200))
                for i in data:
                    pass
                assert data == list(range(201))
    '''),
}


def run_pytest(tmp_path: Path, *args: str) -> tuple[str, int]:
    for rel, text in FAILING_PROJECT.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"},
    )
    return proc.stdout + proc.stderr, proc.returncode


EXPECTED_FAILING = ["tests/test_calc.py::test_add_bug", "tests/test_calc.py::TestMore::test_param[2]",
                    "tests/test_calc.py::TestMore::test_long_failure", "tests/test_calc.py::test_with_db"]


@pytest.mark.parametrize("flags", [["-q"], ["-v"], ["-rfE"], ["-q", "--color=yes"]])
def test_real_pytest_output_with_failures(tmp_path: Path, flags: list[str]) -> None:
    output, code = run_pytest(tmp_path, *flags)
    assert code == 1, output
    s = parse_test_output(output)
    assert s.framework == "pytest" and s.parsed
    assert (s.passed, s.failed, s.errors, s.skipped) == (3, 3, 1, 1), output
    assert sorted(s.failing) == sorted(EXPECTED_FAILING)
    assert "assert 5 == 4" in s.failures  # add(2, 2) returned 5
    assert "RuntimeError: database unavailable" in s.failures
    assert "tests/test_calc.py:8: AssertionError" in s.failures
    assert len(s.failures) <= FAILURE_TOTAL_CHARS + 500
    assert "\x1b[" not in s.failures
    assert not s.ok


def test_real_pytest_collection_error_and_all_passing(tmp_path: Path) -> None:
    (tmp_path / "tests").mkdir()
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "tests" / "test_broken.py").write_text("import does_not_exist_anywhere\n")
    (tmp_path / "tests" / "test_ok.py").write_text("def test_a():\n    assert True\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    s = parse_test_output(proc.stdout)
    assert (s.passed, s.failed, s.errors) == (0, 0, 1)
    assert s.failing == ["tests/test_broken.py"]
    assert "ModuleNotFoundError" in s.failures
    assert any("error during collection" in n for n in s.notes)
    (tmp_path / "tests" / "test_broken.py").unlink()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    s = parse_test_output(proc.stdout)
    assert (s.passed, s.failed, s.errors, s.failing, s.failures) == (1, 0, 0, [], "") and s.ok


def test_real_unittest_output(tmp_path: Path) -> None:
    (tmp_path / "test_u.py").write_text(textwrap.dedent('''\
        import unittest
        class T(unittest.TestCase):
            def test_ok(self):
                self.assertEqual(1, 1)
            def test_fail(self):
                self.assertEqual(1, 2)
            def test_err(self):
                raise KeyError("k")
            @unittest.skip("x")
            def test_skip(self):
                pass
    '''))
    proc = subprocess.run([sys.executable, "-m", "unittest", "-v"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    s = parse_test_output(proc.stderr)
    assert s.framework == "unittest"
    assert (s.passed, s.failed, s.errors, s.skipped) == (1, 1, 1, 1)
    assert s.failing == ["test_u.T.test_err", "test_u.T.test_fail"]
    assert "KeyError: 'k'" in s.failures and "AssertionError: 1 != 2" in s.failures


UNITTEST = """\
.sEF.sFx
======================================================================
ERROR: test_err (test_u.T.test_err)
----------------------------------------------------------------------
Traceback (most recent call last):
  File "/tmp/tp/ut/tests/test_u.py", line 5, in test_err
    def test_err(self): raise ValueError("bad value")
                        ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
ValueError: bad value

======================================================================
FAIL: test_fail (test_u.T.test_fail)
----------------------------------------------------------------------
Traceback (most recent call last):
  File "/tmp/tp/ut/tests/test_u.py", line 4, in test_fail
    def test_fail(self): self.assertEqual(1, 2, "numbers differ")
                         ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
AssertionError: 1 != 2 : numbers differ

======================================================================
FAIL: test_sub (test_u.T.test_sub) (i=2)
----------------------------------------------------------------------
Traceback (most recent call last):
  File "/tmp/tp/ut/tests/test_u.py", line 13, in test_sub
    self.assertLess(i, 2)
AssertionError: 2 not less than 2

----------------------------------------------------------------------
Ran 8 tests in 0.001s

FAILED (failures=2, errors=1, skipped=2, expected failures=1)
"""


CARGO = """\
   Compiling rs v0.1.0 (/tmp/tp/rs)
    Finished `test` profile [unoptimized + debuginfo] target(s) in 0.19s
     Running unittests src/lib.rs (target/debug/deps/rs-a35a48c092d3f767)

running 4 tests
test tests::ign ... ignored
test tests::bad ... FAILED
test tests::ok ... ok
test tests::panics ... FAILED

failures:

---- tests::bad stdout ----

thread 'tests::bad' (31942) panicked at src/lib.rs:6:24:
assertion `left == right` failed: math is hard
  left: 3
 right: 4
note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace

---- tests::panics stdout ----

thread 'tests::panics' (31944) panicked at src/lib.rs:8:27:
boom


failures:
    tests::bad
    tests::panics

test result: FAILED. 1 passed; 2 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.00s

error: test failed, to rerun pass `--lib`
"""


CARGO_COMPILE = """\
   Compiling rs v0.1.0 (/tmp/tp/rs)
error[E0308]: mismatched types
 --> src/lib.rs:5:41
  |
5 |     #[test] fn ok() { assert_eq!(add(1, "x"), 3); }
  |                                  ---    ^^^ expected `i32`, found `&str`
  |                                  |
  |                                  arguments to this function are incorrect
  |
note: function defined here
 --> src/lib.rs:1:8
  |
1 | pub fn add(a: i32, b: i32) -> i32 { a + b }
  |        ^^^         ------

For more information about this error, try `rustc --explain E0308`.
error: could not compile `rs` (lib test) due to 1 previous error
"""


GO = """\
--- FAIL: TestAdd (0.00s)
    add_test.go:9: Add(1, 2) = 3; want 4
--- FAIL: TestTable (0.00s)
    --- FAIL: TestTable/negative (0.00s)
        add_test.go:20: got -1 want -2
FAIL
FAIL\texample.com/calc\t0.002s
ok  \texample.com/calc/util\t0.001s
?   \texample.com/calc/cmd\t[no test files]
# example.com/calc/broken [example.com/calc/broken.test]
broken/b_test.go:5:2: undefined: Foo
FAIL\texample.com/calc/broken [build failed]
FAIL
"""


JEST = """\
FAIL jt/sum.test.js
  ● math › fails

    expect(received).toBe(expected) // Object.is equality

    Expected: 4
    Received: 3

      1 | describe('math', () => {
      2 |   test('adds', () => { expect(1 + 2).toBe(3); });
    > 3 |   test('fails', () => { expect(1 + 2).toBe(4); });
        |                                       ^
      4 |   test.skip('later', () => {});
      5 | });
      6 | test('top level boom', () => { throw new Error('boom'); });

      at Object.toBe (jt/sum.test.js:3:39)

  ● top level boom

    boom

      4 |   test.skip('later', () => {});
      5 | });
    > 6 | test('top level boom', () => { throw new Error('boom'); });
        |                                      ^
      7 |

      at Object.<anonymous> (jt/sum.test.js:6:38)

PASS jt/ok.test.js

Test Suites: 1 failed, 1 passed, 2 total
Tests:       2 failed, 1 skipped, 2 passed, 5 total
Snapshots:   0 total
Time:        0.344 s, estimated 1 s
Ran all test suites matching jt.
"""


MOCHA = """\


  1) root boom
  Array
    ✔ indexOf works
    2) fails here
    - pending one


  1 passing (4ms)
  1 pending
  2 failing

  1) root boom:
     Error: root boom
      at Context.<anonymous> (mt/a.spec.js:7:37)
      at process.processImmediate (node:internal/timers:483:21)

  2) Array
       fails here:

      AssertionError [ERR_ASSERTION]: Expected values to be strictly equal:

2 !== 1

      + expected - actual

      -2
      +1
\x20\x20\x20\x20\x20\x20
      at Context.<anonymous> (mt/a.spec.js:4:41)
      at process.processImmediate (node:internal/timers:483:21)



"""


NODETAP = """\
TAP version 13
# Subtest: adds
ok 1 - adds
  ---
  duration_ms: 1.059914
  ...
# Subtest: fails
not ok 2 - fails
  ---
  duration_ms: 1.107344
  location: '/tmp/tp/nt/test/a.test.js:4:1'
  failureType: 'testCodeFailure'
  error: |-
    Expected values to be strictly equal:
\x20\x20\x20\x20
    2 !== 3
\x20\x20\x20\x20
  code: 'ERR_ASSERTION'
  name: 'AssertionError'
  expected: 3
  actual: 2
  operator: 'strictEqual'
  stack: |-
    TestContext.<anonymous> (/tmp/tp/nt/test/a.test.js:4:30)
    Test.runInAsyncScope (node:async_hooks:206:9)
    Test.run (node:internal/test_runner/test:796:25)
    Test.processPendingSubtests (node:internal/test_runner/test:526:18)
    Test.postRun (node:internal/test_runner/test:889:19)
    Test.run (node:internal/test_runner/test:835:12)
    async Test.processPendingSubtests (node:internal/test_runner/test:526:7)
  ...
# Subtest: skipped
ok 3 - skipped # SKIP
  ---
  duration_ms: 0.106088
  ...
# Subtest: group
    # Subtest: inner fails
    not ok 1 - inner fails
      ---
      duration_ms: 0.218424
      location: '/tmp/tp/nt/test/a.test.js:6:37'
      failureType: 'testCodeFailure'
      error: 'inner boom'
      code: 'ERR_TEST_FAILURE'
      stack: |-
        TestContext.<anonymous> (/tmp/tp/nt/test/a.test.js:6:69)
        Test.runInAsyncScope (node:async_hooks:206:9)
        Test.run (node:internal/test_runner/test:796:25)
        Test.start (node:internal/test_runner/test:702:17)
        node:internal/test_runner/test:1133:71
        node:internal/per_context/primordials:482:82
        new Promise (<anonymous>)
        new SafePromise (node:internal/per_context/primordials:450:29)
        node:internal/per_context/primordials:482:9
        Array.map (<anonymous>)
      ...
    1..1
not ok 4 - group
  ---
  duration_ms: 0.435236
  type: 'suite'
  location: '/tmp/tp/nt/test/a.test.js:6:6'
  failureType: 'subtestsFailed'
  error: '1 subtest failed'
  code: 'ERR_TEST_FAILURE'
  ...
1..4
# tests 4
# suites 1
# pass 1
# fail 2
# cancelled 0
# skipped 1
# todo 0
# duration_ms 115.830633
"""


NODESPEC = """\
✔ adds (0.954908ms)
✖ fails (1.12517ms)
  AssertionError [ERR_ASSERTION]: Expected values to be strictly equal:
\x20\x20
  2 !== 3
\x20\x20
      at TestContext.<anonymous> (/tmp/tp/nt/test/a.test.js:4:30)
      at Test.runInAsyncScope (node:async_hooks:206:9)
      at Test.run (node:internal/test_runner/test:796:25)
      at Test.processPendingSubtests (node:internal/test_runner/test:526:18)
      at Test.postRun (node:internal/test_runner/test:889:19)
      at Test.run (node:internal/test_runner/test:835:12)
      at async Test.processPendingSubtests (node:internal/test_runner/test:526:7) {
    generatedMessage: true,
    code: 'ERR_ASSERTION',
    actual: 2,
    expected: 3,
    operator: 'strictEqual'
  }

﹣ skipped (0.109383ms) # SKIP
▶ group
  ✖ inner fails (0.129973ms)
    Error: inner boom
        at TestContext.<anonymous> (/tmp/tp/nt/test/a.test.js:6:69)
        at Test.runInAsyncScope (node:async_hooks:206:9)
        at Test.run (node:internal/test_runner/test:796:25)
        at Test.start (node:internal/test_runner/test:702:17)
        at node:internal/test_runner/test:1133:71
        at node:internal/per_context/primordials:482:82
        at new Promise (<anonymous>)
        at new SafePromise (node:internal/per_context/primordials:450:29)
        at node:internal/per_context/primordials:482:9
        at Array.map (<anonymous>)

✖ group (0.335408ms)
ℹ tests 4
ℹ suites 1
ℹ pass 1
ℹ fail 2
ℹ cancelled 0
ℹ skipped 1
ℹ todo 0
ℹ duration_ms 105.753592

✖ failing tests:

test at test/a.test.js:4:1
✖ fails (1.12517ms)
  AssertionError [ERR_ASSERTION]: Expected values to be strictly equal:
\x20\x20
  2 !== 3
\x20\x20
      at TestContext.<anonymous> (/tmp/tp/nt/test/a.test.js:4:30)
      at Test.runInAsyncScope (node:async_hooks:206:9)
      at Test.run (node:internal/test_runner/test:796:25)
      at Test.processPendingSubtests (node:internal/test_runner/test:526:18)
      at Test.postRun (node:internal/test_runner/test:889:19)
      at Test.run (node:internal/test_runner/test:835:12)
      at async Test.processPendingSubtests (node:internal/test_runner/test:526:7) {
    generatedMessage: true,
    code: 'ERR_ASSERTION',
    actual: 2,
    expected: 3,
    operator: 'strictEqual'
  }

test at test/a.test.js:6:37
✖ inner fails (0.129973ms)
  Error: inner boom
      at TestContext.<anonymous> (/tmp/tp/nt/test/a.test.js:6:69)
      at Test.runInAsyncScope (node:async_hooks:206:9)
      at Test.run (node:internal/test_runner/test:796:25)
      at Test.start (node:internal/test_runner/test:702:17)
      at node:internal/test_runner/test:1133:71
      at node:internal/per_context/primordials:482:82
      at new Promise (<anonymous>)
      at new SafePromise (node:internal/per_context/primordials:450:29)
      at node:internal/per_context/primordials:482:9
      at Array.map (<anonymous>)
"""


def test_unittest_sample() -> None:
    s = parse_test_output(UNITTEST)
    assert (s.framework, s.passed, s.failed, s.errors, s.skipped) == ("unittest", 2, 2, 1, 2)
    assert s.failing == ["test_u.T.test_err", "test_u.T.test_fail", "test_u.T.test_sub (i=2)"]
    assert "AssertionError: 2 not less than 2" in s.failures
    assert s.notes == ["1 expected failures"]


def test_cargo_samples() -> None:
    s = parse_test_output(CARGO)
    assert (s.framework, s.passed, s.failed, s.errors, s.skipped) == ("cargo", 1, 2, 0, 1)
    assert s.failing == ["tests::bad", "tests::panics"]
    assert "math is hard" in s.failures and "boom" in s.failures
    s = parse_test_output(CARGO_COMPILE)
    assert (s.framework, s.errors, s.notes) == ("cargo", 1, ["compilation failed"])
    assert "error[E0308]: mismatched types" in s.failures and "expected `i32`, found `&str`" in s.failures


def test_go_sample() -> None:
    s = parse_test_output(GO)
    assert (s.framework, s.passed, s.failed, s.errors) == ("go", None, 2, 1)
    assert s.failing == ["TestAdd", "TestTable/negative", "example.com/calc/broken"]
    assert "Add(1, 2) = 3; want 4" in s.failures and "undefined: Foo" in s.failures
    assert "passed, 2 failed" in s.counts() and s.counts().startswith("? passed")
    verbose = "=== RUN   TestA\n--- PASS: TestA (0.00s)\n=== RUN   TestB\n--- SKIP: TestB (0.00s)\nPASS\nok  \tm\t0.1s\n"
    s = parse_test_output(verbose)
    assert (s.passed, s.failed, s.skipped) == (1, 0, 1) and s.ok


def test_js_samples() -> None:
    s = parse_test_output(JEST)
    assert (s.framework, s.passed, s.failed, s.errors, s.skipped) == ("jest", 2, 2, 0, 1)
    assert s.failing == ["math › fails", "top level boom"]
    assert "Expected: 4" in s.failures and "Received: 3" in s.failures
    s = parse_test_output(MOCHA)
    assert (s.framework, s.passed, s.failed, s.skipped) == ("mocha", 1, 2, 1)
    assert s.failing == ["root boom", "Array fails here"]
    assert "2 !== 1" in s.failures
    for sample in (NODETAP, NODESPEC):
        s = parse_test_output(sample)
        assert (s.framework, s.passed, s.failed, s.skipped) == ("node:test", 1, 2, 1)
        assert s.failing[0] == "fails" and s.failing[1].endswith("inner fails") and len(s.failing) == 2
        assert "2 !== 3" in s.failures and "inner boom" in s.failures


def test_npm_and_make_wrappers_and_unknown_output() -> None:
    wrapped = "\n> demo@1.0.0 test\n> jest\n\n" + JEST + "make: *** [Makefile:2: test] Error 1\n"
    s = parse_test_output(wrapped)
    assert s.framework == "jest" and "make reported an error" in s.notes
    s = parse_test_output("segmentation fault\n")
    assert not s.parsed and s.framework == "unknown" and s.passed is None and not s.ok


def test_trimming_bounds_each_failure_and_the_total() -> None:
    block = [f"line {i}" for i in range(500)]
    trimmed = trim_block(block)
    assert trimmed.startswith("line 0\n") and trimmed.endswith("line 499") and "lines cut" in trimmed
    assert strip_ansi("\x1b[31mred\x1b[0m\r\n") == "red\n"
    many = "\n".join(
        f"{'_' * 10} test_{i} {'_' * 10}\n" + "\n".join(f"E   detail {j} " + "x" * 80 for j in range(60))
        for i in range(40))
    output = f"{'=' * 10} FAILURES {'=' * 10}\n{many}\n{'=' * 10} 40 failed in 1.00s {'=' * 10}\n"
    s = parse_test_output(output)
    assert s.failed == 40
    assert len(s.failures) < FAILURE_TOTAL_CHARS + 4000 and "more failures not shown" in s.failures
