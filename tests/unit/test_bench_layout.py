"""The benchmarks and the shared tools stand on their own: they import nothing from the
tests and name no private member of the ping service (its public ``stages`` seam is how
they time it)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from geofence.service.pings import PingService

ROOT = Path(__file__).resolve().parents[2]
SERVICE_PRIVATES = {n for n in vars(PingService) if n.startswith("_") and not n.endswith("__")}
SOURCES = sorted([*(ROOT / "benchmarks").glob("*.py"), *(ROOT / "tools").glob("*.py")])


def tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def imported(module: ast.Module) -> set[str]:
    """Every module ``module`` imports, by its full name."""
    names: set[str] = set()
    for node in ast.walk(module):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def names_of_service_privates(module: ast.Module) -> list[str]:
    """Every private name of :class:`PingService` ``module`` names, as an attribute or as
    a string (for getattr, setattr and the like)."""
    named = [
        node.attr if isinstance(node, ast.Attribute) else node.value
        for node in ast.walk(module)
        if isinstance(node, ast.Attribute)
        or (isinstance(node, ast.Constant) and isinstance(node.value, str))
    ]
    return [name for name in named if name in SERVICE_PRIVATES]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_nothing_from_the_tests(path: Path) -> None:
    from_tests = {m for m in imported(tree(path)) if m == "tests" or m.startswith("tests.")}
    assert not from_tests


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_names_no_private_of_the_ping_service(path: Path) -> None:
    assert names_of_service_privates(tree(path)) == []


def test_the_checks_find_what_they_look_for() -> None:
    """Both checks fire on the pattern they forbid."""
    module = ast.parse(
        "from tests.system.processes import SERVE\n"
        "import tests.conftest\n"
        "STAGES = {('service', '_outcome'): 'rules'}\n"
        "stored = await self._stored(refs, {})\n"
    )
    assert imported(module) == {"tests.system.processes", "tests.conftest"}
    assert sorted(names_of_service_privates(module)) == ["_outcome", "_stored"]
