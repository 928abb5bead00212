"""Only transport modules import asyncio, bleak, Bumble or trio-asyncio."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ASYNCIO_WORLD = {"asyncio", "bleak", "bumble", "trio_asyncio"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", ["bridge", "pairing", "tools"])
def test_only_transports_touch_asyncio(package: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imports(path) & ASYNCIO_WORLD)
        for path in (ROOT / package).rglob("*.py")
        if _imports(path) & ASYNCIO_WORLD
    }
    assert offenders == {}
