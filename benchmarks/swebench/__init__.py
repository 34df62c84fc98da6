"""A SWE-bench-format task runner on top of ``kimi-code run``, with a model-free oracle mode.

Modules: records (task and result records), recipes (environment install table), environment
(environment images), repos (mirrors and checkouts), patches (diff parsing), oracle (the gold-patch
policy), grading (SWE-bench grading and pytest -rA parsing), containers (one-shot containers),
runner (per-task pipeline, workers), report (results JSONL and summary), cli.
"""
