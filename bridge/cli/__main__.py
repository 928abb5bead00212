"""python -m bridge.cli: the bridge command."""

import sys

from bridge.cli import main

sys.exit(main())
