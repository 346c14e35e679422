"""The `sapiens2` command line: version, model listing, download and inspect."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import sapiens2
from sapiens2.cli import main
from tests.conftest import official_layout, write_sparse_safetensors


def test_version_from_the_installed_script():
    out = subprocess.run([sys.executable, "-m", "sapiens2.cli", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"sapiens2 {sapiens2.__version__}"


def test_models_lists_the_zoo_and_local_files(shared, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SAPIENS_CHECKPOINT_ROOT", str(tmp_path))
    (tmp_path / "pose").mkdir()
    write_sparse_safetensors(official_layout(shared, "sapiens2_0.4b_pose"), tmp_path / "pose" / "sapiens2_0.4b_pose.safetensors")
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert len([line for line in out.splitlines() if line.startswith(("sapiens2-", "sapiens-", "rtmdet-"))]) == len(sapiens2.MODELS)
    pose_line = next(line for line in out.splitlines() if line.startswith("sapiens2-pose-0.4b "))
    assert str(tmp_path / "pose" / "sapiens2_0.4b_pose.safetensors") in pose_line
    assert "facebook/sapiens2-pretrain-1b-4k" in out and "4096x3072" in out


def test_download_offline_fails_with_the_how_to(tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    assert main(["download", "sapiens2-normal-1b"]) == 1
    assert "sapiens2_1b_normal.safetensors" in capsys.readouterr().err
    assert main(["download", "sapiens2-normal-2b"]) == 2


def test_inspect_reports_each_file_and_fails_on_bad_ones(shared, tmp_path, capsys):
    good = write_sparse_safetensors(official_layout(shared, "sapiens2_1b_4k_pretrain"), tmp_path / "a.safetensors")
    bad = tmp_path / "b.safetensors"
    bad.write_bytes(b"\x00" * 3)
    assert main(["inspect", str(good), str(bad)]) == 1
    captured = capsys.readouterr()
    assert "Sapiens2 1b-4k pretrain backbone" in captured.out
    assert "b.safetensors" in captured.err


def test_convert_pth_to_safetensors(tmp_path, capsys):
    import torch

    torch.save({"state_dict": {"a.weight": torch.ones(2, 3)}, "meta": {"epoch": 3}}, tmp_path / "m.pth")
    assert main(["convert", str(tmp_path / "m.pth")]) == 0
    from safetensors.torch import load_file

    assert load_file(tmp_path / "m.safetensors")["a.weight"].sum() == 6
    (tmp_path / "junk.pth").write_bytes(b"not a zip")
    assert main(["convert", str(tmp_path / "junk.pth")]) == 1
    assert "junk.pth" in capsys.readouterr().err


def _coco_gt(tmp_path, n_people=2):
    import json

    import numpy as np

    rng = np.random.default_rng(0)
    images, anns = [], []
    for i in range(3):
        images.append({"id": i, "file_name": f"img{i}.png", "height": 120, "width": 160})
        for j in range(n_people):
            kp = np.concatenate([rng.uniform(20, 100, (17, 2)), np.full((17, 1), 2.0)], axis=1)
            x0, y0 = kp[:, :2].min(0)
            x1, y1 = kp[:, :2].max(0)
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": 1, "iscrowd": 0,
                         "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                         "area": float((x1 - x0) * (y1 - y0)), "keypoints": kp.ravel().tolist(),
                         "num_keypoints": 17})
    gt = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    return gt


def test_eval_pose_perfect_predictions_score_one(tmp_path, capsys):
    import json

    gt = _coco_gt(tmp_path)
    preds = [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
             for a in gt["annotations"]]
    (tmp_path / "pred.json").write_text(json.dumps(preds))
    assert main(["eval", "pose", "--gt", str(tmp_path / "gt.json"), "--pred", str(tmp_path / "pred.json"),
                 "--out", str(tmp_path / "metrics.json")]) == 0
    assert "AP" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert json.dumps(metrics).count("1.0") > 0


def test_eval_pose_with_a_model_predicts_then_scores(tmp_path, capsys):
    import cv2
    import numpy as np
    import torch
    from safetensors.torch import save_file

    from sapiens2.models import BackboneConfig, PoseHeadConfig, build_model

    _coco_gt(tmp_path, n_people=1)
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"img{i}.png"), np.full((120, 160, 3), 90, np.uint8))
    torch.manual_seed(0)
    net = build_model(BackboneConfig(embed_dim=32, depth=2, num_heads=2), "pose",
                      PoseHeadConfig(32, (8, 8), conv_channels=(8, 8, 8), num_keypoints=17))
    save_file(net.state_dict(), tmp_path / "tiny17.safetensors")
    code = main(["eval", "pose", "--gt", str(tmp_path / "gt.json"), "--model", str(tmp_path / "tiny17.safetensors"),
                 "--images", str(tmp_path), "--gt-boxes", "--out", str(tmp_path / "m.json")])
    assert code == 0
    assert (tmp_path / "m.predictions.json").exists() and (tmp_path / "m.json").exists()


def test_eval_needs_predictions_or_a_model(tmp_path, capsys):
    _coco_gt(tmp_path)
    assert main(["eval", "pose", "--gt", str(tmp_path / "gt.json")]) == 2
    assert main(["eval", "seg", "--gt", str(tmp_path), "--model", "x"]) == 2


def test_eval_pose_with_a_v1_model(tmp_path, capsys):
    """`eval pose --model` takes a Sapiens v1 COCO-17 model as it takes a Sapiens2 one."""
    import json

    import cv2
    import numpy as np
    import torch
    from safetensors.torch import save_file

    from sapiens2.models.sapiens1 import Sapiens1Config, V1HeadConfig, build_sapiens1

    _coco_gt(tmp_path, n_people=1)
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"img{i}.png"), np.full((120, 160, 3), 90, np.uint8))
    torch.manual_seed(0)
    net = build_sapiens1(Sapiens1Config(64, 2, 1, patch_padding=2, pos_grid=(4, 3)), "pose",
                         V1HeadConfig(64, (8, 8), (8,), 17))
    save_file(net.state_dict(), tmp_path / "v1_pose17.safetensors")
    code = main(["eval", "pose", "--gt", str(tmp_path / "gt.json"), "--model", str(tmp_path / "v1_pose17.safetensors"),
                 "--images", str(tmp_path), "--gt-boxes", "--out", str(tmp_path / "m.json")])
    assert code == 0, capsys.readouterr().err
    preds = json.loads((tmp_path / "m.predictions.json").read_text())
    assert len(preds) == 3 and len(preds[0]["keypoints"]) == 17 * 3
    assert "coco17" in json.loads((tmp_path / "m.json").read_text())["metrics"]


def test_eval_seg_28_classes_names_v1_parts_and_depth_runs(tmp_path, capsys):
    import numpy as np

    for name in ("pred", "gt"):
        (tmp_path / name).mkdir()
    labels = np.arange(28, dtype=np.uint8).repeat(4).reshape(8, 14)
    np.save(tmp_path / "pred" / "a_seg.npy", labels)
    np.save(tmp_path / "gt" / "a.npy", labels)
    assert main(["eval", "seg", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"),
                 "--num-classes", "28"]) == 0
    out = capsys.readouterr().out
    assert "Left_Foot" in out and "Eyeglass" not in out and "mIoU" in out
    (tmp_path / "pred" / "a_seg.npy").unlink()
    np.save(tmp_path / "pred" / "a_reldepth.npy", np.full((8, 14), 2.0, np.float32))
    np.save(tmp_path / "gt" / "a.npy", np.full((8, 14), 5.0, np.float32))
    assert main(["eval", "depth", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt")]) == 0
    out = capsys.readouterr().out
    assert "abs_rel" in out and "alignment: median" in out
    assert main(["eval", "depth", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"),
                 "--align", "scale"]) == 1
    assert "alignment must be one of" in capsys.readouterr().err


def test_the_cli_reference_in_docs_is_the_parser_s_own():
    """docs/CLI.md is generated (`python -m sapiens2.cli_reference > docs/CLI.md`); regenerate it when this fails."""
    from sapiens2.cli_reference import render

    doc = Path(__file__).resolve().parents[1] / "docs" / "CLI.md"
    assert doc.read_text(encoding="utf-8") == render()


def test_every_option_of_every_command_has_help():
    import argparse

    from sapiens2.cli import build_parser
    from sapiens2.cli_reference import _subcommands

    parser = build_parser()
    missing = []
    for name, sub in _subcommands(parser).items():
        assert sub.description, f"{name} has no description"
        for action in sub._actions:
            if not action.help and not isinstance(action, argparse._HelpAction):
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []


def test_demo_without_network_or_weights_fails_fast_with_one_line_per_file(tmp_path):
    """No hub (a closed local port) and no weights: a few seconds, one line per missing file, one fix, exit 2."""
    import os
    import time

    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf"),
           "SAPIENS_CHECKPOINT_ROOT": str(tmp_path / "none"), "SAPIENS_V1_CHECKPOINT_ROOT": str(tmp_path / "none1")}
    env.pop("HF_HUB_OFFLINE", None)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", "from sapiens2.cli import main; raise SystemExit(main(['demo']))"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    missing = [line for line in lines if line.startswith("missing: ")]
    assert [m.split()[2] for m in missing] == ["(sapiens2-pose-0.4b):", "(sapiens2-seg-0.4b):", "(sapiens2-normal-0.4b):",
                                              "(rtmdet-m-person):"]
    fix = lines[-1]
    assert "sapiens2 download sapiens2-pose-0.4b" in fix and "hf download" in fix and "HF_HUB_OFFLINE=1" in fix
    assert "Retrying" not in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "sapiens2_demo").exists()
    assert elapsed < 30  # about 2 s on an idle machine; the hub is tried once, not once per file with retries
