#!/usr/bin/env python3
"""Rewrite every process `container` to `name:tag@sha256:<digest>` after the images are pushed.

Usage: scripts/pin_containers.py digests.tsv   (lines: image-reference<TAB>sha256:<hex>)
The release workflow writes digests.tsv from `docker push` and commits the result.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONTAINER = re.compile(r"(^\s*container\s+')([^'@]+)(?:@sha256:[0-9a-f]{64})?(')", re.M)


def read_digests(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            image, digest = line.split("\t")
            if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest.strip()):
                raise SystemExit(f"{path}: '{digest}' is not a sha256 digest")
            out[image.strip()] = digest.strip()
    return out


def pin(text: str, digests: dict[str, str]) -> str:
    def repl(m: re.Match[str]) -> str:
        image = m.group(2)
        return f"{m.group(1)}{image}@{digests[image]}{m.group(3)}" if image in digests else m.group(0)

    return CONTAINER.sub(repl, text)


def main(argv: list[str]) -> int:
    digests = read_digests(Path(argv[0]))
    for nf in sorted((ROOT / "modules").glob("*.nf")):
        text = nf.read_text()
        new = pin(text, digests)
        if new != text:
            nf.write_text(new)
            print(f"pinned {nf.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
