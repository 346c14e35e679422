"""The table of official models: name -> generation, arch, task, hub repo, file name, input size.

Sapiens2 names follow its hub repos (`sapiens2-<task>-<size>`) and file names its release
(`sapiens2_<size>_<task>.safetensors`). Sapiens v1 models are named `sapiens-<task>-<size>`, with
`-coco17` / `-wholebody133` for the pose models that predict those keypoint sets (308 otherwise); their
files are the original `.pth` releases. This is the one place that lists them.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

HUB_OWNER = "facebook"
DENSE_INPUT = (1024, 768)  # H, W of every task model
SIZES = ("0.4b", "0.8b", "1b", "5b")
TASK_NAMES = ("pose", "seg", "normal", "pointmap", "albedo")
_SUFFIXES = (".safetensors", ".pth", ".bin", ".pt", ".pt2")


@dataclass(frozen=True)
class ModelInfo:
    """One official checkpoint."""

    name: str  # e.g. "sapiens2-pose-0.4b"
    arch: str  # key of sapiens2.models.ARCHS
    task: str  # "pretrain" or one of TASK_NAMES
    repo: str  # hub repo id
    filename: str  # file inside the repo, and in the reference folder layout
    input_size: tuple[int, int] = DENSE_INPUT  # (H, W) the model was trained at
    hub_confirmed: bool = True  # False: the repo or path is inferred from the release's naming, not seen
    generation: int = 2
    keypoints: int | None = None  # pose models: 308, 133 or 17
    local_relpath: str = ""  # where the reference folder layout keeps the file, under its root

    @property
    def basename(self) -> str:
        return self.filename.rsplit("/", 1)[-1]

    @property
    def hub_id(self) -> str:
        return self.repo


def _file(arch: str, task: str) -> str:
    return f"sapiens2_{arch.replace('-', '_')}_{task}.safetensors"


def _entries() -> list[ModelInfo]:
    models = []
    for arch in ("0.1b", "0.4b", "0.8b", "1b", "1b-4k", "5b"):
        size = (4096, 3072) if arch == "1b-4k" else DENSE_INPUT
        name = f"sapiens2-pretrain-{arch}"
        file = _file(arch, "pretrain")
        models.append(ModelInfo(name, arch, "pretrain", f"{HUB_OWNER}/{name}", file, size, local_relpath=f"pretrain/{file}"))
    for task in TASK_NAMES:
        for arch in SIZES:
            name = f"sapiens2-{task}-{arch}"
            file = _file(arch, task)
            # The model zoo lists no albedo repos, though the albedo demo expects these files: the repo name
            # is our best guess by analogy with the others.
            models.append(ModelInfo(name, arch, task, f"{HUB_OWNER}/{name}", file, hub_confirmed=task != "albedo",
                                    keypoints=308 if task == "pose" else None, local_relpath=f"{task}/{file}"))
    # Matting was released after the others, in the 1B size only.
    file = _file("1b", "matting")
    models.append(ModelInfo("sapiens2-matting-1b", "1b", "matting", f"{HUB_OWNER}/sapiens2-matting-1b", file,
                            local_relpath=f"matting/{file}"))
    # The person detector the pose demo runs (RTMDet-m, one class), an mmengine pickle; see sapiens2.detect.
    models.append(ModelInfo("rtmdet-m-person", "rtmdet-m", "detect", f"{HUB_OWNER}/sapiens-pose-bbox-detector",
                            "rtmdet_m.pth", (640, 640), local_relpath="detector/rtmdet_m.pth"))
    return models + _v1_entries()


# Sapiens v1 release stems per (task, size): the original `.pth` files (SAPIENS_V1.md, section 3b).
_V1_STEMS = {
    "pretrain": {"0.3b": "sapiens_0.3b_epoch_1600_clean", "0.6b": "sapiens_0.6b_epoch_1600_clean",
                 "1b": "sapiens_1b_epoch_173_clean", "2b": "sapiens_2b_epoch_660_clean"},
    "pose": {"0.3b": "sapiens_0.3b_goliath_best_goliath_AP_573", "0.6b": "sapiens_0.6b_goliath_best_goliath_AP_609",
             "1b": "sapiens_1b_goliath_best_goliath_AP_639"},
    "pose-coco17": {s: f"sapiens_{s}_coco_best_coco_AP_{ap}" for s, ap in
                    (("0.3b", 796), ("0.6b", 812), ("1b", 821), ("2b", 822))},
    "pose-wholebody133": {s: f"sapiens_{s}_coco_wholebody_best_coco_wholebody_AP_{ap}" for s, ap in
                          (("0.3b", 620), ("0.6b", 695), ("1b", 727), ("2b", 745))},
    "seg": {"0.3b": "sapiens_0.3b_goliath_best_goliath_mIoU_7673_epoch_194",
            "0.6b": "sapiens_0.6b_goliath_best_goliath_mIoU_7777_epoch_178",
            "1b": "sapiens_1b_goliath_best_goliath_mIoU_7994_epoch_151"},
    "depth": {s: f"sapiens_{s}_render_people_epoch_{e}" for s, e in (("0.3b", 100), ("0.6b", 70), ("1b", 88), ("2b", 25))},
    "normal": {s: f"sapiens_{s}_normal_render_people_epoch_{e}" for s, e in
               (("0.3b", 66), ("0.6b", 200), ("1b", 115), ("2b", 70))},
}
_V1_COCO_REPO = "noahcao/sapiens-pose-coco"  # the COCO-17 and WholeBody-133 models are not under facebook/


def _v1_entries() -> list[ModelInfo]:
    models = []
    for kind, stems in _V1_STEMS.items():
        task, _, variant = kind.partition("-")
        keypoints = {"coco17": 17, "wholebody133": 133}.get(variant, 308) if task == "pose" else None
        for arch, stem in stems.items():
            name = f"sapiens-{task}-{arch}" + (f"-{variant}" if variant else "")
            relpath = f"{task}/checkpoints/sapiens_{arch}/{stem}.pth"
            if variant:
                repo, filename = _V1_COCO_REPO, f"sapiens_host/{relpath}"
            else:
                repo, filename = f"{HUB_OWNER}/sapiens-{task}-{arch}", f"{stem}.pth"
            confirmed = name == "sapiens-pose-1b"  # the only file name seen on the hub itself
            size = (1024, 1024) if task == "pretrain" else DENSE_INPUT
            models.append(ModelInfo(name, arch, task, repo, filename, size, hub_confirmed=confirmed, generation=1,
                                    keypoints=keypoints, local_relpath=relpath))
    return models


MODELS: dict[str, ModelInfo] = {m.name: m for m in _entries()}

def find_model(query: str) -> ModelInfo | None:
    """The official model a name, hub id or file name refers to (case-insensitive), or None."""
    q = query.strip().lower()
    q = q.removeprefix("https://huggingface.co/").removeprefix(f"{HUB_OWNER}/")
    # A file matches by its stem too: a converted `.safetensors` of a released `.pth` keeps the stem.
    stem = q.rsplit(".", 1)[0] if q.endswith(_SUFFIXES) else q
    for m in MODELS.values():
        base = m.basename.lower()
        if q in (m.name, base) or stem == base.rsplit(".", 1)[0]:
            return m
    return None


def suggest(query: str, n: int = 3) -> list[str]:
    """Official names closest to a mistyped one."""
    return difflib.get_close_matches(query.lower().removeprefix(f"{HUB_OWNER}/"), list(MODELS), n=n, cutoff=0.5)
