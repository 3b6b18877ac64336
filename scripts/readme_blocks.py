"""Print the shell blocks of README.md marked for a test, in order, as one script.

    python scripts/readme_blocks.py [README] [--marker quickstart]

A block is marked by an HTML comment ``<!-- quickstart -->`` on the line before its opening
fence, so that the README shows the commands exactly as they run.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

DEFAULT_README = Path(__file__).resolve().parents[1] / "README.md"


def marked_blocks(text: str, marker: str) -> Iterator[str]:
    """The content of each fenced block whose opening fence follows ``<!-- marker -->``."""
    lines = iter(text.splitlines())
    comment = f"<!-- {marker} -->"
    for line in lines:
        if line.strip() != comment:
            continue
        fence = next(lines, "").strip()
        if not fence.startswith("```"):
            raise ValueError(f"{comment} is not followed by a fenced block")
        body = []
        for inner in lines:
            if inner.strip() == "```":
                break
            body.append(inner)
        else:
            raise ValueError(f"a block after {comment} is never closed")
        yield "\n".join(body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("readme", nargs="?", type=Path, default=DEFAULT_README)
    parser.add_argument("--marker", default="quickstart")
    args = parser.parse_args(argv)
    blocks = list(marked_blocks(args.readme.read_text(encoding="utf-8"), args.marker))
    if not blocks:
        print(f"{args.readme}: no block marked <!-- {args.marker} -->", file=sys.stderr)
        return 1
    print("\n\n".join(blocks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
