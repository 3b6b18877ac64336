"""Fail when a JUnit report shows a skipped test: every test collected is meant to run."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET


def main(path: str) -> int:
    root = ET.parse(path).getroot()  # noqa: S314 - pytest's own report, written just now
    skipped = [
        f"{case.get('classname')}::{case.get('name')}: {skip.get('message', '')}"
        for case in root.iter("testcase")
        for skip in case.findall("skipped")
    ]
    ran = sum(1 for _ in root.iter("testcase"))
    if ran == 0:
        print("no test ran", file=sys.stderr)
        return 1
    if skipped:
        print(f"{len(skipped)} test(s) skipped that should have run:", file=sys.stderr)
        print("\n".join(skipped), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
