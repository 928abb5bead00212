"""``python -m tools.bench``: goodput and pause latency (tools/bench/link.py)."""

import sys

from tools.bench.link import main

if __name__ == "__main__":
    sys.exit(main())
