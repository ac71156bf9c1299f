"""Helpers for the export tests: the command handlers, called as the console script would."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import pytest

from aimass.export.cli import register

Aimass = Callable[..., int]


def run_aimass(*argv: str) -> int:
    """Parse ``argv`` with the export commands registered and run the chosen handler."""
    parser = argparse.ArgumentParser(prog="aimass")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.handler(args))


@pytest.fixture(scope="session")
def aimass() -> Aimass:
    return run_aimass
