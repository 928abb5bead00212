"""The asyncio side of the process, for the transports that need one (bleak, Bumble).

``async with asyncio_loop():`` opens trio-asyncio's loop inside the running trio loop: it
uses trio's clock (virtual time under ``MockClock``) and runs on trio's thread, so the
bleak and Bumble callbacks may feed trio channels directly. Code outside ``transports/``
uses this instead of importing asyncio or trio-asyncio itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio_asyncio


@asynccontextmanager
async def asyncio_loop() -> AsyncIterator[None]:
    async with trio_asyncio.open_loop():
        yield
