"""Encodings of the wire contract: images (PNG, JPEG, NPY) and raw tensors.

Pure functions used by both sides: the client encodes, the worker decodes with caps,
and generated images come back as PNG.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Sequence
from numbers import Real
from pathlib import Path
from typing import Any, cast

import numpy as np
from PIL import Image, JpegImagePlugin, PngImagePlugin

from aimass.protocol.errors import InvalidInput, PayloadTooLarge

NPY_MAGIC = b"\x93NUMPY"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"

# A classify input: an image (a file, its bytes, a PIL image, pixels) or, for a model of
# other tensors, a numpy array or a list of numbers (nested for several dimensions).
InputLike = str | Path | bytes | Image.Image | np.ndarray | Sequence[Any]


def array_to_png(pixels: np.ndarray) -> bytes:
    """PNG bytes of a uint8 image shaped HxW, HxWx1, HxWx3 or HxWx4."""
    if pixels.dtype != np.uint8:
        raise InvalidInput(f"PNG needs uint8 pixels, got {pixels.dtype}")
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def array_to_npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def encode_image(image: InputLike) -> bytes:
    """Bytes to send as an ``image`` input: files and bytes as they are, PIL images and
    uint8 arrays as PNG, other arrays as NPY (exact values, no rounding)."""
    if isinstance(image, bytes):
        return image
    if isinstance(image, str | Path):
        return Path(image).read_bytes()
    if isinstance(image, Image.Image):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue()
    if isinstance(image, np.ndarray):
        if image.dtype == np.uint8 and image.ndim in (2, 3):
            return array_to_png(image)
        return array_to_npy(image)
    raise TypeError(
        f"cannot send {type(image).__name__} as an image: expected a file path, bytes, "
        "a PIL image, a numpy array or a list of numbers"
    )


def encode_input(image: InputLike) -> dict[str, Any]:
    """One classify input: uint8 pixel arrays (HxW or HxWxC) as a raw ``tensor`` (exact,
    and the cheapest for a worker to take: nothing to decode); lists of numbers and
    one-dimensional arrays (a feature vector, token ids) as ``features``, which the
    worker converts to the model's datatype; everything else as an encoded ``image``."""
    if _is_pixel_array(image):
        pixels = np.ascontiguousarray(cast(np.ndarray, image))
        return {"tensor": {"dtype": "uint8", "shape": list(pixels.shape), "data": pixels.tobytes()}}
    if isinstance(image, list | tuple) or (isinstance(image, np.ndarray) and image.ndim == 1):
        return {"features": _features(image)}
    return {"image": encode_image(image)}


def _features(values: Sequence[Any] | np.ndarray) -> list[Any]:
    try:
        array = np.asarray(values)
    except ValueError:
        raise TypeError(
            f"cannot send {values!r:.60} as features: the lists are ragged; nest them as "
            "the model's input is shaped"
        ) from None
    if array.dtype.kind not in "biuf" or array.size == 0:
        raise TypeError(
            f"cannot send {values!r:.60} as features: expected a non-empty list of numbers "
            "(nested lists for several dimensions) or a numeric numpy array"
        )
    return cast(list[Any], array.tolist())


def is_image_shape(dims: tuple[int, ...]) -> bool:
    """HxW, or HxWxC with 1, 3 or 4 channels: the shapes of pixels taken as an image."""
    return len(dims) == 2 or (len(dims) == 3 and dims[2] in (1, 3, 4))


def _is_pixel_array(image: object) -> bool:
    return isinstance(image, np.ndarray) and image.dtype == np.uint8 and is_image_shape(image.shape)


def _is_number(value: object) -> bool:
    return isinstance(value, Real | np.number) and not isinstance(value, bool | np.bool_)


def encode_inputs(images: list[InputLike]) -> dict[str, Any]:
    """The inputs of a classify job: several uint8 pixel arrays of one shape travel
    stacked as one raw ``batch`` tensor (one field for the worker to check and one
    conversion for the lot, instead of one per image); a flat list of numbers is one
    feature vector; anything else goes as ``inputs``, one item per image or vector."""
    if images and all(_is_number(value) for value in images):
        return {"inputs": [{"features": _features(images)}]}
    if len(images) > 1 and all(_is_pixel_array(image) for image in images):
        arrays = cast(list[np.ndarray], images)
        if all(array.shape == arrays[0].shape for array in arrays):
            stacked = np.stack(arrays)
            return {
                "batch": {"dtype": "uint8", "shape": list(stacked.shape), "data": stacked.tobytes()}
            }
    return {"inputs": [encode_input(image) for image in images]}


def tensor_payload(array: np.ndarray) -> dict[str, Any]:
    """The JSON form of a raw tensor input: dtype, shape and base64 little-endian bytes."""
    array = np.ascontiguousarray(array)
    little = array.astype(array.dtype.newbyteorder("<"), copy=False)
    return {
        "dtype": str(array.dtype),
        "shape": list(array.shape),
        "data": base64.b64encode(little.tobytes()).decode("ascii"),
    }


def tensor_from_bytes(dtype: str, shape: list[int], data: bytes, max_bytes: int) -> np.ndarray:
    """The array a raw tensor describes, checking that its bytes match dtype and shape."""
    np_dtype = np.dtype(dtype).newbyteorder("<")
    count = 1
    for dim in shape:
        count *= dim
    expected = count * np_dtype.itemsize
    if expected > max_bytes:
        raise PayloadTooLarge(
            f"tensor of shape {shape} and dtype {dtype} needs {expected} bytes; "
            f"the limit is {max_bytes}"
        )
    if len(data) != expected:
        raise InvalidInput(
            f"tensor data has {len(data)} bytes, but shape {shape} with dtype {dtype} "
            f"needs {expected}"
        )
    return np.frombuffer(data, dtype=np_dtype).reshape(shape)


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Pixels of PNG/JPEG bytes (uint8, HxWxC) or the array of NPY bytes.

    Raises ``InvalidInput`` for bytes that are none of these or are damaged, and
    ``PayloadTooLarge`` for images above ``max_pixels`` (decompression bombs included).
    """
    if data.startswith(NPY_MAGIC):
        return _decode_npy(data, max_pixels)
    read: Callable[[io.BytesIO], Image.Image]
    if data.startswith(PNG_MAGIC):
        read = PngImagePlugin.PngImageFile
    elif data.startswith(JPEG_MAGIC):
        read = JpegImagePlugin.JpegImageFile
    else:
        raise InvalidInput(
            f"image bytes are not PNG, JPEG or NPY (they start with {data[:8]!r}); "
            "send an encoded image or use a 'tensor' input"
        )
    try:
        # The format's own reader, not Image.open: only PNG and JPEG are ever parsed,
        # and the size is checked here, against this worker's cap, before any pixel is
        # decoded, with no warning filter to set (Image.open's decompression-bomb check
        # warns, and a warnings.catch_warnings around it is neither thread-safe nor
        # cheap: a third of a small PNG's decode).
        image: Image.Image = read(io.BytesIO(data))
        width, height = image.size
        if width * height > max_pixels:
            raise PayloadTooLarge(
                f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
            )
        image.load()
        if image.mode not in ("L", "RGB", "RGBA"):
            image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    except PayloadTooLarge:
        raise
    except Exception as exc:  # PIL raises many types for damaged files
        raise InvalidInput(f"image could not be decoded ({type(exc).__name__}: {exc})") from None
    pixels = np.asarray(image)
    return pixels[:, :, None] if pixels.ndim == 2 else pixels


def _decode_npy(data: bytes, max_pixels: int) -> np.ndarray:
    _check_npy_header(data, max_pixels * 4)
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as exc:
        raise InvalidInput(f"NPY bytes could not be read ({type(exc).__name__}: {exc})") from None
    if not isinstance(array, np.ndarray):
        raise InvalidInput("NPY bytes hold no array")
    if array.size > max_pixels * 4:
        raise PayloadTooLarge(f"NPY array has {array.size} elements; the limit is {max_pixels * 4}")
    return array


def _check_npy_header(data: bytes, max_elements: int) -> None:
    """Refuse an NPY whose header claims more elements than allowed, or more bytes than
    it holds, before numpy allocates room for them."""
    buffer = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(buffer)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(buffer)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(buffer)
        else:
            return  # np.load reads (or refuses) the rarer versions itself
    except Exception as exc:
        raise InvalidInput(f"NPY bytes could not be read ({type(exc).__name__}: {exc})") from None
    count = 1
    for dim in shape:
        count *= dim
    if count > max_elements:
        raise PayloadTooLarge(
            f"NPY array of shape {list(shape)} has {count} elements; the limit is {max_elements}"
        )
    if count * dtype.itemsize > len(data) - buffer.tell():
        raise InvalidInput(
            f"NPY header claims shape {list(shape)} of {dtype}, but the bytes "
            "after it are fewer than that"
        )


def png_from_base64(text: str) -> Image.Image:
    """A PIL image from a generate result's base64 PNG."""
    image = Image.open(io.BytesIO(base64.b64decode(text)))
    image.load()
    return image
