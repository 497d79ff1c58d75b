"""Helpers for the Makefile's lock rules (standard library only; run with the venv's python).

    locktool.py diff OLD NEW        what changed between two pip-compile outputs (package: old → new)
    locktool.py overlay LOCK FLOOR  the pins of FLOOR that LOCK does not have: what the floor
                                    environment installs in front of the main one
    locktool.py hidden LOCK FLOOR   the import names of what LOCK has and FLOOR does not: what the
                                    floor environment must not see of the main one

Why the floor environment hides packages: it reuses the main virtualenv through a ``.pth``
file, and some packages there change how older releases behave on import (transformers
before 5.25 cannot be imported at all while ``kernels`` 0.19 is installed). Hiding what
the floor resolution does not contain makes it the install a user of the floor versions
has.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: str) -> dict[str, tuple[str, str]]:
    """canonical name → (name as written, version) for each ``name==version`` line."""
    found = {}
    if Path(path).exists():
        for line in Path(path).read_text().splitlines():
            m = PIN.match(line.strip())
            if m:
                found[canonical(m.group(1))] = (m.group(1), m.group(2))
    return found


def diff(old: str, new: str) -> list[str]:
    a, b = pins(old), pins(new)
    lines = []
    for key in sorted(set(a) | set(b)):
        if key not in a:
            lines.append(f"  {b[key][0]}: (new) → {b[key][1]}")
        elif key not in b:
            lines.append(f"  {a[key][0]}: {a[key][1]} → (removed)")
        elif a[key][1] != b[key][1]:
            lines.append(f"  {b[key][0]}: {a[key][1]} → {b[key][1]}")
    return lines


def overlay(lock: str, floor: str) -> list[str]:
    main = pins(lock)
    return [f"{name}=={version}" for key, (name, version) in sorted(pins(floor).items())
            if main.get(key, (None, None))[1] != version]


def hidden(lock: str, floor: str) -> list[str]:
    from importlib.metadata import packages_distributions

    gone = set(pins(lock)) - set(pins(floor))
    return sorted(module for module, dists in packages_distributions().items()
                  if dists and all(canonical(d) in gone for d in dists))


def main(argv: list[str]) -> int:
    command, *args = argv
    if command == "diff":
        lines = diff(*args)
        print("\n".join(lines) if lines else "  no changes")
    elif command == "overlay":
        print("\n".join(overlay(*args)))
    elif command == "hidden":
        print(" ".join(hidden(*args)))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
