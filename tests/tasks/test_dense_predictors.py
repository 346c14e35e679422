"""Dense predictors on tiny networks: output sizes, batching, labels and palette, pipelines, matting loading."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import sapiens2
from sapiens2.models import build_model, official_head_config
from sapiens2.tasks import (
    Albedo,
    DensePipeline,
    Matting,
    Normals,
    Pointmap,
    Segmenter,
    predictor_for,
    run_tasks,
)
from sapiens2.tasks.models import load_network
from sapiens2.body_parts import seg29
from tests.conftest import random_photo
from tests.tasks._dense_tiny import (
    POINTMAP_INPUT,
    SMALL_INPUT,
    ConstantMatte,
    HalvesLogits,
    tiny_model,
)

SIZES = [(333, 517), (517, 333)]


@pytest.fixture(scope="module")
def predictors():
    return {
        "seg": Segmenter(tiny_model("seg"), input_size=SMALL_INPUT, probabilities=True),
        "normal": Normals(tiny_model("normal"), input_size=SMALL_INPUT),
        "pointmap": Pointmap(tiny_model("pointmap"), input_size=POINTMAP_INPUT),
        "albedo": Albedo(tiny_model("albedo"), input_size=SMALL_INPUT),
        "matting": Matting(tiny_model("matting"), input_size=SMALL_INPUT),
    }


@pytest.mark.parametrize("size", SIZES)
def test_every_output_has_the_photo_size(predictors, size):
    img = random_photo(*size)
    h, w = size
    seg = predictors["seg"](img)
    assert seg.labels.shape == (h, w) and seg.labels.dtype == np.uint8
    assert seg.probabilities.shape == (h, w, 29)
    np.testing.assert_allclose(seg.probabilities.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(seg.probabilities.argmax(-1), seg.labels)
    normals = predictors["normal"](img).normals
    assert normals.shape == (h, w, 3) and normals.dtype == np.float32
    assert np.linalg.norm(normals, axis=-1).max() <= 1 + 1e-5  # unit at network size; resizing only shortens
    assert predictors["pointmap"](img).points.shape == (h, w, 3)
    albedo = predictors["albedo"](img).albedo
    assert albedo.shape == (h, w, 3) and albedo.min() >= 0 and albedo.max() <= 1
    matte = predictors["matting"](img)
    assert matte.alpha.shape == (h, w) and matte.foreground.shape == (h, w, 3)
    assert 0 <= matte.alpha.min() and matte.alpha.max() <= 1


def test_renormalize_gives_unit_normals():
    img = random_photo(333, 517)
    n = Normals(tiny_model("normal"), input_size=SMALL_INPUT, renormalize=True)(img).normals
    np.testing.assert_allclose(np.linalg.norm(n, axis=-1), 1.0, atol=1e-5)


def test_chunked_argmax_equals_the_full_argmax(predictors):
    img = random_photo(517, 333, seed=3)
    fast = Segmenter(predictors["seg"].network, input_size=SMALL_INPUT)(img)
    np.testing.assert_array_equal(fast.labels, predictors["seg"](img).labels)
    assert fast.probabilities is None


def test_batches_give_the_same_results_as_single_images():
    imgs = [random_photo(333, 517, 1), random_photo(517, 333, 2), random_photo(100, 90, 3)]
    one = Albedo(tiny_model("albedo"), input_size=SMALL_INPUT, batch_size=1)(imgs)
    three = Albedo(tiny_model("albedo"), input_size=SMALL_INPUT, batch_size=3)(imgs)
    for a, b in zip(one, three):
        np.testing.assert_allclose(a.albedo, b.albedo, atol=1e-5)


def test_paths_are_decoded(tmp_path, predictors):
    from sapiens2.io.writers import write_image

    img = random_photo(40, 30)
    path = write_image(tmp_path / "p.png", img)
    np.testing.assert_array_equal(predictors["seg"](path).labels, predictors["seg"](img).labels)


def test_label_ids_and_palette_come_from_seg29_json(shared):
    spec = json.loads((shared / "spec" / "data" / "seg29.json").read_text())
    classes = seg29()
    assert list(classes.names) == spec["class_names"] and len(classes) == 29
    np.testing.assert_array_equal(classes.palette, np.array(spec["palette_rgb"], np.uint8))
    hair, torso = classes.index("Hair"), classes.index("torso")
    assert (hair, torso) == (4, 22)
    seg = Segmenter(HalvesLogits(hair, torso), input_size=SMALL_INPUT)(random_photo(30, 40))
    assert (seg.labels[:, :20] == hair).all() and (seg.labels[:, 20:] == torso).all()
    assert seg.mask_of("Hair").sum() == 30 * 20 and seg.foreground.all()
    np.testing.assert_array_equal(seg.colors()[0, 0], spec["palette_rgb"][4])


def test_matting_outputs_are_split_and_clamped():
    result = Matting(ConstantMatte(), input_size=SMALL_INPUT)(random_photo(50, 70))
    np.testing.assert_allclose(result.alpha, 0.5)
    np.testing.assert_allclose(result.foreground, np.broadcast_to([0.1, 0.2, 0.3], (50, 70, 3)), atol=1e-7)
    rgba = result.rgba(random_photo(50, 70))
    assert rgba.shape == (50, 70, 4) and (np.abs(rgba[..., 3].astype(int) - 128) <= 1).all()


def test_pipeline_resizes_once_per_geometry_and_attaches_the_seg_mask(predictors):
    pipeline = DensePipeline(predictors)
    # seg and matting both shrink with INTER_AREA; normal and albedo share the padded input; pointmap feeds
    # another input size here.
    assert pipeline.shared_inputs((333, 517)) == 3
    img = random_photo(333, 517)
    out = pipeline([img, img])
    assert len(out) == 2 and set(out[0]) == set(predictors)
    np.testing.assert_array_equal(out[0]["normal"].mask, out[0]["seg"].foreground)
    np.testing.assert_allclose(out[0]["normal"].normals, predictors["normal"](img).normals)
    single = run_tasks(img, {"albedo": predictors["albedo"]})
    assert single["albedo"].mask is None


def test_predictor_for_names_every_task():
    from sapiens2.task_table import TASKS
    from sapiens2.tasks import PREDICTORS

    assert PREDICTORS.keys() == TASKS.keys()
    assert predictor_for("seg") is Segmenter and predictor_for("Segmentation") is Segmenter
    assert predictor_for("matting") is Matting
    with pytest.raises(ValueError, match="unknown task 'dance'"):
        predictor_for("dance")


def test_sizes_map_to_official_names():
    with pytest.raises(ValueError, match="no official matting model of size '0.4b'"):
        load_network("matting", "0.4b")
    with pytest.raises(sapiens2.CheckpointNotFoundError):
        load_network("albedo", "5b")  # offline in tests: a clear not-found error, no download


def test_matting_checkpoint_loads_strictly(tmp_path):
    model = tiny_model("matting", seed=1)
    path = tmp_path / "tiny_matting.safetensors"
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, path)
    loaded = sapiens2.load(path)
    x = torch.randn(1, 3, *SMALL_INPUT)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), model(x))
    assert Matting(path, input_size=SMALL_INPUT)(random_photo(20, 20)).alpha.shape == (20, 20)
    del state["decode_head.conv_layers.3.bias"]
    save_file(state, tmp_path / "damaged.safetensors")
    with pytest.raises(sapiens2.CheckpointMismatchError, match="conv_layers.3.bias"):
        sapiens2.load(tmp_path / "damaged.safetensors")
    seg_path = tmp_path / "seg.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_model("seg").state_dict().items()}, seg_path)
    with pytest.raises(ValueError, match="holds a 'seg' model, not 'matting'"):
        Matting(seg_path, input_size=SMALL_INPUT)


def test_official_matting_head_has_the_release_widths():
    with torch.device("meta"):
        model = build_model("1b", "matting")
    head = official_head_config("1b", "matting")
    assert (head.upsample_channels, head.conv_channels, head.out_channels) == ((768, 512, 256, 128), (64, 32, 16), 4)
    assert sum(p.numel() for p in model.decode_head.parameters()) == pytest.approx(83.86e6, rel=1e-3)
    assert model.decode_head.conv_matting.weight.shape == (4, 16, 1, 1)


def test_unknown_matting_names_are_refused():
    with pytest.raises(sapiens2.UnknownModelError, match="sapiens2-matting-1b"):
        sapiens2.load("sapiens2-matting-2b")


def test_a_stacked_array_is_a_batch_and_a_matte_can_mask():
    imgs = np.stack([random_photo(40, 30, 1), random_photo(40, 30, 2)])
    predictors = {"matting": Matting(ConstantMatte(), input_size=SMALL_INPUT),
                  "albedo": Albedo(tiny_model("albedo"), input_size=SMALL_INPUT)}
    out = run_tasks(imgs, predictors, mask_from="matting")
    assert len(out) == 2
    np.testing.assert_array_equal(out[1]["albedo"].mask, out[1]["matting"].alpha >= 0.5)
