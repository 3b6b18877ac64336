"""BENCHMARKS.md rewritten by the suite keeps the sections other benchmarks wrote."""

from __future__ import annotations

from pathlib import Path

from benchmarks.report import write_all, write_section

OLD = """# Benchmarks

## Targets

old targets

## A million fences

written by benchmarks.million

## Fence index

old index
"""


def test_the_whole_report_keeps_sections_it_does_not_write(tmp_path: Path) -> None:
    report = tmp_path / "BENCHMARKS.md"
    report.write_text(OLD)
    write_all(["## Targets\n\nnew targets\n", "## Fence index\n\nnew index\n"], report)
    text = report.read_text()
    assert text.startswith("# Benchmarks\n\n## Targets\n\nnew targets\n")
    assert "old" not in text
    assert text.index("## Fence index") < text.index("## A million fences")
    assert "written by benchmarks.million" in text
    assert text.count("## ") == 3


def test_one_section_is_replaced_in_place(tmp_path: Path) -> None:
    report = tmp_path / "BENCHMARKS.md"
    report.write_text(OLD)
    write_section("## A million fences\n\nfresh\n", report)
    text = report.read_text()
    assert "fresh" in text
    assert "written by" not in text
    assert text.index("## Targets") < text.index("## A million fences") < text.index("## Fence")
