"""The scripted session behind `kimi-code demo`, and the tool that records it.

    python tests/demo_recording.py [--image IMAGE] [--out agent/demo-data/recording.jsonl]

runs the script below as a real session (the real CLI, the Docker sandbox, the fake Kimi server
serving these turns) on a fresh copy of the sample repository, checks that it ended with the
sample's tests passing, and exports it as the demo's recording. Regenerate the recording whenever
the script, the sample or a tool's output changes; tests/test_demo.py fails until you do.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from kimi_code.agent import demo
from kimi_code.agent.fake_kimi import FakeKimi, ToolCallSpec, Turn

KEY = "sk-demo-recording-0000000000"


def _call(name: str, **args: object) -> ToolCallSpec:
    return ToolCallSpec(name, args)


def scripted_turns() -> list[Turn]:
    todo = [{"id": "1", "content": "Reproduce the failures with the project's tests", "status": "in_progress"},
            {"id": "2", "content": "Fix tokenize() (case, punctuation, any whitespace)", "status": "pending"},
            {"id": "3", "content": "Run the whole suite and try the command line", "status": "pending"}]

    def progress(*states: str) -> list[dict[str, str]]:
        return [{**item, "status": s} for item, s in zip(todo, states)]

    return [
        Turn(reasoning="The report: \"Hello,\" and \"hello\" are counted as different words, and words across a "
                       "line break are glued together. That smells like a tokenizer that splits on spaces only "
                       "and does not normalise case or strip punctuation. First the layout and the notes for "
                       "agents, which may say how to run the tests.",
             content="Let me look at the project first.",
             tool_calls=[_call("list_files", path="."), _call("read_file", path="AGENTS.md")]),
        Turn(reasoning="AGENTS.md gives the test command and says: standard library only. The counting lives "
                       "in tally/words.py; read it together with its tests.",
             tool_calls=[_call("read_file", path="tally/words.py"), _call("read_file", path="tests/test_words.py")]),
        Turn(reasoning="tokenize() is text.split(\" \"): it keeps case and punctuation, and a newline or tab "
                       "never separates words. The tests expect lower-cased words without punctuation, split on "
                       "any whitespace, with apostrophes kept inside words (don't). Plan, then reproduce.",
             tool_calls=[_call("todo", items=todo)]),
        Turn(reasoning="Run the suite with the documented command to see the failures before changing anything.",
             tool_calls=[_call("run_tests")]),
        Turn(reasoning="Four failures, all through tokenize(); top_words() only counts what tokenize() returns. "
                       "Before changing its behaviour, check who else calls it.",
             content="Four tests fail, all in tokenize(). Checking its callers before I change it.",
             tool_calls=[_call("search", pattern=r"tokenize\(")]),
        Turn(reasoning="Only top_words() and the package export use it, so the fix stays local. A regular "
                       "expression over the lower-cased text: runs of letters and digits, optionally joined "
                       "by single apostrophes: [a-z0-9]+(?:'[a-z0-9]+)*. That drops the comma in \"Hello,\", "
                       "splits on newlines and tabs, and keeps \"don't\" whole. re is in the standard library.",
             tool_calls=[
                 _call("todo", items=progress("done", "in_progress", "pending")),
                 _call("edit_file", path="tally/words.py", old_string="from collections import Counter\n",
                       new_string="import re\nfrom collections import Counter\n\n"
                                  "# A word: letters and digits, possibly joined by apostrophes (don't).\n"
                                  "_WORD = re.compile(r\"[a-z0-9]+(?:'[a-z0-9]+)*\")\n"),
                 _call("edit_file", path="tally/words.py",
                       old_string="    return [word for word in text.split(\" \") if word]\n",
                       new_string="    return _WORD.findall(text.lower())\n"),
             ]),
        Turn(reasoning="Run the whole suite again.", tool_calls=[
            _call("todo", items=progress("done", "done", "in_progress")), _call("run_tests")]),
        Turn(reasoning="All five pass. Try the command line on text like the report's, to see the fix end to end.",
             tool_calls=[_call("shell", command="printf 'Hello, hello!\\nHELLO. world\\n' | python3 -m tally /dev/stdin")]),
        Turn(reasoning="\"hello\" 3 times and \"world\" once, as the README promises. Done.",
             tool_calls=[_call("todo", items=progress("done", "done", "done"))]),
        Turn(reasoning="Summarise for the user.", tool_calls=[_call(
            "finish", status="success",
            summary="tokenize() split on spaces only and kept case and punctuation, so \"Hello,\" and \"hello\" "
                    "were different words and words across line breaks were glued together. It now lower-cases "
                    "the text and takes runs of letters and digits (apostrophes allowed inside a word) with a "
                    "regular expression. All 5 tests pass.")]),
    ]


def record(image: str, out: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="kimi-code-demo-recording-") as tmp:
        repo = demo.prepare_repo(Path(tmp) / "tally")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MOONSHOT_", "KIMI_API", "KIMI_CODE_"))}
        (Path(tmp) / "empty-config.toml").write_text("")  # a KIMI_CODE_CONFIG naming a missing file is an error
        env.update({"MOONSHOT_API_KEY": KEY, "KIMI_CODE_STATE_DIR": str(Path(tmp) / "state"),
                    "KIMI_CODE_CONFIG": str(Path(tmp) / "empty-config.toml")})
        cli = [sys.executable, "-m", "kimi_code.agent.cli"]
        with FakeKimi(scripted_turns(), api_key=KEY) as fake:
            proc = subprocess.run([*cli, "run", "--repo", str(repo), "--base-url", fake.base_url, "--output", "json",
                                   "--sandbox", "docker", "--image", image, demo.TASK],
                                  env=env, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise SystemExit(f"the scripted session failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        summary = json.loads(proc.stdout)
        if summary["last_tests"]["failed"] or summary["steps"] != len(scripted_turns()):
            raise SystemExit(f"the scripted session did not fix the sample: {summary}")
        exported = subprocess.run([*cli, "export", summary["session_id"], "-o", str(out)], env=env,
                                  capture_output=True, text=True, timeout=120)
        if exported.returncode != 0:
            raise SystemExit(exported.stderr)
        return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", default=os.environ.get("KIMI_CODE_TEST_IMAGE", "kimi-code-sandbox:offline"))
    parser.add_argument("--out", type=Path, default=demo.RECORDING)
    args = parser.parse_args()
    summary = record(args.image, args.out)
    print(f"recorded {summary['steps']} steps, tests {summary['last_tests']['passed']} passed -> {args.out}")


if __name__ == "__main__":
    main()
