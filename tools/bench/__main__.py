"""``python -m tools.bench``: every benchmark, then the goals (tools/bench/summary.py)."""

import sys

from tools.bench.summary import main

if __name__ == "__main__":
    sys.exit(main())
