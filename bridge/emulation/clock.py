"""Virtual time for the demos and the soak: trio's autojumping MockClock, taken from
where trio defines it rather than from ``trio.testing``, whose import also loads pytest
where it is installed (about 0.1 s of ``bridge demo``'s start, and 8 MB). trio is pinned
(pyproject.toml); ``tests/test_demo.py`` checks that this still holds."""

from __future__ import annotations

import trio
from trio._core._mock_clock import MockClock


def virtual_clock() -> trio.abc.Clock:
    """A clock that jumps to the next deadline whenever every task is waiting."""
    return MockClock(autojump_threshold=0)
