"""Tiny datasets on disk for every task, and tiny-model configs that train them in seconds on CPU."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from sapiens2.keypoints import keypoints308
from sapiens2.task_table import TASKS as TASK_TABLE
from sapiens2.train.v1 import V1_TRAIN_TASKS

H, W = 64, 48  # network input for the tests (a 4 x 3 patch grid)
IMG_H, IMG_W = 80, 60
TASKS = tuple(name for name, task in TASK_TABLE.items() if 2 in task.generations)  # Sapiens2 can train them

TINY_BACKBONE = {"embed_dim": 32, "depth": 2, "num_heads": 2, "ffn_hidden": 64, "n_storage_tokens": 2}
TINY_HEADS = {
    "pose": {"deconv_channels": [16, 16], "conv_channels": [16], "conv_kernels": [1]},
    "seg": {"deconv_channels": [16, 16, 16, 16], "conv_channels": [16], "conv_kernels": [1]},
    "normal": {"upsample_channels": [16, 16, 8, 8], "conv_channels": [8], "conv_kernels": [3]},
    "albedo": {"upsample_channels": [16, 16, 8, 8], "conv_channels": [8], "conv_kernels": [3]},
    "matting": {"upsample_channels": [16, 16, 8, 8], "conv_channels": [8], "conv_kernels": [3]},
    "pointmap": {"upsample_channels": [16, 16, 8, 8], "conv_channels": [8], "conv_kernels": [3],
                 "scale_conv_channels": [8], "scale_conv_kernels": [1], "scale_mlp": [0, 16, 1]},
}


def _image(rng: np.random.Generator, h: int = IMG_H, w: int = IMG_W) -> np.ndarray:
    small = rng.integers(0, 256, (h // 8, w // 8, 3)).astype(np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def _blob_mask(h: int = IMG_H, w: int = IMG_W) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return ((yy - h / 2) / (h * 0.35)) ** 2 + ((xx - w / 2) / (w * 0.3)) ** 2 < 1


def make_pose_data(root: Path, n: int = 2, seed: int = 0) -> Path:
    """COCO JSON with the 308-point field; each image holds one person with all points labelled except a few."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i in range(n):
        cv2.imwrite(str(root / "images" / f"{i}.png"), _image(rng))
        kp = np.zeros((308, 3))
        kp[:, 0] = rng.uniform(12, IMG_W - 12, 308)
        kp[:, 1] = rng.uniform(10, IMG_H - 10, 308)
        kp[:, 2] = 2
        kp[rng.choice(308, 20, replace=False), 2] = 0  # missing points
        x0, y0 = kp[:, 0].min(), kp[:, 1].min()
        bw, bh = kp[:, 0].max() - x0, kp[:, 1].max() - y0
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": IMG_W, "height": IMG_H})
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0, "bbox": [x0, y0, bw, bh],
                     "area": bw * bh, "num_keypoints": int((kp[:, 2] > 0).sum()),
                     "goliath_wholebody_kpts": kp.reshape(-1).tolist()})
    path = root / "train.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]}))
    return path


def make_seg_data(root: Path, n: int = 2, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cv2.imwrite(str(root / "images" / f"s{i}.png"), _image(rng))
        label = np.zeros((IMG_H, IMG_W), np.uint8)
        label[_blob_mask()] = 1
        label[: IMG_H // 2][_blob_mask()[: IMG_H // 2]] = 2 + i % 2
        label[0:3, 0:3] = 255
        cv2.imwrite(str(root / "labels" / f"s{i}.png"), label)
    return root


def make_dense_data(task: str, root: Path, n: int = 2, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    target_dir = {"normal": "normal", "pointmap": "depth", "albedo": "albedo", "matting": "alpha", "depth": "depth"}[task]
    for d in ("rgb", "mask", target_dir):
        (root / d).mkdir(parents=True, exist_ok=True)
    mask = _blob_mask()
    yy, xx = np.mgrid[0:IMG_H, 0:IMG_W].astype(np.float32)
    for i in range(n):
        cv2.imwrite(str(root / "rgb" / f"f{i}.png"), _image(rng))
        cv2.imwrite(str(root / "mask" / f"f{i}.png"), mask.astype(np.uint8) * 255)
        if task == "normal":
            nrm = np.stack([np.sin(xx / 9 + i), np.cos(yy / 7), -np.ones_like(xx)], -1)
            nrm /= np.linalg.norm(nrm, axis=-1, keepdims=True)
            nrm[0, 0] = np.nan  # NaN normals are masked out
            np.save(root / "normal" / f"f{i}.npy", nrm.astype(np.float32))
        elif task == "depth":  # relative depth: any positive scale
            depth = (5.0 + np.sin(xx / 10 + i) + 0.05 * yy).astype(np.float32)
            depth[1, 1] = 0  # no depth there: masked out
            np.save(root / "depth" / f"f{i}.npy", depth)
        elif task == "pointmap":
            np.save(root / "depth" / f"f{i}.npy", (2.0 + 0.3 * np.sin(xx / 10 + i) + 0.01 * yy).astype(np.float32))
            (root / "camera_intrinsics").mkdir(exist_ok=True)
            K = np.array([[70.0, 0, IMG_W / 2], [0, 70.0, IMG_H / 2], [0, 0, 1]])
            np.savetxt(root / "camera_intrinsics" / f"f{i}.txt", K)
        elif task == "albedo":
            alb = np.stack([128 + 100 * np.sin(xx / 6 + i), 90 + 60 * np.cos(yy / 5), 60 + 0 * xx], -1)
            cv2.imwrite(str(root / "albedo" / f"f{i}.png"), np.clip(alb, 0, 255).astype(np.uint8)[..., ::-1])
        else:
            alpha = np.clip(1.5 - np.sqrt(((yy - IMG_H / 2) / 25) ** 2 + ((xx - IMG_W / 2) / 18) ** 2), 0, 1)
            cv2.imwrite(str(root / "alpha" / f"f{i}.png"), (alpha * 255).astype(np.uint8))
    return root


def make_data(task: str, root: Path, n: int = 2, seed: int = 0) -> dict:
    """The `[[data.train]]` entry for a tiny dataset of `task` written under `root`."""
    if task == "pose":
        make_pose_data(root, n, seed)
        return {"root": str(root), "annotations": "train.json", "images": "images",
                "keypoint_indices": list(keypoints308().subsets["body"])}
    if task == "seg":
        make_seg_data(root, n, seed)
        return {"root": str(root)}
    make_dense_data(task, root, n, seed)
    return {"root": str(root)}


def tiny_config(task: str, work_dir: Path, data: dict, **train) -> dict:
    cfg = {
        "task": task,
        "model": {"backbone": dict(TINY_BACKBONE), "head": dict(TINY_HEADS[task])},
        "data": {"train": [data], "input_size": [H, W], "num_workers": 0, "num_classes": 4, "augment": False},
        "train": {"work_dir": str(work_dir), "num_iters": 20, "batch_size": 2, "save_every": 1000,
                  "val_every": 1000, "log_every": 1, "precision": "fp32", **train},
        "optim": {"lr": 2e-3, "warmup_iters": min(2, cfg_iters(train) - 1), "layer_decay": 0.9, "clip_grad": 10.0, "weight_decay": 0.0},
    }
    if task == "pose":
        cfg["augment"] = {"heatmap_sigma": 2.0}
    return cfg


@pytest.fixture(autouse=True)
def _tiny_models_on_one_thread(one_thread):
    """Every test here runs tiny models: see `one_thread` in tests/conftest.py."""


V1_TASKS = V1_TRAIN_TASKS
V1_TINY_BACKBONE = {"embed_dim": 32, "depth": 2, "num_heads": 2}
V1_TINY_HEAD = {"deconv_channels": [16, 16], "conv_channels": [16]}


def tiny_v1_config(task: str, work_dir: Path, data: dict, **train) -> dict:
    """`tiny_config` with a tiny Sapiens v1 network (v1 heads: x2 deconvs, then 1x1 convs)."""
    cfg = tiny_config("normal" if task == "depth" else task, work_dir, data, **train)
    cfg["task"] = task
    cfg["model"] = {"generation": 1, "backbone": dict(V1_TINY_BACKBONE), "head": dict(V1_TINY_HEAD)}
    return cfg


def cfg_iters(train: dict) -> int:
    return train.get("num_iters", 20)


def _config_maker(tmp_path: Path, build, run_prefix: str):
    from sapiens2.train.config import config_from_dict

    def make(task: str, n: int = 2, **train) -> object:
        data = make_data(task, tmp_path / f"data_{task}", n)
        return config_from_dict(build(task, tmp_path / f"{run_prefix}_{task}", data, **train))

    return make


@pytest.fixture
def tiny(tmp_path: Path):
    """tiny(task, **train_overrides) -> a validated TrainConfig on fresh tiny data."""
    return _config_maker(tmp_path, tiny_config, "run")


@pytest.fixture
def tiny_v1(tmp_path: Path):
    """tiny_v1(task, **train_overrides) -> a validated TrainConfig of a tiny Sapiens v1 network."""
    return _config_maker(tmp_path, tiny_v1_config, "run_v1")
