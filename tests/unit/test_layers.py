"""Which room may import which (ARCHITECTURE.md): the domain imports nothing of the project
outside it; the engine imports only the domain; the ports only the domain; the service
and the dispatcher import neither the adapters nor HTTP; the adapters import no service;
HTTP does not import the adapters; only the bootstrap and the CLI choose adapters.
``scripts/test.sh`` runs this before the rest of the suite."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[2] / "geofence"
CHOOSE_ADAPTERS = ("adapters", "bootstrap", "cli")
RULES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # room: (the only rooms it may import, or () for any; the rooms it must not import)
    "domain": (("domain",), ()),
    "engine": (("domain", "engine"), ()),
    "ports": (("domain", "ports"), ()),
    "adapters": ((), ("service", "http", "bootstrap", "cli")),
    "service": ((), ("adapters", "http", "bootstrap", "cli", "console")),
    "delivery": ((), ("adapters", "http", "bootstrap", "cli")),
    "http": ((), ("adapters", "cli")),
}


def room_of(module: str) -> str:
    """``geofence.http.app`` -> ``http``; ``geofence`` itself -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def project_imports(room: str, package: Path = PACKAGE) -> dict[str, set[str]]:
    """Each module of ``geofence/<room>`` (a package, searched whole, or one module) with
    the geofence modules it imports, at any depth of the file."""
    root = package / room
    paths = sorted(root.rglob("*.py")) if root.is_dir() else [root.with_suffix(".py")]
    found: dict[str, set[str]] = {}
    for path in paths:
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
        relative = str(path.relative_to(package))
        found[relative] = {n for n in names if n == "geofence" or n.startswith("geofence.")}
    return found


def rooms() -> list[str]:
    """Every room of the package: its subpackages and its top-level modules."""
    entries = [p for p in PACKAGE.iterdir() if not p.name.startswith(("_", "."))]
    names = {p.stem for p in entries if p.is_dir() or p.suffix == ".py"}
    return sorted(n for n in names if n != "static")


def wrong_imports(room: str, package: Path = PACKAGE) -> list[str]:
    only, never = RULES.get(room, ((), ()))
    if room not in CHOOSE_ADAPTERS:
        never = (*never, "adapters")
    wrong = []
    for module, names in project_imports(room, package).items():
        for name in sorted(names):
            target = room_of(name)
            if (only and target not in only) or target in never:
                wrong.append(f"geofence/{module} imports {name}")
    return wrong


def test_every_room_with_a_rule_exists() -> None:
    assert set(RULES) | set(CHOOSE_ADAPTERS) <= set(rooms())


@pytest.mark.parametrize("room", rooms())
def test_a_room_imports_only_what_it_may(room: str) -> None:
    assert project_imports(room), f"no modules found in geofence/{room}"
    assert not wrong_imports(room)


@pytest.mark.parametrize(
    ("room", "source", "caught"),
    [
        ("http", "from geofence.adapters.redis import RedisStore", True),
        ("service", "import geofence.http.keys", True),
        ("engine", "from geofence.service import pings", True),
        ("delivery.py", "from geofence.adapters import memory", True),
        ("bootstrap.py", "from geofence.adapters import memory", False),
        ("http", "from geofence.service.pings import PingService", False),
    ],
)
def test_the_rules_catch_an_import_that_points_the_wrong_way(
    tmp_path: Path, room: str, source: str, *, caught: bool
) -> None:
    """The check itself can fail: a module importing what its room must not is found."""
    path = tmp_path / room if room.endswith(".py") else tmp_path / room / "module.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source + "\n", encoding="utf-8")
    assert bool(wrong_imports(room.removesuffix(".py"), tmp_path)) is caught
