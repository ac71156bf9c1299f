"""The ``aimass`` command: one entry point, with each package registering its commands.

Command modules import only the standard library and light modules of aimass (the contract,
``aimass.protocol``, among them) at module level, so ``aimass --help`` is quick and lists
every command whatever extras are installed.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = (
    "aimass.producer.commands",
    "aimass.worker.cli",
    "aimass.local",
    "aimass.export.cli",
    "aimass.bench.cli",
    "aimass.doctor",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aimass",
        description="Queue-based inference: TensorFlow models as ONNX, served by Celery "
        "workers on Redis.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    from aimass.protocol.settings import SettingsError

    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except SettingsError as exc:  # a bad setting: its one line says which and why
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
