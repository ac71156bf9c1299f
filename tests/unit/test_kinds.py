"""What each kind of model does with a job, without a session or a queue: the inputs a
job becomes, and the result fields a batch's outputs become."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from aimass.protocol.codecs import encode_image
from aimass.protocol.contract import parse_job
from aimass.protocol.errors import InvalidInput, ModelError
from aimass.protocol.manifest import Manifest, ModelKind
from aimass.worker.batcher import BatchOutput
from aimass.worker.kinds import Classifier, Generator, Limits, logic_for, seed_for
from tests.support.tiny_models import build_repository, row_image

pytestmark = pytest.mark.unit

LIMITS = Limits(max_payload_bytes=1 << 20, max_image_pixels=1 << 20)


@pytest.fixture(scope="module")
def manifests(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Manifest]:
    root = build_repository(tmp_path_factory.mktemp("repo"))
    return {name: Manifest.read(root / name / "1") for name in ("tiny", "tiny-gan")}


def output(*arrays: np.ndarray) -> BatchOutput:
    return BatchOutput(list(arrays), queue_ms=0.0, inference_ms=0.0, batch_size=1, run_size=1)


def classify(**kwargs: object) -> object:
    return parse_job(ModelKind.classify, {"model": "tiny", **kwargs})


def test_each_kind_gets_its_logic(manifests: dict[str, Manifest]) -> None:
    assert isinstance(logic_for(manifests["tiny"]), Classifier)
    assert isinstance(logic_for(manifests["tiny-gan"]), Generator)


def test_images_and_pixel_tensors_become_one_scaled_batch(manifests: dict[str, Manifest]) -> None:
    logic = Classifier(manifests["tiny"])
    png = base64.b64encode(encode_image(row_image(2))).decode()
    pixels = row_image(5)
    job = classify(
        inputs=[
            {"image": png},
            {
                "tensor": {
                    "dtype": "uint8",
                    "shape": [8, 8],
                    "data": base64.b64encode(pixels.tobytes()).decode(),
                }
            },
        ]
    )
    feeds, size, _ = logic.prepare(job, LIMITS)
    image = feeds["image"]
    assert size == 2 and image.shape == (2, 8, 8, 1) and image.dtype == np.float32
    np.testing.assert_allclose(image[0, :, :, 0], row_image(2) / 255.0)
    np.testing.assert_allclose(image[1, :, :, 0], pixels / 255.0)
    batch = classify(
        batch={
            "dtype": "uint8",
            "shape": [3, 8, 8],
            "data": base64.b64encode(np.stack([row_image(i) for i in range(3)]).tobytes()).decode(),
        }
    )
    feeds, size, _ = logic.prepare(batch, LIMITS)
    assert size == 3 and feeds["image"].shape == (3, 8, 8, 1)


def test_a_bad_input_names_its_place_in_the_job(manifests: dict[str, Manifest]) -> None:
    logic = Classifier(manifests["tiny"])
    png = base64.b64encode(encode_image(row_image(2))).decode()
    job = classify(inputs=[{"image": png}, {"image": base64.b64encode(b"nope").decode()}])
    with pytest.raises(InvalidInput, match=r"^inputs\[1\]: "):
        logic.prepare(job, LIMITS)


def test_scores_become_the_top_k_labels_in_order(manifests: dict[str, Manifest]) -> None:
    logic = Classifier(manifests["tiny"])
    scores = np.array([[0.1, 0.5, 0.0, 0.3, 0.0, 0.0, 0.1, 0.0]], np.float32)
    one = [{"image": base64.b64encode(encode_image(row_image(1))).decode()}]
    fields = logic.finish(classify(inputs=one, top_k=2), None, output(scores))
    assert fields == {
        "predictions": [
            [
                {"label": "1", "index": 1, "score": pytest.approx(0.5)},
                {"label": "3", "index": 3, "score": pytest.approx(0.3)},
            ]
        ]
    }
    with pytest.raises(ModelError, match="NaN or infinite"):
        logic.finish(classify(inputs=one), None, output(np.full((1, 8), np.nan, np.float32)))


def test_a_generate_job_without_a_seed_is_the_same_each_time_it_runs(
    manifests: dict[str, Manifest],
) -> None:
    logic = Generator(manifests["tiny-gan"])
    job = parse_job(ModelKind.generate, {"model": "tiny-gan", "count": 3})
    first, size, (labels, seed) = logic.prepare(job, LIMITS, "job-1")
    again, _, (labels_again, seed_again) = logic.prepare(job, LIMITS, "job-1")
    other, _, _ = logic.prepare(job, LIMITS, "job-2")
    assert size == 3 and seed == seed_again == seed_for("job-1") and labels == labels_again
    np.testing.assert_array_equal(first["latent"], again["latent"])
    assert not np.array_equal(first["latent"], other["latent"])
    bad = parse_job(ModelKind.generate, {"model": "tiny-gan", "count": 1, "labels": [8]})
    with pytest.raises(InvalidInput, match=r"labels \[8\] are out of range.*0 to 7"):
        logic.prepare(bad, LIMITS, "j")


def test_generated_images_come_back_as_png_or_tensor(manifests: dict[str, Manifest]) -> None:
    logic = Generator(manifests["tiny-gan"])
    images = np.tanh(np.linspace(-2, 2, 2 * 64, dtype=np.float32)).reshape(2, 8, 8, 1)
    for fmt in ("png", "tensor"):
        job = parse_job(ModelKind.generate, {"model": "tiny-gan", "count": 2, "format": fmt})
        fields = logic.finish(job, ([1, 2], 7), output(images))
        assert fields["labels"] == [1, 2] and fields["seed"] == 7
        assert len(fields["images"]) == 2
        first = fields["images"][0]
        if fmt == "png":
            assert base64.b64decode(first).startswith(b"\x89PNG")
        else:
            assert first["dtype"] == "float32" and first["shape"] == [8, 8, 1]


def test_a_generator_spec_says_what_its_generator_is_conditioned_on() -> None:
    from aimass.protocol.manifest import GeneratorSpec

    old = GeneratorSpec.model_validate({"latent_size": 4, "class_count": 8})
    assert old.class_conditioned and old.label_input == "label"  # as written before
    free = GeneratorSpec.model_validate({"latent_size": 4})
    assert not free.class_conditioned and free.label_input is None
    assert free.condition_input is None
    vector = GeneratorSpec(latent_size=4, condition_input="style", condition_size=3)
    assert not vector.class_conditioned and vector.condition_size == 3
    with pytest.raises(ValueError, match="condition input needs its condition_size"):
        GeneratorSpec(latent_size=4, condition_input="style")
