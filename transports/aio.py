"""The asyncio side of the process, for the transports that need one (bleak, Bumble).

``async with asyncio_loop():`` opens trio-asyncio's loop inside the running trio loop: it
uses trio's clock (virtual time under ``MockClock``) and runs on trio's thread, so the
bleak and Bumble callbacks may feed trio channels directly. Code outside ``transports/``
uses this instead of importing asyncio or trio-asyncio itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio_asyncio


@asynccontextmanager
async def asyncio_loop() -> AsyncIterator[None]:
    async with trio_asyncio.open_loop():
        yield


def asyncio_task_stacks() -> list[str]:
    """Where every asyncio task of the running trio-asyncio loop is waiting (for a
    diagnostic dump of a hang; empty outside a loop)."""
    try:
        loop = trio_asyncio.current_loop.get()
    except LookupError:
        return []
    if loop is None:
        return []
    lines = []
    for task in asyncio.all_tasks(loop):
        frames = [f"{f.f_code.co_name}:{f.f_lineno}" for f in task.get_stack()]
        lines.append(f"asyncio {task.get_name()}: {' > '.join(frames) or '(not started)'}")
    return lines
