"""``python -m benchmarks.swebench``."""

from .cli import main

main()
