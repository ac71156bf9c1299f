"""Print the third-party requirements of some of pyproject.toml's extras, one a line.

The images install dependencies from pyproject.toml alone before the source is
copied in, so that editing code does not re-download onnxruntime-gpu or TensorFlow.
Extras that name the project itself (``aimass[producer]``) are expanded, and an
environment marker on such a reference is carried onto what it expands to.

Usage: python pyproject_requirements.py [--pyproject PATH] EXTRA [EXTRA ...]
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

# name, optional [extras], version specifiers, optional "; marker"
_REQUIREMENT = re.compile(
    r"^\s*(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[(?P<extras>[^\]]*)\])?[^;]*"
    r"(?:;(?P<marker>.*))?$"
)


def normalize(name: str) -> str:
    """The PEP 503 form of a distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def and_markers(first: str | None, second: str | None) -> str | None:
    """Both environment markers (None stands for "always")."""
    if first and second:
        return f"({first}) and ({second})"
    return first or second


def with_marker(requirement: str, marker: str | None) -> str:
    """``requirement`` restricted further by ``marker``."""
    spec, _, own = requirement.partition(";")
    combined = and_markers(own.strip() or None, marker)
    return f"{spec.strip()}; {combined}" if combined else spec.strip()


def parse(line: str) -> re.Match[str]:
    match = _REQUIREMENT.match(line)
    if match is None:
        raise ValueError(f"cannot parse requirement {line!r} in pyproject.toml")
    return match


def requirements(project: dict[str, Any], extras: list[str]) -> list[str]:
    """The base dependencies plus those of ``extras``, self-references expanded."""
    dynamic = project.get("dynamic", [])
    if "dependencies" in dynamic or "optional-dependencies" in dynamic:
        raise ValueError("pyproject.toml declares dependencies as dynamic; list them statically")
    own_name = normalize(project["name"])
    optional = {normalize(k): v for k, v in project.get("optional-dependencies", {}).items()}
    result: list[str] = []
    seen: set[tuple[str, str | None]] = set()

    def add(lines: list[str], marker: str | None) -> None:
        for line in lines:
            match = parse(line)
            if normalize(match["name"]) != own_name:
                requirement = with_marker(line, marker)
                if requirement not in result:
                    result.append(requirement)
                continue
            self_marker = and_markers(marker, (match["marker"] or "").strip() or None)
            for extra in (match["extras"] or "").split(","):
                if extra.strip():
                    expand(extra.strip(), self_marker)

    def expand(extra: str, marker: str | None) -> None:
        key = (normalize(extra), marker)
        if key in seen or (key[0], None) in seen:  # the unrestricted expansion covers it
            return
        seen.add(key)
        if key[0] not in optional:
            raise ValueError(f"pyproject.toml has no extra {extra!r}; it has {sorted(optional)}")
        add(optional[key[0]], marker)

    add(project.get("dependencies", []), None)
    for extra in extras:
        expand(extra, None)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyproject", type=Path, default=Path("pyproject.toml"))
    parser.add_argument("extras", nargs="+")
    args = parser.parse_args(argv)
    with args.pyproject.open("rb") as file:
        project = tomllib.load(file)["project"]
    try:
        lines = requirements(project, args.extras)
    except ValueError as error:
        print(f"pyproject_requirements: {error}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
