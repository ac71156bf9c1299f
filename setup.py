"""Refuses to build a wheel without the wings.

``aimass/producer``, ``aimass/worker`` and ``aimass/export`` are links to the top-level
folders. A checkout where git wrote them as plain files (Windows without symlink support,
or ``core.symlinks=false``) would otherwise build a wheel without those packages, silently.
"""

from pathlib import Path

from setuptools import setup

WINGS = ("producer", "worker", "export")

here = Path(__file__).parent
missing = [wing for wing in WINGS if not (here / "aimass" / wing / "__init__.py").is_file()]
if missing:
    raise SystemExit(
        f"aimass/{missing[0]} is not a link to ../{missing[0]} (git wrote it as a plain file?):"
        " the package would install without "
        + ", ".join(f"aimass.{wing}" for wing in missing)
        + ". Check out with links: `git config core.symlinks true` (on Windows, with "
        "Developer Mode on), then `git checkout -- aimass`."
    )

setup()
