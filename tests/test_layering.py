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


# -- rooms and arrows (docs/ARCHITECTURE.md) ------------------------------------------------

PROJECT = ("bridge", "pairing", "transports", "tools", "tests")


def _project_imports(path: Path) -> set[str]:
    """The project modules a file imports, as dotted names (``from a import b`` counts
    as ``a.b`` when that is a module, else ``a``)."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                found.add(name if _module_path(name) is not None else node.module)
    return {n for n in found if n.split(".")[0] in PROJECT}


def _module_path(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def _room(module: str) -> str:
    """bridge.wire, bridge.emulation and bridge.cli are rooms of their own; else the
    top-level package."""
    parts = module.split(".")
    if parts[0] == "bridge" and len(parts) > 1 and parts[1] in ("wire", "emulation", "cli"):
        return f"bridge.{parts[1]}"
    return parts[0]


def _modules(package: str) -> dict[str, Path]:
    out = {}
    for path in ROOT.joinpath(*package.split(".")).rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _arrows(extra: dict[str, Path] | None = None) -> dict[str, set[str]]:
    """Room -> the rooms it imports; ``extra``: more modules (name -> file) to count."""
    modules = {
        m: p
        for pkg in ("bridge", "pairing", "transports", "tools")
        for m, p in _modules(pkg).items()
    }
    graph: dict[str, set[str]] = {}
    for module, path in {**modules, **(extra or {})}.items():
        for target in _project_imports(path):
            if _room(target) != _room(module):
                graph.setdefault(_room(module), set()).add(_room(target))
    return graph


# what each room may import of the project (nothing else, and never upward)
ALLOWED = {
    "bridge.wire": set(),
    "pairing": {"bridge.wire"},
    "transports": {"bridge.wire"},
    "bridge": {"bridge.wire", "pairing", "transports"},
    "bridge.emulation": {"bridge", "bridge.wire", "pairing", "transports"},
    "bridge.cli": {"bridge", "bridge.wire", "bridge.emulation", "pairing", "transports"},
}


@pytest.mark.parametrize("room", sorted(ALLOWED))
def test_each_room_imports_only_the_rooms_below_it(room: str) -> None:
    assert _arrows().get(room, set()) - ALLOWED[room] == set()


def test_the_wire_core_imports_only_the_standard_library_and_cbor2() -> None:
    allowed = {"cbor2", "bridge"} | set(__import__("sys").stdlib_module_names)
    offenders = {
        module: sorted(_imports(path) - allowed)
        for module, path in _modules("bridge.wire").items()
        if _imports(path) - allowed
    }
    assert offenders == {}


def test_no_cycles_between_rooms() -> None:
    graph = _arrows()

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, set()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    assert [room for room in graph if reaches(room, room, {room})] == []


def test_the_rules_catch_an_arrow_pointing_up(tmp_path: Path) -> None:
    """The check itself: a wire module importing the head unit is seen."""
    probe = tmp_path / "probe.py"
    probe.write_text("from bridge import session\n")
    assert "bridge" in _arrows({"bridge.wire.probe": probe})["bridge.wire"]
    assert "bridge" not in _arrows().get("bridge.wire", set())
