"""The version ranges pyproject.toml pins, for the tests that fence a library's internals."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

PYPROJECT = Path(__file__).parents[1] / "pyproject.toml"


def pinned(package: str) -> SpecifierSet:
    """The range of ``package`` among the project's dependencies."""
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    [pin] = [Requirement(r) for r in project["dependencies"] if Requirement(r).name == package]
    return pin.specifier
