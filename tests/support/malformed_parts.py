"""What the malformed-input corpus is made of: bytes that lie about themselves (images
and arrays claiming sizes they do not hold), builders of job keyword arguments, and the
corpus itself (``Corpus``: cases, each a raw kombu envelope with the outcomes it may
get). The cases are in malformed_envelopes.py and malformed_jobs.py."""

from __future__ import annotations

import base64
import io
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from aimass.protocol.codecs import encode_image
from tests.support import raw_messages as raw
from tests.support.tiny_models import row_image

CLASSIFY, GENERATE = "aimass.classify", "aimass.generate"
TYPED = {"InvalidJob", "UnknownModel", "InvalidInput", "PayloadTooLarge"}
REFUSED = "refused"  # no id: no result, a log line, acknowledged


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG header that claims a huge image, followed by a few bytes of zlib data: a
    decompression bomb as a worker first sees one."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 4096))
        + chunk(b"IEND", b"")
    )


def jpeg_claiming(width: int, height: int) -> bytes:
    """A JPEG whose frame header (SOF0) claims a huge image."""
    real = jpeg_bytes(Image.new("L", (8, 8)))
    at = real.index(b"\xff\xc0")
    return real[: at + 5] + struct.pack(">HH", height, width) + real[at + 9 :]


def npy_claiming(shape: tuple[int, ...]) -> bytes:
    """An NPY header that claims a huge float32 array, with no data behind it."""
    header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape!r}, }}".encode()
    header += b" " * (63 - len(header) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


GOOD_PNG = encode_image(row_image(3))
GOOD_IMAGE = b64(GOOD_PNG)
GOOD_TENSOR = {
    "dtype": "float32",
    "shape": [8, 8, 1],
    "data": b64((row_image(3)[:, :, None] / 255.0).astype("<f4").tobytes()),
}


class Marker:
    """A pickle that creates a file when unpickled: proof that nobody unpickled it."""

    path = Path("/tmp/aimass-malformed-pickle-ran")

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.mkdir, (str(self.path),))


def tensor(
    dtype: Any = "float32",
    shape: Any = (8, 8, 1),
    data: Any = None,
    values: np.ndarray | None = None,
    **extra: Any,
) -> dict[str, Any]:
    if data is None:
        array = values if values is not None else np.zeros(shape, dtype=dtype)
        data = b64(np.ascontiguousarray(array).tobytes())
    return {
        "dtype": dtype,
        "shape": list(shape) if isinstance(shape, tuple) else shape,
        "data": data,
        **extra,
    }


MISSING = object()  # as a field's value: leave the field out
DEFAULT = object()


def classify(inputs: Any = DEFAULT, **fields: Any) -> dict[str, Any]:
    kwargs = {"model": "tiny", "inputs": [{"image": GOOD_IMAGE}]}
    if inputs is not DEFAULT:
        kwargs["inputs"] = inputs
    kwargs.update(fields)
    return {k: v for k, v in kwargs.items() if v is not MISSING}


def generate(**fields: Any) -> dict[str, Any]:
    kwargs = {"model": "tiny-gan", "count": 2, "labels": [1, 2], "seed": 5, **fields}
    return {k: v for k, v in kwargs.items() if v is not MISSING}


# -- the corpus -----------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    message: bytes
    job_id: str | None
    expect: tuple[str, ...]  # acceptable outcomes: a state, an exc_type, or REFUSED
    match: str = ""  # a regex the failure's message must match
    queue: str = "aimass.tiny"


class Corpus:
    def __init__(self) -> None:
        self.cases: list[Case] = []

    def job(
        self,
        name: str,
        kwargs: Any = None,
        expect: str | tuple[str, ...] = "SUCCESS",
        match: str = "",
        task: Any = CLASSIFY,
        job_id: Any = None,
        queue: str | None = None,
        **envelope: Any,
    ) -> None:
        job_id = raw.new_id() if job_id is None else job_id
        if queue is None:
            queue = "aimass.tiny-gan" if task == GENERATE else "aimass.tiny"
        message = raw.envelope(kwargs, task=task, job_id=job_id, queue=queue, **envelope)
        self.add(name, raw.encode(message), str(job_id), expect, match, queue)

    def add(
        self,
        name: str,
        message: bytes,
        job_id: str | None,
        expect: str | tuple[str, ...],
        match: str = "",
        queue: str = "aimass.tiny",
    ) -> None:
        expect = (expect,) if isinstance(expect, str) else expect
        self.cases.append(Case(name, message, job_id, expect, match, queue))

    def refused(self, name: str, message: bytes) -> None:
        self.add(name, message, None, REFUSED)
