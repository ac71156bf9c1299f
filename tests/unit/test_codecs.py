from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from PIL import Image

from aimass.protocol.codecs import decode_image, encode_image, tensor_from_bytes
from aimass.protocol.errors import InvalidInput, PayloadTooLarge
from aimass.protocol.manifest import Preprocessing, TensorSpec
from aimass.worker.preprocess import check_tensor, pixels_to_input
from tests.support.malformed_parts import png_claiming

pytestmark = pytest.mark.unit


def test_png_round_trip_keeps_pixels() -> None:
    pixels = np.arange(64, dtype=np.uint8).reshape(8, 8)
    decoded = decode_image(encode_image(pixels), max_pixels=1000)
    assert decoded.shape == (8, 8, 1)
    assert (decoded[:, :, 0] == pixels).all()


def test_jpeg_decodes_to_rgb() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (5, 4), (255, 0, 0)).save(buffer, format="JPEG")
    decoded = decode_image(buffer.getvalue(), max_pixels=1000)
    assert decoded.shape == (4, 5, 3)


def test_npy_keeps_dtype() -> None:
    array = np.ones((2, 3), np.float32)
    assert decode_image(encode_image(array), 1000).dtype == np.float32


def test_garbage_and_truncated_images_are_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="not PNG, JPEG or NPY"):
        decode_image(b"hello", 1000)
    png = encode_image(np.zeros((8, 8), np.uint8))
    with pytest.raises(InvalidInput, match="could not be decoded"):
        decode_image(png[:30], 1000)


def test_images_over_the_pixel_cap_are_refused_before_decoding() -> None:
    png = encode_image(np.zeros((100, 100), np.uint8))
    with pytest.raises(PayloadTooLarge, match="10000 pixels; the limit is 9999"):
        decode_image(png, 9999)


def test_a_decompression_bomb_is_refused_by_the_cap_without_touching_warnings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Past PIL's own bomb limit, where Image.open warns: the cap refuses it from the
    # header, no warning reaches the log, and the process's warning filters are never
    # changed (a warnings.catch_warnings would change them for every thread while it ran).
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoding an image changed the process's warning filters")

    bomb = png_claiming(10_000, 10_000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        monkeypatch.setattr(warnings, "catch_warnings", forbidden)
        monkeypatch.setattr(warnings, "simplefilter", forbidden)
        with pytest.raises(PayloadTooLarge, match="100000000 pixels; the limit is 16777216"):
            decode_image(bomb, 4096 * 4096)
        assert decode_image(encode_image(np.zeros((8, 8), np.uint8)), 1000).shape == (8, 8, 1)
        monkeypatch.undo()
    assert caught == []


def test_tensor_bytes_must_match_shape_and_dtype() -> None:
    with pytest.raises(InvalidInput, match="needs 24"):
        tensor_from_bytes("float32", [2, 3], b"\0" * 20, max_bytes=100)
    with pytest.raises(PayloadTooLarge, match="the limit is 10"):
        tensor_from_bytes("float32", [1000, 1000], b"", max_bytes=10)


def test_check_tensor_names_expected_and_received() -> None:
    spec = TensorSpec(name="image", dtype="float32", shape=[-1, 32, 32, 1])
    with pytest.raises(
        InvalidInput,
        match=r"expected shape \[32, 32, 1\] dtype float32, "
        r"got shape \[28, 28\] dtype float32",
    ):
        check_tensor(np.zeros((28, 28), np.float32), spec, "digits")
    with pytest.raises(InvalidInput, match="NaN or Inf"):
        check_tensor(np.full((32, 32, 1), np.nan, np.float32), spec, "digits")


def test_preprocessing_resizes_converts_and_scales() -> None:
    prep = Preprocessing(height=4, width=4, channels=1, scale=1 / 255)
    rgb = np.full((8, 8, 3), 255, np.uint8)
    out = pixels_to_input(rgb, prep)
    assert out.shape == (4, 4, 1) and out.dtype == np.float32
    assert np.allclose(out, 1.0)
    nchw = pixels_to_input(
        np.zeros((4, 4, 1), np.uint8), Preprocessing(height=4, width=4, channels=3, layout="NCHW")
    )
    assert nchw.shape == (3, 4, 4)


def test_uint8_pixel_tensors_are_preprocessed_like_decoded_images() -> None:
    from aimass.protocol.codecs import tensor_payload
    from aimass.protocol.contract import InputItem
    from aimass.worker.preprocess import decode_input

    spec = TensorSpec(name="image", dtype="float32", shape=[-1, 4, 4, 1])
    prep = Preprocessing(height=4, width=4, channels=1, scale=1 / 255)
    pixels = np.arange(16, dtype=np.uint8).reshape(4, 4)
    as_tensor = decode_input(
        InputItem.model_validate({"tensor": tensor_payload(pixels)}),
        spec,
        prep,
        "m",
        max_bytes=1000,
        max_pixels=1000,
    )
    as_png = decode_input(
        InputItem(image=encode_image(pixels)), spec, prep, "m", max_bytes=1000, max_pixels=1000
    )
    assert as_tensor.dtype == np.float32 and as_tensor.shape == (4, 4, 1)
    assert np.array_equal(as_tensor, as_png)


def test_a_batch_tensor_is_preprocessed_like_its_images_one_by_one() -> None:
    from aimass.protocol.codecs import tensor_payload
    from aimass.protocol.contract import TensorPayload
    from aimass.worker.preprocess import decode_batch

    spec = TensorSpec(name="image", dtype="float32", shape=[-1, 3, 4, 4])
    prep = Preprocessing(
        height=4, width=4, channels=3, scale=1 / 127.5, offset=[-1.0] * 3, layout="NCHW"
    )
    rng = np.random.default_rng(0)
    same_size = rng.integers(0, 256, (5, 4, 4, 3), dtype=np.uint8)
    other_size = rng.integers(0, 256, (2, 6, 5), dtype=np.uint8)  # resized, gray -> RGB
    for pixels in (same_size, other_size):
        payload = TensorPayload.model_validate(tensor_payload(pixels))
        batch = decode_batch(payload, spec, prep, "m", max_bytes=10_000, max_pixels=100)
        one_by_one = np.stack(
            [
                pixels_to_input(image if image.ndim == 3 else image[:, :, None], prep)
                for image in pixels
            ]
        )
        assert batch.dtype == np.float32 and batch.shape == (len(pixels), 3, 4, 4)
        assert np.array_equal(batch, one_by_one)


def test_a_batch_tensor_is_checked_whole() -> None:
    from aimass.protocol.codecs import tensor_payload
    from aimass.protocol.contract import TensorPayload
    from aimass.worker.preprocess import decode_batch

    spec = TensorSpec(name="image", dtype="float32", shape=[-1, 4, 4, 1])
    prep = Preprocessing(height=4, width=4, channels=1)

    def decode(array: np.ndarray) -> np.ndarray:
        payload = TensorPayload.model_validate(tensor_payload(array))
        return decode_batch(payload, spec, prep, "m", max_bytes=10_000, max_pixels=16)

    ready = np.zeros((3, 4, 4, 1), np.float32)
    assert decode(ready) is not None and decode(ready).shape == (3, 4, 4, 1)
    with pytest.raises(
        InvalidInput,
        match=r"unexpected batch .* expected shape "
        r"\[-1, 4, 4, 1\] dtype float32, got shape "
        r"\[3, 4, 4\]",
    ):
        decode(np.zeros((3, 4, 4), np.float32))
    ready[1, 0, 0, 0] = np.inf
    with pytest.raises(InvalidInput, match="NaN or Inf"):
        decode(ready)
    with pytest.raises(PayloadTooLarge, match="image is 5x5 = 25 pixels; the limit is 16"):
        decode(np.zeros((2, 5, 5), np.uint8))


def test_feature_vectors_travel_as_lists_of_numbers() -> None:
    from aimass.protocol.codecs import encode_input, encode_inputs

    # A flat list is one vector; a list of lists or 1-D arrays, one vector each.
    assert encode_inputs([13.2, 1.78, 14]) == {"inputs": [{"features": [13.2, 1.78, 14]}]}
    assert encode_inputs([[1, 2], np.array([0.5, 1.5])]) == {
        "inputs": [{"features": [1, 2]}, {"features": [0.5, 1.5]}]
    }
    assert encode_input(np.array([7, 8], dtype=np.int32)) == {"features": [7, 8]}
    assert encode_input([[1, 2], [3, 4]]) == {"features": [[1, 2], [3, 4]]}
    # Images keep their encodings.
    assert "tensor" in encode_input(np.zeros((4, 4), np.uint8))
    assert encode_input(np.zeros((2, 3), np.float32))["image"][:6] == b"\x93NUMPY"
    for bad in ([], ["a"], [[1, 2], [3]]):
        with pytest.raises(TypeError, match="as features"):
            encode_input(bad)


def test_features_become_the_model_input_dtype() -> None:
    from aimass.worker.preprocess import features_to_input

    spec = TensorSpec(name="features", dtype="float32", shape=[-1, 3])
    array = features_to_input([1, 2.5, 3], spec, "m", max_bytes=1000)
    assert array.dtype == np.float32 and array.tolist() == [1.0, 2.5, 3.0]
    tokens = TensorSpec(name="tokens", dtype="int32", shape=[-1, -1])
    assert features_to_input([4, 5], tokens, "m", 1000).dtype == np.int32
    assert features_to_input([[4, 5]], tokens, "m", 1000).shape == (1, 2)
    with pytest.raises(InvalidInput, match="INT32 data must be integers"):
        features_to_input([4.5], tokens, "m", 1000)
    with pytest.raises(InvalidInput, match="do not fit INT32"):
        features_to_input([2**40], tokens, "m", 1000)
    with pytest.raises(InvalidInput, match="holds 2 values, but shape \\[3\\] needs 3"):
        features_to_input([1, 2], spec, "m", 1000)
    with pytest.raises(InvalidInput, match="ragged"):
        features_to_input(
            [[1, 2], [3]], TensorSpec(name="t", dtype="int64", shape=[-1, -1, -1]), "m", 1000
        )
