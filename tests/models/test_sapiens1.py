"""Sapiens v1: golden outputs, every released layout, and generation mix-ups."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file, save_file

import sapiens2
from sapiens2.models.layout_v1 import infer_v1_layout, official_v1_layout
from sapiens2.models.sapiens1 import Sapiens1Config, V1HeadConfig, build_sapiens1
from sapiens2.zoo import MODELS
from tests.conftest import SHARED, official_layout, write_sparse_safetensors

V1_STEMS = sorted(p.stem for p in (SHARED / "spec" / "keys_v1").glob("*.json")) if SHARED.is_dir() else []
TINY = Sapiens1Config(embed_dim=64, depth=6, num_heads=4, mlp_hidden=256)


def _fixture_model(case: dict) -> torch.nn.Module:
    if case["kind"] == "backbone":
        return build_sapiens1(replace(TINY, with_cls_token=True, pos_grid=(8, 8)), "pretrain")
    head = case["head"]
    cfg = replace(TINY, patch_padding=case["patch_cfg"].get("padding"), pos_grid=(16, 12))
    out = head.get("out_channels", head.get("num_classes"))
    return build_sapiens1(cfg, case["task"], V1HeadConfig(64, tuple(head["deconv_out_channels"]),
                                                           tuple(head["conv_out_channels"]), out))


def _cases():
    if not SHARED.is_dir():
        return []
    return json.loads((SHARED / "fixtures_v1" / "manifest.json").read_text())["cases"]


@pytest.mark.parametrize("case", _cases(), ids=lambda c: c["name"])
def test_v1_fixture_reproduced(shared, case):
    folder = shared / "fixtures_v1" / case["name"]
    weights = load_file(folder / "weights.safetensors")
    model = _fixture_model(case)
    model.load_state_dict(weights, strict=True)
    with torch.no_grad():
        out = model.eval()(load_file(folder / "input.safetensors")["input"])
    torch.testing.assert_close(out, load_file(folder / "expected.safetensors")["output_0"], rtol=0, atol=1e-4)


@pytest.mark.parametrize("case", _cases(), ids=lambda c: c["name"])
def test_v1_fixture_layout_is_inferred(shared, case):
    weights = load_file(shared / "fixtures_v1" / case["name"] / "weights.safetensors")
    layout = infer_v1_layout({k: tuple(v.shape) for k, v in weights.items()}, num_heads=4)
    expected = _fixture_model(case)
    assert layout.task == ("pretrain" if case["kind"] == "backbone" else case["task"])
    assert {k: v.shape for k, v in layout.build().state_dict().items()} == {
        k: v.shape for k, v in expected.state_dict().items()}


@pytest.mark.parametrize("stem", V1_STEMS)
def test_every_v1_layout_loads_strictly(shared, tmp_path, stem):
    keys = official_layout(shared, stem)
    path = write_sparse_safetensors(keys, tmp_path / f"{stem}.safetensors")
    model = sapiens2.load(path, device="meta")
    assert set(model.state_dict()) == set(keys)
    layout = sapiens2.inspect(path)
    assert layout.generation == 1 and layout.is_official()
    kind = stem.split("_")[-1]
    assert layout.keypoints == {"pose17": 17, "pose133": 133, "pose308": 308}.get(kind)


def test_official_v1_names_resolve_to_their_layout():
    names = [m for m in MODELS.values() if m.generation == 1]
    assert {m.name for m in names} >= {"sapiens-pose-1b-coco17", "sapiens-pose-2b-wholebody133", "sapiens-seg-1b",
                                       "sapiens-depth-0.3b", "sapiens-normal-2b", "sapiens-pretrain-0.6b"}
    coco = MODELS["sapiens-pose-1b-coco17"]
    assert coco.repo == "noahcao/sapiens-pose-coco" and coco.keypoints == 17
    assert official_v1_layout("1b", "pose", 17).head.out_channels == 17


def test_v1_file_under_a_v1_name_with_other_keypoints(shared, tmp_path):
    # A .safetensors conversion of the released COCO-17 .pth keeps its stem, and so its identity.
    path = write_sparse_safetensors(official_layout(shared, "sapiens_1b_pose133"),
                                    tmp_path / "sapiens_1b_coco_best_coco_AP_821.safetensors")
    with pytest.raises(sapiens2.CheckpointMismatchError, match=r"expected sapiens-pose-1b-coco17 .*17 keypoints.*133 keypoints"):
        sapiens2.load(path, device="meta")


def test_sapiens2_file_under_a_v1_name(shared, tmp_path):
    path = write_sparse_safetensors(official_layout(shared, "sapiens2_1b_seg"),
                                    tmp_path / "sapiens_1b_goliath_best_goliath_mIoU_7994_epoch_151.safetensors")
    with pytest.raises(sapiens2.CheckpointMismatchError, match=r"expected sapiens-seg-1b \(Sapiens v1.*looks like Sapiens2 1b seg"):
        sapiens2.load(path, device="meta")


def test_v1_round_trip_through_load(tmp_path):
    torch.manual_seed(0)
    model = build_sapiens1(replace(TINY, pos_grid=(4, 3), patch_padding=2), "pose",
                           V1HeadConfig(64, (16, 16), (16, 16), 17)).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.1)
    save_file(model.state_dict(), tmp_path / "v1.safetensors")
    # Head count is not in the shapes: for a custom width it defaults to embed // 64, so give the official one.
    loaded = sapiens2.load(tmp_path / "v1.safetensors")
    assert loaded.backbone.config.patch_padding == 2 and loaded.head.final_layer.out_channels == 17
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        assert loaded(x).shape == model(x).shape == (1, 17, 16, 12)


def test_v1_pth_with_numpy_meta_loads_only_with_opt_in(tmp_path):
    import numpy as np

    model = build_sapiens1(replace(TINY, pos_grid=(4, 3)), "depth", V1HeadConfig(64, (8,) * 4, (8, 8), 1)).eval()
    meta = {"dataset_meta": {"sigmas": np.linspace(0.1, 0.2, 17)}, "epoch": np.int64(88), "seed": 0}
    torch.save({"state_dict": model.state_dict(), "meta": meta}, tmp_path / "sapiens_tiny_depth.pth")
    with pytest.raises(sapiens2.UnsafeCheckpointError, match="allow_pickle=True"):
        sapiens2.load(tmp_path / "sapiens_tiny_depth.pth")
    loaded = sapiens2.load(tmp_path / "sapiens_tiny_depth.pth", allow_pickle=True)
    assert loaded.task == "depth" and loaded.backbone.config.patch_padding is None
    assert torch.equal(loaded.decode_head.conv_seg.weight, model.decode_head.conv_seg.weight)


def test_lite_programs_need_explicit_opt_in(tmp_path):
    model = build_sapiens1(replace(TINY, pos_grid=(4, 3)), "normal", V1HeadConfig(64, (8, 8, 8), (8, 8), 3)).eval()
    x = torch.randn(1, 3, 64, 48)
    traced = torch.jit.trace(model, x)
    path = tmp_path / "sapiens_0.3b_normal_render_people_epoch_66_torchscript.pt2"
    traced.save(str(path))
    with pytest.raises(sapiens2.UnsafeCheckpointError, match="carries code.*allow_code=True"):
        sapiens2.load(path)
    loaded = sapiens2.load(path, allow_code=True)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_export_program_loads_with_opt_in(tmp_path):
    model = build_sapiens1(replace(TINY, pos_grid=(4, 3)), "depth", V1HeadConfig(64, (8,) * 4, (8, 8), 1)).eval()
    x = torch.randn(1, 3, 64, 48)
    path = tmp_path / "sapiens_0.3b_render_people_epoch_100_bfloat16.pt2"
    torch.export.save(torch.export.export(model, (x,)), str(path))
    loaded = sapiens2.load(path, allow_code=True)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    assert getattr(loaded, "task", None) == "depth"


def test_safetensors_metadata_settles_what_v1_shapes_cannot_tell(tmp_path):
    """A custom-width v1 file does not show its head count, nor a 3-class seg head its task: files that
    `sapiens2 train` writes carry both in their metadata, and the loader uses them."""
    from safetensors.torch import save_file

    import sapiens2
    from sapiens2.models.sapiens1 import Sapiens1Config, V1HeadConfig, build_sapiens1

    torch.manual_seed(0)
    net = build_sapiens1(Sapiens1Config(32, 2, 4, pos_grid=(4, 3)), "seg", V1HeadConfig(32, (8,), (8,), 3)).eval()
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    plain, tagged = tmp_path / "plain.safetensors", tmp_path / "tagged.safetensors"
    save_file(state, str(plain))
    save_file(state, str(tagged), metadata={"task": "seg", "num_heads": "4"})
    guessed = sapiens2.inspect(plain)
    assert (guessed.task, guessed.backbone.num_heads) == ("normal", 1)
    told = sapiens2.inspect(tagged)
    assert (told.task, told.backbone.num_heads) == ("seg", 4)
    model = sapiens2.load(tagged)
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        assert torch.allclose(model(x), net(x), atol=1e-6)


def test_random_init_for_training_from_scratch():
    from sapiens2.models.sapiens1 import Sapiens1Backbone, Sapiens1Config

    torch.manual_seed(0)
    bb = Sapiens1Backbone(Sapiens1Config(64, 2, 2, with_cls_token=True, pos_grid=(8, 8))).init_weights()
    sd = bb.state_dict()
    assert torch.equal(sd["layers.0.ln1.weight"], torch.ones(64)) and torch.equal(sd["ln1.bias"], torch.zeros(64))
    assert torch.equal(sd["layers.1.attn.qkv.bias"], torch.zeros(192))
    for key in ("layers.0.ffn.layers.0.0.weight", "pos_embed", "cls_token"):
        assert 0.015 < float(sd[key].std()) < 0.025
