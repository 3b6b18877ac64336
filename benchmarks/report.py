"""BENCHMARKS.md: each benchmark rewrites its own ``## `` section and leaves the others."""

from __future__ import annotations

import re
from pathlib import Path

REPORT = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"


def write_section(text: str, report: Path = REPORT) -> None:
    """Replace the section whose heading opens ``text`` (or append it)."""
    heading = text.splitlines()[0]
    old = report.read_text() if report.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.DOTALL | re.MULTILINE)
    body = text.rstrip("\n") + "\n\n"
    new = (
        pattern.sub(lambda _: body, old)
        if pattern.search(old)
        else old.rstrip("\n") + "\n\n" + body
    )
    report.write_text(new.rstrip("\n") + "\n")


def sections_of(text: str) -> dict[str, str]:
    """The ``## `` sections of a report by heading, each with its body."""
    parts = re.split(r"^(?=## )", text, flags=re.MULTILINE)
    return {p.splitlines()[0]: p for p in parts if p.startswith("## ")}


def write_all(sections: list[str], report: Path = REPORT) -> None:
    """The report made of ``sections``, in the order given; the sections of the old
    report that none of them replaces (written by other benchmarks) kept after them."""
    old = sections_of(report.read_text()) if report.exists() else {}
    new = {text.splitlines()[0] for text in sections}
    kept = [body for heading, body in old.items() if heading not in new]
    body = "\n".join(text.rstrip("\n") + "\n" for text in [*sections, *kept])
    report.write_text("# Benchmarks\n\n" + body)
