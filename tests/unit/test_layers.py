"""Which room may import which: the domain imports nothing of the project outside it;
the engine imports only the domain (and itself)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[2] / "geofence"


def project_imports(room: str) -> dict[str, set[str]]:
    """Each module of ``geofence/<room>`` with the geofence modules it imports."""
    found: dict[str, set[str]] = {}
    for path in sorted((PACKAGE / room).glob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
        found[path.name] = {n for n in names if n == "geofence" or n.startswith("geofence.")}
    return found


@pytest.mark.parametrize(
    ("room", "allowed"),
    [("domain", ("geofence.domain",)), ("engine", ("geofence.domain", "geofence.engine"))],
)
def test_a_room_imports_only_what_it_may(room: str, allowed: tuple[str, ...]) -> None:
    found = project_imports(room)
    assert found, f"no modules found in geofence/{room}"
    for module, names in found.items():
        wrong = {n for n in names if not any(n == a or n.startswith(a + ".") for a in allowed)}
        assert not wrong, f"geofence/{room}/{module} imports {sorted(wrong)}"
