"""Named tensors in the Open Inference Protocol's form (KServe v2, which Triton, KServe,
Seldon and OpenVINO speak): ``{"name", "shape", "datatype", "data"}``.

``data`` is a flat or nested JSON list in row-major order, or the tensor's raw
little-endian bytes (msgpack bytes, or base64 text in JSON). Pure functions both ends
use: the worker turns a job's tensors into arrays, checking each against the model's
manifest, and its outputs back into tensors; the client does the reverse.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from aimass.protocol.errors import InvalidJob, PayloadTooLarge

Datatype = Literal["FP32", "FP16", "FP64", "INT8", "INT32", "INT64", "UINT8", "BOOL"]

# The protocol's datatype names and the numpy dtypes they stand for.
DTYPES: dict[str, str] = {
    "FP32": "float32",
    "FP16": "float16",
    "FP64": "float64",
    "INT8": "int8",
    "INT32": "int32",
    "INT64": "int64",
    "UINT8": "uint8",
    "BOOL": "bool",
}
DATATYPES: dict[str, str] = {dtype: datatype for datatype, dtype in DTYPES.items()}


def datatype_of(dtype: str | np.dtype[Any]) -> str:
    """The protocol's name of a numpy dtype; ``ValueError`` for one it has no name for."""
    name = np.dtype(dtype).name
    if name not in DATATYPES:
        raise ValueError(
            f"dtype {name} has no tensor datatype; expected one of {', '.join(DATATYPES)}"
        )
    return DATATYPES[name]


def element_count(shape: Sequence[int]) -> int:
    return math.prod(shape)


def describe_shape(shape: Sequence[int]) -> str:
    """A manifest shape as people read it: -1 (open) as ``?``."""
    return "[" + ", ".join("?" if dim < 0 else str(dim) for dim in shape) + "]"


def array_from_data(
    name: str, datatype: str, shape: Sequence[int], data: Any, max_bytes: int
) -> np.ndarray:
    """The array a tensor describes. Raises ``PayloadTooLarge`` past ``max_bytes`` (before
    anything is allocated) and ``InvalidJob`` for data that does not fit its datatype and
    shape, naming the tensor, what was expected and what came."""
    dtype = np.dtype(DTYPES[datatype]).newbyteorder("<")
    count = element_count(shape)
    expected = count * dtype.itemsize
    if expected > max_bytes:
        raise PayloadTooLarge(
            f"tensor {name!r} of shape {list(shape)} and datatype {datatype} needs "
            f"{expected} bytes; the limit is {max_bytes}"
        )
    if isinstance(data, str):  # base64 that reached here undecoded (a plain dict)
        try:
            data = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidJob(f"tensor {name!r}: data is text but not base64 ({exc})") from None
    if isinstance(data, bytes | bytearray | memoryview):
        if len(data) != expected:
            raise InvalidJob(
                f"tensor {name!r}: data has {len(data)} bytes, but shape {list(shape)} of "
                f"{datatype} needs {expected} ({count} elements of {dtype.itemsize} bytes)"
            )
        return np.frombuffer(data, dtype=dtype).reshape(shape)
    if not isinstance(data, list):
        raise InvalidJob(
            f"tensor {name!r}: data must be a list of numbers or raw bytes, "
            f"got {type(data).__name__}"
        )
    return _array_from_list(name, datatype, shape, data, dtype, count)


def _array_from_list(
    name: str,
    datatype: str,
    shape: Sequence[int],
    data: list[Any],
    dtype: np.dtype[Any],
    count: int,
) -> np.ndarray:
    try:
        values = np.asarray(data)
    except (ValueError, TypeError, OverflowError):  # ragged nesting
        raise InvalidJob(
            f"tensor {name!r}: data is a ragged nested list; expected a flat list of "
            f"{count} values or lists nested as shape {list(shape)}"
        ) from None
    if values.size != count:
        raise InvalidJob(
            f"tensor {name!r}: data holds {values.size} values, but shape {list(shape)} "
            f"needs {count}"
        )
    if values.ndim > 1 and list(values.shape) != list(shape):
        raise InvalidJob(
            f"tensor {name!r}: data is nested as {list(values.shape)}, but its shape "
            f"says {list(shape)}"
        )
    kind = values.dtype.kind if values.size else dtype.kind
    allowed = {"b": "b", "i": "biu", "u": "biu", "f": "biuf"}[dtype.kind]
    if kind not in allowed:
        what = {"b": "true/false", "i": "integers", "u": "integers", "f": "numbers"}[dtype.kind]
        raise InvalidJob(
            f"tensor {name!r}: {datatype} data must be {what}; got "
            f"{_kind_name(values.dtype)} values"
        )
    if dtype.kind in "iu" and values.size:
        info = np.iinfo(dtype)
        low, high = int(values.min()), int(values.max())
        if low < info.min or high > info.max:
            raise InvalidJob(
                f"tensor {name!r}: values {low}..{high} do not fit {datatype} "
                f"({info.min}..{info.max})"
            )
    return values.astype(dtype).reshape(shape)


def _kind_name(dtype: np.dtype[Any]) -> str:
    return {"b": "boolean", "i": "integer", "u": "integer", "f": "floating-point"}.get(
        dtype.kind, "non-numeric"
    )


def tensor_document(
    name: str, array: np.ndarray, binary: bool, raw: bool = False
) -> dict[str, Any]:
    """A tensor in the protocol's form: ``data`` a flat JSON list, or with ``binary`` the
    little-endian bytes (as base64 text, ``raw`` as bytes)."""
    array = np.ascontiguousarray(array)
    document: dict[str, Any] = {
        "name": name,
        "shape": list(array.shape),
        "datatype": datatype_of(array.dtype),
    }
    if binary:
        little = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        document["data"] = little if raw else base64.b64encode(little).decode("ascii")
    else:
        document["data"] = array.reshape(-1).tolist()
    return document


def array_from_document(document: dict[str, Any]) -> np.ndarray:
    """The array of a tensor in the protocol's form (a result's output), whichever way
    its data travels."""
    datatype = str(document["datatype"])
    if datatype not in DTYPES:
        raise ValueError(f"tensor datatype {datatype!r} is not one of {', '.join(DTYPES)}")
    shape = [int(dim) for dim in document["shape"]]
    data = document["data"]
    if isinstance(data, str):
        data = base64.b64decode(data)
    size = element_count(shape) * np.dtype(DTYPES[datatype]).itemsize
    return array_from_data(str(document["name"]), datatype, shape, data, max(size, 1))


# A job's input tensors as a client takes them: ``{name: array}`` (numpy arrays, lists,
# numbers) or the protocol's input dicts as a Triton or KServe request holds them.
TensorInputs = Mapping[str, Any] | Sequence[Mapping[str, Any]]


def client_array(value: Any) -> np.ndarray:
    """A value given for a tensor as an array: numpy arrays keep their dtype; lists and
    numbers take TensorFlow's defaults (float32 for floating-point values, int64 for
    integers), as a Keras model's inputs are most often typed."""
    if isinstance(value, np.ndarray):
        return value
    array = np.asarray(value)
    if array.dtype.kind == "f":
        return array.astype(np.float32)
    if array.dtype.kind in "iu":
        return array.astype(np.int64)
    return array


def encode_tensors(inputs: TensorInputs, raw: bool = True) -> list[dict[str, Any]]:
    """An infer job's ``inputs``: arrays as raw little-endian bytes (``raw``: bytes, for
    msgpack; else base64 text, for JSON); the protocol's dicts as they are."""
    if isinstance(inputs, Mapping):
        return [
            tensor_document(str(name), client_array(value), binary=True, raw=raw)
            for name, value in inputs.items()
        ]
    if isinstance(inputs, str | bytes) or not all(isinstance(item, Mapping) for item in inputs):
        raise TypeError(
            "inputs must be {name: array} or a list of tensor dicts with name, shape, "
            "datatype and data"
        )
    return [dict(item) for item in inputs]
