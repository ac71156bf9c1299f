"""Turn decoded job inputs into model tensors, as the manifest says. No queue here."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from aimass.protocol.codecs import decode_image, is_image_shape, tensor_from_bytes
from aimass.protocol.contract import InputItem, TensorPayload
from aimass.protocol.errors import InvalidInput, InvalidJob, PayloadTooLarge
from aimass.protocol.manifest import Preprocessing, TensorSpec
from aimass.protocol.tensors import array_from_data, datatype_of


def pixels_to_input(pixels: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """uint8 pixels (HxWxC) -> one float32 model input shaped as ``prep`` says."""
    pixels = _to_channels(pixels, prep.channels)
    height, width = pixels.shape[:2]
    if (height, width) != (prep.height, prep.width):
        mode = "L" if prep.channels == 1 else None
        source = pixels[:, :, 0] if prep.channels == 1 else pixels
        resized = Image.fromarray(source, mode=mode).resize(
            (prep.width, prep.height), Image.Resampling.BILINEAR
        )
        pixels = np.asarray(resized).reshape(prep.height, prep.width, prep.channels)
    return _scaled(pixels[None], prep)[0]


def pixels_to_batch(pixels: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """uint8 pixels (NxHxWxC) -> float32 model inputs, N first: in one pass when the
    images already have the model's size and channels, else image by image."""
    if pixels.shape[1:] != (prep.height, prep.width, prep.channels):
        return np.stack([pixels_to_input(image, prep) for image in pixels])
    return _scaled(pixels, prep)


def _scaled(pixels: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """NxHxWxC uint8 -> float32 with the manifest's scale, offset and layout, written
    once into a contiguous array (a 227x227 photo: 1.0 ms -> 0.3 ms here, against
    converting, then transposing, then copying the transposed view)."""
    offset = np.asarray(prep.offset, dtype=np.float32)
    source = pixels
    if prep.layout == "NCHW":
        source = pixels.transpose(0, 3, 1, 2)
        offset = offset.reshape(-1, 1, 1)
    values = np.empty(source.shape, dtype=np.float32)
    np.multiply(source, np.float32(prep.scale), out=values)
    values += offset
    return values


def _to_channels(pixels: np.ndarray, channels: int) -> np.ndarray:
    have = pixels.shape[2]
    if have == channels:
        return pixels
    if have == 4:  # drop alpha first
        pixels, have = pixels[:, :, :3], 3
    if channels == 1 and have == 3:
        gray = np.asarray(Image.fromarray(pixels, mode="RGB").convert("L"))
        return gray[:, :, None]
    if channels == 3 and have == 1:
        return np.repeat(pixels, 3, axis=2)
    if have == channels:
        return pixels
    raise InvalidInput(f"image has {have} channels; expected {channels}")


def check_tensor(
    array: np.ndarray, spec: TensorSpec, model: str, batched: bool = False
) -> np.ndarray:
    """A raw tensor must match the model input: without its batch dimension for one
    input, with it for a ``batch``."""
    expected_shape = spec.shape if batched else spec.shape[1:]
    fits = len(array.shape) == len(expected_shape) and all(
        want in (-1, got) for want, got in zip(expected_shape, array.shape, strict=True)
    )
    if not fits or str(array.dtype) != spec.dtype:
        what = "batch" if batched else "tensor"
        raise InvalidInput(
            f"unexpected {what} for input {spec.name!r} of model {model!r}: expected shape "
            f"{expected_shape} dtype {spec.dtype}, got shape {list(array.shape)} dtype "
            f"{array.dtype}"
        )
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise InvalidInput(f"tensor for input {spec.name!r} of model {model!r} holds NaN or Inf")
    return array


def _is_pixels(
    array: np.ndarray, spec: TensorSpec, prep: Preprocessing | None, batched: bool = False
) -> bool:
    """A uint8 tensor shaped like an image (HxW or HxWxC; N first in a batch), for a
    model that takes floats: raw pixels, preprocessed like a decoded image. The cheapest
    way to send images (no PNG to decode), and exact."""
    return (
        prep is not None
        and array.dtype == np.uint8
        and spec.dtype != "uint8"
        and is_image_shape(array.shape[1:] if batched else array.shape)
    )


def _check_pixels(height: int, width: int, max_pixels: int) -> None:
    if height * width > max_pixels:
        raise PayloadTooLarge(
            f"image is {width}x{height} = {height * width} pixels; the limit is {max_pixels}"
        )


def features_to_input(
    features: list[Any], spec: TensorSpec, model: str, max_bytes: int
) -> np.ndarray:
    """A JSON list of numbers -> one input of the model's datatype: a flat list fills an
    input of fixed size (row-major), a nested one must be nested as the input is."""
    item_shape = spec.shape[1:]
    if all(dim > 0 for dim in item_shape):
        shape = item_shape
    else:  # an open dimension (a sequence length): the nesting says its size
        try:
            shape = list(np.shape(features))
        except ValueError:
            raise InvalidInput(
                f"features for input {spec.name!r} of model {model!r} are ragged nested "
                f"lists; expected them nested as {item_shape}"
            ) from None
    try:
        return array_from_data(spec.name, datatype_of(spec.dtype), shape, features, max_bytes)
    except InvalidJob as exc:
        raise InvalidInput(
            f"features for input {spec.name!r} of model {model!r} (shape {item_shape}, "
            f"dtype {spec.dtype}): {exc.message}"
        ) from None


def decode_input(
    item: InputItem,
    spec: TensorSpec,
    prep: Preprocessing | None,
    model: str,
    max_bytes: int,
    max_pixels: int,
) -> np.ndarray:
    """One classify input -> one model input (no batch dimension)."""
    if item.features is not None:
        return check_tensor(features_to_input(item.features, spec, model, max_bytes), spec, model)
    if item.tensor is not None:
        tensor = item.tensor
        array = tensor_from_bytes(tensor.dtype, tensor.shape, tensor.data, max_bytes)
        if _is_pixels(array, spec, prep):
            assert prep is not None
            _check_pixels(array.shape[0], array.shape[1], max_pixels)
            return pixels_to_input(array if array.ndim == 3 else array[:, :, None], prep)
        return check_tensor(array, spec, model)
    assert item.image is not None
    decoded = decode_image(item.image, max_pixels)
    if decoded.dtype == np.uint8 and decoded.ndim == 3 and prep is not None:
        return pixels_to_input(decoded, prep)
    if decoded.dtype == np.uint8 and decoded.ndim == 2 and prep is not None:
        return pixels_to_input(decoded[:, :, None], prep)
    # An NPY of another dtype is taken as a ready model input.
    return check_tensor(decoded, spec, model)


def decode_batch(
    batch: TensorPayload,
    spec: TensorSpec,
    prep: Preprocessing | None,
    model: str,
    max_bytes: int,
    max_pixels: int,
) -> np.ndarray:
    """A classify job's ``batch`` tensor -> model inputs, N first: uint8 pixels
    (NxHxW or NxHxWxC) preprocessed like images, anything else checked as model-ready
    values."""
    array = tensor_from_bytes(batch.dtype, batch.shape, batch.data, max_bytes)
    if _is_pixels(array, spec, prep, batched=True):
        assert prep is not None
        _check_pixels(array.shape[1], array.shape[2], max_pixels)
        return pixels_to_batch(array if array.ndim == 4 else array[..., None], prep)
    return check_tensor(array, spec, model, batched=True)
