"""The benchmark's inputs for a model that takes no image: feature vectors, sent as the
docs recommend (the client's ``features``) and as a naive worker takes them."""

from __future__ import annotations

import base64

import numpy as np

from aimass.bench.load import float_tensor_b64, recommended_input, synthetic_inputs
from aimass.protocol.codecs import encode_inputs


def test_a_tabular_model_gets_float32_feature_vectors() -> None:
    vectors = synthetic_inputs([13], count=4, seed=1)
    assert [(v.shape, v.dtype) for v in vectors] == [((13,), np.float32)] * 4
    assert not np.array_equal(vectors[0], vectors[1])
    np.testing.assert_array_equal(vectors[0], synthetic_inputs([13], 1, seed=1)[0])
    # aimass: the vector as it is, which the client sends as a features list.
    sent = recommended_input(vectors[0])
    assert isinstance(sent, np.ndarray)
    assert encode_inputs([sent]) == {"inputs": [{"features": vectors[0].tolist()}]}
    # naive: the float32 bytes as they are, not divided by 255 as pixels are.
    raw = base64.b64decode(float_tensor_b64(vectors[0]))
    np.testing.assert_array_equal(np.frombuffer(raw, np.float32), vectors[0])


def test_an_image_model_still_gets_pixels() -> None:
    (image,) = synthetic_inputs([8, 8, 1], count=1, seed=0)
    assert image.dtype == np.uint8 and image.shape == (8, 8, 1)
    raw = base64.b64decode(float_tensor_b64(image))
    np.testing.assert_allclose(np.frombuffer(raw, np.float32), image.reshape(-1) / 255.0)
