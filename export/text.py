"""The character-level language model's text: Python's own standard library source.

Nothing is downloaded: the files are read from the running interpreter's standard
library folder (``sysconfig``'s ``stdlib`` path). The selection is a fixed list of
modules, split into train and held-out parts by file, so that no line of a held-out file
is ever trained on. The text differs a little between Python versions; the manifest
records the version and the character counts.

The vocabulary is one token per character: the 95 printable ASCII characters, newline
and tab, then an unknown token (any other character, shown as U+FFFD) and an end token
(between files, and what a new sequence starts from).
"""

from __future__ import annotations

import platform
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from aimass.export.errors import ExportError

CHARACTERS = [chr(code) for code in range(32, 127)] + ["\n", "\t"]
UNKNOWN_TEXT = "\ufffd"  # the Unicode replacement character: what the unknown token writes
END_TEXT = ""  # the end token writes nothing
VOCABULARY = [*CHARACTERS, UNKNOWN_TEXT, END_TEXT]
UNKNOWN_TOKEN = len(CHARACTERS)
END_TOKEN = len(CHARACTERS) + 1

# Modules whose source trains the model (paths under the stdlib folder, without ".py").
TRAIN_MODULES = (
    "argparse",
    "ast",
    "base64",
    "cmd",
    "code",
    "configparser",
    "contextlib",
    "copy",
    "csv",
    "dataclasses",
    "difflib",
    "dis",
    "enum",
    "functools",
    "inspect",
    "json/decoder",
    "logging/__init__",
    "optparse",
    "os",
    "pickle",
    "pprint",
    "random",
    "shutil",
    "string",
    "subprocess",
    "tarfile",
    "tempfile",
    "threading",
    "tokenize",
    "traceback",
    "typing",
    "warnings",
)
# Modules held out: the loss is measured on them only.
HELD_OUT_MODULES = ("calendar", "fractions", "queue", "shlex", "textwrap")
TEXT_DESCRIPTION = (
    "Python {version} standard library source: {train} modules ({train_chars:,} characters) "
    "to train, {held_out} held out by file ({held_out_chars:,} characters): "
    "aimass.export.text"
)


@dataclass(frozen=True)
class TextSplit:
    """Token ids of the train and held-out files, each file followed by the end token."""

    train: NDArray[np.int32]
    held_out: NDArray[np.int32]

    def description(self) -> str:
        return TEXT_DESCRIPTION.format(
            version=platform.python_version(),
            train=len(TRAIN_MODULES),
            train_chars=len(self.train),
            held_out=len(HELD_OUT_MODULES),
            held_out_chars=len(self.held_out),
        )


def load_text_split() -> TextSplit:
    return TextSplit(_read_modules(TRAIN_MODULES), _read_modules(HELD_OUT_MODULES))


def encode(text: str) -> NDArray[np.int32]:
    """Each character's token id; a character outside the vocabulary is the unknown token."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    table = np.full(128, UNKNOWN_TOKEN, dtype=np.int32)
    table[[ord(character) for character in CHARACTERS]] = np.arange(len(CHARACTERS))
    return np.where(codes < 128, table[np.minimum(codes, 127)], UNKNOWN_TOKEN).astype(np.int32)


def decode(tokens: NDArray[np.integer] | list[int]) -> str:
    return "".join(VOCABULARY[int(token)] for token in tokens)


def stdlib_folder() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _read_modules(modules: tuple[str, ...]) -> NDArray[np.int32]:
    """The modules' source, in order, each file followed by the end token."""
    folder = stdlib_folder()
    parts = []
    for module in modules:
        path = folder / f"{module}.py"
        try:
            source = path.read_text(encoding="utf-8")
        except OSError as error:
            raise ExportError(
                f"could not read the standard library's {module}.py ({error}): charlm trains "
                "on the interpreter's own source files; expected a Python installation that "
                "ships them (not only .pyc files)"
            ) from error
        parts += [encode(source), np.array([END_TOKEN], dtype=np.int32)]
    return np.concatenate(parts)
