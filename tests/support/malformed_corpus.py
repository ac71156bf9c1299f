"""The malformed-input corpus: raw kombu envelopes of bad jobs (and good ones among
them), each with the outcome it must get. Used by tests/integration/test_malformed.py."""

from __future__ import annotations

import base64
import io
import json
import os
import pickle
import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
from PIL import Image

from aimass.protocol.codecs import array_to_npy, encode_image
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


def envelope_cases(c: Corpus) -> None:
    for name, message in [
        ("empty", b""),
        ("garbage", b"garbage"),
        ("binary", b"\xff\xfe\x00\x01"),
        ("open brace", b"{"),
        ("truncated json", b'{"body": "x", "headers": {"id": "a'),
        ("null", b"null"),
        ("number", b"42"),
        ("string", b'"a string"'),
        ("array", b"[]"),
        ("array of numbers", b"[1, 2, 3]"),
        ("true", b"true"),
        ("empty object", b"{}"),
        ("headers a list", b'{"headers": [], "body": ""}'),
        ("headers a string", b'{"headers": "x", "properties": 5}'),
        ("no id anywhere", b'{"headers": {"task": "aimass.classify"}, "body": ""}'),
        (
            "id null",
            raw.encode(raw.envelope(classify(), job_id="", properties={"correlation_id": None})),
        ),
        ("nested array", b"[" * 50 + b"]" * 50),
        ("utf-16", json.dumps({"headers": {"id": "x"}}).encode("utf-16")),
    ]:
        c.refused(name, message)
    c.job(
        "no task header",
        classify(),
        "InvalidJob",
        "no 'task' header.*protocol 2",
        headers={"task": None},
    )
    c.job("empty task", classify(), "InvalidJob", "no 'task' header", task="")
    for task in ("celery.ping", "aimass.train", "aimass.classify ", "AIMASS.CLASSIFY", 123):
        c.job(
            f"task {task!r}",
            classify(),
            "InvalidJob",
            "unknown task.*aimass.classify, aimass.generate, aimass.infer",
            task=task,
        )
    pickled = pickle.dumps([[], classify(), {}, Marker()])
    for content_type in ("application/x-python-serialize", "application/x-pickle"):
        c.job(
            f"pickle as {content_type}",
            body=pickled,
            content_type=content_type,
            expect="InvalidJob",
            match="refused.*pickle is never accepted",
        )
    for content_type in (
        "application/x-yaml",
        "text/plain",
        "application/data",
        "",
        None,
        5,
        "application/jsonx",
    ):
        c.job(
            f"content type {content_type!r}",
            classify(),
            "InvalidJob",
            "content type .* is refused; send application/json",
            content_type=content_type,
        )
    for content_type in ("application/json; charset=utf-8", "APPLICATION/JSON"):
        c.job(f"content type {content_type!r}", classify(), content_type=content_type)
    message = raw.envelope(job_id=raw.new_id())
    message["body"] = "!!!not base64"
    c.add(
        "body not base64",
        raw.encode(message),
        message["headers"]["id"],
        "InvalidJob",
        "not valid base64",
    )
    c.job("body missing", body=b"", expect="InvalidJob", match="not valid application/json")
    c.job(
        "body base64 of garbage",
        body=b"\x00\x01garbage",
        expect="InvalidJob",
        match="not valid application/json",
    )
    c.job(
        "body base64 of bad utf-8",
        body=b'[[], {"model": "\xff"}, {}]',
        expect="InvalidJob",
        match="not valid application/json",
    )
    c.job("body raw json text", body=raw.json_body([], classify()), body_encoding=None)
    body = json.loads(raw.json_body([], classify()))
    message = raw.envelope(job_id=raw.new_id(), body_encoding=None)
    message["body"] = body  # already decoded, as kombu keeps it for some serializers
    c.add("body inline", raw.encode(message), message["headers"]["id"], "SUCCESS")
    for name, body_bytes in [
        ("body a number", b"5"),
        ("body an object", b'{"model": "tiny"}'),
        ("body two elements", json.dumps([[], classify()]).encode()),
        ("body four elements", json.dumps([[], classify(), {}, 1]).encode()),
        ("body a string", b'"kwargs"'),
        ("body null", b"null"),
    ]:
        c.job(name, body=body_bytes, expect="InvalidJob", match="not a Celery task body")
    c.job(
        "positional args",
        body=raw.json_body([GOOD_IMAGE], classify()),
        expect="InvalidJob",
        match="keyword arguments only; got 1 positional",
    )
    c.job(
        "positional args only",
        body=raw.json_body(["tiny", [GOOD_IMAGE]], {}),
        expect="InvalidJob",
        match="keyword arguments only; got 2 positional",
    )
    job_id = raw.new_id()
    protocol1 = json.dumps(
        {"task": CLASSIFY, "id": job_id, "args": [], "kwargs": classify()}
    ).encode()
    c.job(
        "protocol 1",
        body=protocol1,
        job_id=job_id,
        headers={"task": None, "id": None},
        expect="InvalidJob",
        match="protocol 1.*not accepted",
    )
    c.job("protocol 1 body, protocol 2 headers", body=protocol1)
    c.job(
        "body nested 5000 deep",
        body=b"[" * 5000 + b"]" * 5000,
        expect="InvalidJob",
        match="nested too deeply",
    )
    c.job(
        "msgpack",
        body=msgpack.packb([[], classify(inputs=[{"image": GOOD_PNG}]), {}]),
        content_type="application/x-msgpack",
    )
    c.job(
        "msgpack other name",
        body=msgpack.packb([[], classify(), {}]),
        content_type="application/msgpack",
    )
    c.job(
        "msgpack garbage",
        body=b"\xc1\xc1\xc1",
        content_type="application/x-msgpack",
        expect="InvalidJob",
        match="not valid application/x-msgpack",
    )
    c.job(
        "msgpack truncated",
        body=msgpack.packb([[], classify(), {}])[:20],
        content_type="application/x-msgpack",
        expect="InvalidJob",
        match="not valid application/x-msgpack",
    )
    c.job(
        "msgpack nested deep",
        body=b"\x91" * 5000 + b"\xc0",
        content_type="application/x-msgpack",
        expect="InvalidJob",
        match="not valid",
    )
    c.job(
        "eta",
        classify(),
        "InvalidJob",
        "cannot be delayed",
        headers={"eta": "2020-01-01T00:00:00+00:00"},
    )
    c.job("countdown", classify(), "InvalidJob", "cannot be delayed", headers={"countdown": 5})
    c.job("expired", classify(), "REVOKED", headers={"expires": "2000-01-01T00:00:00+00:00"})
    c.job("expires garbage", classify(), headers={"expires": "next tuesday"})
    c.job("expires a number", classify(), headers={"expires": 12})
    c.job("expires far ahead", classify(), headers={"expires": "2999-01-01T00:00:00"})
    c.job("retries garbage", classify(), headers={"retries": "x", "timelimit": "y"})
    c.job("no delivery tag", classify(), properties={"delivery_tag": None})
    c.job("delivery info a list", classify(), properties={"delivery_info": [1]})
    c.job("priority garbage", classify(), properties={"priority": "urgent"})
    message = raw.envelope(classify(), job_id=raw.new_id())
    message["properties"] = "not an object"
    # Without properties.body_encoding the base64 body is read as JSON text.
    c.add(
        "properties a string",
        raw.encode(message),
        message["headers"]["id"],
        "InvalidJob",
        "not valid application/json",
    )
    c.job("id only in correlation_id", classify(), job_id=raw.new_id(), headers={"id": None})
    c.job("numeric id", classify(), job_id=int(time.time() * 1e6))
    c.job("unicode id", classify(), job_id=f"ключ ✓ {raw.new_id()}")
    c.job("long id", classify(), job_id="x" * 1000 + raw.new_id())
    twice = raw.new_id()
    c.job("same id, first", classify(), job_id=twice)
    c.job("same id, second", classify(), job_id=twice)
    job_id = raw.new_id()
    deep = (
        raw.encode(raw.envelope(classify(), job_id=job_id))[:-1]
        + b', "deep": '
        + b"[" * 995
        + b"]" * 995
        + b"}"
    )
    # Deeper than Python's decoder goes in the consumer thread, within Redis's limit (1000).
    c.add("envelope nested 995 deep", deep, job_id, ("InvalidJob", "SUCCESS"), "nested too deeply")
    job_id = raw.new_id()
    bad_utf8 = raw.encode(raw.envelope(classify(), job_id=job_id)).replace(
        b'"lang": "py"', b'"lang": "p\xffy"'
    )
    c.add("envelope with bad utf-8", bad_utf8, job_id, "InvalidJob", "not a kombu JSON")
    c.job(
        "50 MB message",
        classify(inputs=[{"image": "A" * 37_000_000}]),
        "PayloadTooLarge",
        r"message is \d+ bytes.*AIMASS_MAX_MESSAGE_BYTES",
    )


def classify_cases(c: Corpus) -> None:
    for kwargs in (None, [], "tiny", 5, [classify()]):
        c.job(
            f"kwargs {str(kwargs)[:20]!r}",
            body=raw.json_body([], kwargs),
            expect="InvalidJob",
            match="takes keyword arguments",
        )
    c.job("kwargs empty", {}, "InvalidJob", "model: Field required")
    for model in (MISSING, None, 5, [], {}, "", "x" * 65, True):
        c.job(f"model {model!r}"[:40], classify(model=model), "InvalidJob", "model")
    for model in (
        "nope",
        "../tiny",
        "..",
        ".",
        "/etc/passwd",
        "tiny/../tiny",
        "TINY",
        "tiny ",
        " tiny",
        "tiny\n",
        "tiny\x00",
        "ti ny",
        "tiny-gan/../tiny",
        "aimass.tiny",
        "%2e%2e%2ftiny",
        "~root",
        "tiny*",
        "\u0074iny\u200b",
        "C:\\models\\tiny",
        "tiny/1/model.onnx",
    ):
        c.job(
            f"model {model!r}",
            classify(model=model),
            "UnknownModel",
            "is not served by this worker",
        )
    for version in (0, -1, 1.5, "one", [], {}, float("nan")):
        c.job(f"version {version!r}", classify(version=version), "InvalidJob", "version")
    for version in (2, 99, 10**30):
        c.job(
            f"version {version}",
            classify(version=version),
            "UnknownModel",
            f"has no version {version}",
        )
    for version in ("1", 1.0, True):  # lax coercions: taken as 1 (or refused)
        c.job(f"version {version!r}", classify(version=version), ("SUCCESS", "InvalidJob"))
    for top_k in (0, -1, 1001, "x", None, 2.5, [5]):
        c.job(f"top_k {top_k!r}", classify(top_k=top_k), "InvalidJob", "top_k")
    c.job("top_k 1000", classify(top_k=1000))
    for inputs in (
        MISSING,
        None,
        [],
        {},
        "x",
        [None],
        ["str"],
        [5],
        [[]],
        [{}],
        [{"image": GOOD_IMAGE, "tensor": GOOD_TENSOR}],
        [{"image": GOOD_IMAGE, "extra": 1}],
        [{"IMAGE": GOOD_IMAGE}],
        [{"image": GOOD_IMAGE}] * 1025,
        [{"image": None}],
    ):
        c.job(f"inputs {str(inputs)[:30]!r}", classify(inputs=inputs), "InvalidJob", "inputs")
    c.job("100 inputs", classify(inputs=[{"image": GOOD_IMAGE}] * 100))
    for extra in ({"priority": 1}, {"__class__": "x"}, {"Model": "tiny"}, {"inputs ": []}):
        c.job(f"extra field {extra}", classify(**extra), "InvalidJob", "Extra inputs")
    image_cases(c)
    npy_cases(c)
    tensor_cases(c)
    pixel_cases(c)


def image_cases(c: Corpus) -> None:
    def image(name: str, data: bytes | str, expect: str, match: str = "") -> None:
        value = data if isinstance(data, str) else b64(data)
        c.job(f"image {name}", classify(inputs=[{"image": value}]), expect, match)

    real_png, real_jpeg = GOOD_PNG, jpeg_bytes(Image.new("L", (64, 64), 200))
    for name, data in [
        ("not base64", "!!!"),
        ("bad padding", "abc"),
        ("spaces", "iV BO"),
        ("a number", 5),
        ("a list", [1, 2]),
    ]:
        c.job(f"image {name}", classify(inputs=[{"image": data}]), "InvalidJob", "image")
    for name, data in [
        ("empty", b""),
        ("garbage", b"garbage bytes"),
        ("gif", b"GIF89a" + b"\0" * 20),
        ("bmp", b"BM" + b"\0" * 50),
        ("pdf", b"%PDF-1.4"),
        ("text", b"hello"),
        ("webp", b"RIFF\0\0\0\0WEBP"),
        ("png without the magic's end", real_png[:4]),
    ]:
        image(name, data, "InvalidInput", "not PNG, JPEG or NPY")
    damaged = bytearray(real_png)
    damaged[len(damaged) // 2 : len(damaged) // 2 + 8] = b"\xff" * 8
    for name, data in [
        ("png magic only", b"\x89PNG\r\n\x1a\n"),
        ("png truncated", real_png[:30]),
        ("png damaged", bytes(damaged)),
        ("png without IDAT", real_png[:33] + b"\0\0\0\0IEND\xaeB`\x82"),
        ("jpeg magic only", b"\xff\xd8\xff"),
        ("jpeg truncated", real_jpeg[: len(real_jpeg) // 2]),
        ("jpeg header only", real_jpeg[:20]),
    ]:
        image(name, data, "InvalidInput", "could not be decoded")
    for name, data in [
        ("png bomb 50000x50000", png_claiming(50000, 50000)),
        ("png 4097x4097", png_claiming(4097, 4097)),
        ("png 1x100000000", png_claiming(1, 100_000_000)),
        ("jpeg bomb 60000x60000", jpeg_claiming(60000, 60000)),
    ]:
        image(name, data, "PayloadTooLarge", "pixels|decompression bomb")
    for name, picture in [
        ("1x1", Image.new("L", (1, 1))),
        ("rgb 100x60", Image.new("RGB", (100, 60), (9, 99, 199))),
        ("rgba", Image.new("RGBA", (8, 8))),
        ("palette", Image.new("P", (8, 8))),
        ("bilevel", Image.new("1", (8, 8))),
        ("gray+alpha", Image.new("LA", (8, 8))),
        ("16-bit", Image.fromarray(np.full((8, 8), 300, np.uint16))),
    ]:
        image(name, png_bytes(picture), "SUCCESS")
    image("jpeg cmyk", jpeg_bytes(Image.new("CMYK", (8, 8))), "SUCCESS")
    image("jpeg", real_jpeg, "SUCCESS")


def npy_cases(c: Corpus) -> None:
    def npy(name: str, data: bytes, expect: str, match: str = "") -> None:
        c.job(f"npy {name}", classify(inputs=[{"image": b64(data)}]), expect, match)

    ok = np.zeros((8, 8, 1), np.float32)
    npy("float32", array_to_npy(ok), "SUCCESS")
    npy("fortran order", array_to_npy(np.asfortranarray(ok)), "SUCCESS")
    npy("uint8 pixels", array_to_npy(row_image(2)), "SUCCESS")
    npy("uint8 rgb", array_to_npy(np.zeros((8, 8, 3), np.uint8)), "SUCCESS")
    for name, array in [
        ("float32 8x8", np.zeros((8, 8), np.float32)),
        ("float64", ok.astype(np.float64)),
        ("int64", ok.astype(np.int64)),
        ("complex", ok.astype(np.complex64)),
        ("big-endian", ok.astype(">f4")),
        ("0-d", np.float32(1.0)),
        ("empty", np.zeros((0, 8, 1), np.float32)),
        ("bool", ok.astype(bool)),
    ]:
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(array), allow_pickle=False)
        npy(name, buffer.getvalue(), "InvalidInput", "unexpected tensor")
    for name, value in [("nan", np.nan), ("inf", np.inf), ("-inf", -np.inf)]:
        npy(name, array_to_npy(np.full((8, 8, 1), value, np.float32)), "InvalidInput", "NaN or Inf")
    for name, array in [
        ("uint8 2 channels", np.zeros((8, 8, 2), np.uint8)),
        ("uint8 5 channels", np.zeros((8, 8, 5), np.uint8)),
    ]:
        npy(name, array_to_npy(array), "InvalidInput", "channels")
    buffer = io.BytesIO()
    np.save(buffer, np.array([Marker()], dtype=object), allow_pickle=True)
    npy("object array (pickle inside)", buffer.getvalue(), "InvalidInput", "could not be read")
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(4, dtype=[("a", "<f4"), ("b", "<i4")]))
    npy("structured", buffer.getvalue(), "InvalidInput", "")
    npy("garbage after magic", b"\x93NUMPY" + b"\xff" * 40, "InvalidInput", "could not be read")
    npy("truncated", array_to_npy(ok)[:-10], "InvalidInput", "bytes after it are fewer")
    # Refused from the header, before numpy allocates what it claims.
    for shape in ((100000, 100000), (2**40,), (10, 10, 10, 10, 10, 10, 10, 10, 10)):
        npy(f"claims {shape}", npy_claiming(shape), "PayloadTooLarge", "elements; the limit is")
    npy(
        "claims (4096, 4096) without its data",
        npy_claiming((4096, 4096)),
        "InvalidInput",
        "claims shape \\[4096, 4096\\] of float32, but the bytes after it are fewer",
    )


def tensor_cases(c: Corpus) -> None:
    def one(name: str, value: Any, expect: str | tuple[str, ...], match: str = "") -> None:
        c.job(f"tensor {name}", classify(inputs=[{"tensor": value}]), expect, match)

    one("good", GOOD_TENSOR, "SUCCESS")
    for dtype in ("float128", "complex64", "object", "", None, 5, "FLOAT32", "f4", "<f4"):
        one(
            f"dtype {dtype!r}", tensor(dtype=dtype, data=GOOD_TENSOR["data"]), "InvalidJob", "dtype"
        )
    for shape in ([-8, 8, 1], [8, 8, 1.5], [8] * 9, None, "8,8,1", [[8]], [8, None]):
        one(
            f"shape {shape!r}", tensor(shape=shape, data=GOOD_TENSOR["data"]), "InvalidJob", "shape"
        )
    one(
        "shape as strings",
        tensor(shape=["8", "8", "1"], data=GOOD_TENSOR["data"]),
        ("SUCCESS", "InvalidJob"),
    )
    for shape in ([100000, 100000, 100000], [2**40], [2**63], [10**30], [4096, 4096, 4096]):
        one(
            f"shape {shape}",
            tensor(shape=shape, data=""),
            "PayloadTooLarge",
            "needs \\d+ bytes; the limit is",
        )
    for name, data in [("not base64", "!!"), ("null", None), ("a number", 5), ("a list", [])]:
        value = tensor(data="x")
        value["data"] = data
        one(f"data {name}", value, "InvalidJob", "data")
    for name, size in [("short", 255), ("long", 257), ("empty", 0)]:
        one(
            f"data {name}",
            tensor(data=b64(b"\0" * size)),
            "InvalidInput",
            "tensor data has \\d+ bytes",
        )
    for dtype in ("float64", "int32", "int64", "bool", "float16", "int8"):
        one(
            f"dtype {dtype} for float32 input",
            tensor(dtype=dtype),
            "InvalidInput",
            "unexpected tensor for input 'image' of model 'tiny'",
        )

    for shape in ((8, 8), (1, 8, 8, 1), (8, 8, 3), (16, 16, 1), (0, 8, 1), ()):
        one(
            f"shape {shape} for an 8x8x1 input",
            tensor(shape=shape),
            "InvalidInput",
            "unexpected tensor.*expected shape \\[8, 8, 1\\]",
        )
    for name, value in [("nan", np.nan), ("inf", np.inf), ("-inf", -np.inf)]:
        values = np.zeros((8, 8, 1), np.float32)
        values[3, 3, 0] = value
        one(name, tensor(values=values), "InvalidInput", "NaN or Inf")
    one("large finite values", tensor(values=np.full((8, 8, 1), 1e30, np.float32)), "SUCCESS")
    # Finite, but the model overflows: its scores would be NaN, which JSON cannot carry.
    one(
        "values that overflow the model",
        tensor(values=np.full((8, 8, 1), 3e38, np.float32)),
        "ModelError",
        "'tiny' produced NaN or infinite scores for this input",
    )
    one("extra field", tensor(data=GOOD_TENSOR["data"], scale=2), "InvalidJob", "Extra inputs")
    for value in ("x", [], None, 5):
        one(f"a {type(value).__name__}", value, "InvalidJob", "tensor")


def pixel_cases(c: Corpus) -> None:
    """uint8 tensors shaped like images are pixels, preprocessed like a decoded image."""

    def one(name: str, value: Any, expect: str, match: str = "") -> None:
        c.job(f"uint8 pixels {name}", classify(inputs=[{"tensor": value}]), expect, match)

    for shape in ((8, 8, 1), (8, 8), (30, 20, 3), (8, 8, 4), (1, 1)):
        one(str(shape), tensor(dtype="uint8", shape=shape), "SUCCESS")
    for shape in ((8, 8, 2), (8, 8, 5), (1, 8, 8, 1)):
        one(
            str(shape),
            tensor(dtype="uint8", shape=shape),
            "InvalidInput",
            "unexpected tensor|channels",
        )
    one(
        "5000x4000",
        tensor(dtype="uint8", shape=(5000, 4000), data=""),
        "PayloadTooLarge",
        "needs 20000000 bytes",
    )


def generate_cases(c: Corpus) -> None:
    def gen(
        name: str,
        kwargs: dict[str, Any],
        expect: str | tuple[str, ...] = "SUCCESS",
        match: str = "",
        **envelope: Any,
    ) -> None:
        c.job(f"generate {name}", kwargs, expect, match, task=GENERATE, **envelope)

    gen("good", generate())
    gen("tensor format", generate(format="tensor"))
    gen("no labels, no seed", generate(labels=None, seed=None))
    for count in (0, -1, 1025, "x", None, 2.5, []):
        gen(f"count {count!r}", generate(count=count, labels=MISSING), "InvalidJob", "count")
    gen("count as a string", generate(count="2"), ("SUCCESS", "InvalidJob"))
    for labels in ([1], [1, 2, 3], [-1, 2], ["a", 2], [1.5, 2], "12", {}):
        gen(f"labels {labels!r}", generate(labels=labels), "InvalidJob", "labels")
    for labels in ([8, 1], [1, 10**20]):
        gen(f"labels {labels!r}", generate(labels=labels), "InvalidInput", "out of range")
    gen("labels at the edge", generate(labels=[7, 0]))
    for seed in (-1, 2**63, "x", 1.5, []):
        gen(f"seed {seed!r}", generate(seed=seed), "InvalidJob", "seed")
    gen("largest seed", generate(seed=2**63 - 1))
    for fmt in ("jpeg", "", None, 5, "PNG"):
        gen(f"format {fmt!r}", generate(format=fmt), "InvalidJob", "format")
    gen(
        "classify model",
        generate(model="tiny"),
        "InvalidJob",
        "'tiny' is a classify model; send its jobs as aimass.classify",
    )
    gen("unknown model", generate(model="nope"), "UnknownModel", "not served")
    gen("classify fields", generate(inputs=[{"image": GOOD_IMAGE}]), "InvalidJob", "Extra inputs")
    c.job(
        "classify task, generator",
        classify(model="tiny-gan"),
        "InvalidJob",
        "'tiny-gan' is a generate model; send its jobs as aimass.generate",
    )


def good_jobs(c: Corpus, count: int) -> None:
    for i in range(count):
        c.job(
            f"good {i}", classify(inputs=[{"image": b64(encode_image(row_image(i % 8)))}], top_k=1)
        )


def build_corpus() -> list[Case]:
    corpus = Corpus()
    good_jobs(corpus, 10)
    envelope_cases(corpus)
    good_jobs(corpus, 10)
    classify_cases(corpus)
    good_jobs(corpus, 10)
    generate_cases(corpus)
    good_jobs(corpus, 10)
    return corpus.cases
