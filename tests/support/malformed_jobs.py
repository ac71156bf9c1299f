"""Malformed-input cases of the jobs themselves: classify and generate keyword
arguments, images, NPY arrays, raw tensors and pixels."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

from aimass.protocol.codecs import array_to_npy
from tests.support import raw_messages as raw
from tests.support.malformed_parts import (
    GENERATE,
    GOOD_IMAGE,
    GOOD_PNG,
    GOOD_TENSOR,
    MISSING,
    Corpus,
    Marker,
    b64,
    classify,
    generate,
    jpeg_bytes,
    jpeg_claiming,
    npy_claiming,
    png_bytes,
    png_claiming,
    tensor,
)
from tests.support.tiny_models import row_image


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
