"""python -m tools.conformance: bridge-conformance."""

import sys

from tools.conformance.cli import main

sys.exit(main())
