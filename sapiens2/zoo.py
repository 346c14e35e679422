"""The table of official models: name -> generation, arch, task, hub repo, file, format, licence, input size.

Sapiens2 names follow its hub repos (`sapiens2-<task>-<size>`) and file names its release
(`sapiens2_<size>_<task>.safetensors`). Sapiens v1 models are named `sapiens-<task>-<size>`, with
`-coco17` / `-wholebody133` for the pose models that predict those keypoint sets (308 otherwise), and
`-torchscript` / `-bfloat16` for the "lite" releases of the same weights, which are programs (`.pt2`) that
load only with the explicit code opt-in. Every entry is a file seen on the hub, except the Sapiens2 albedo
models: the release ships their configs and demo but publishes no weights, so they are local files only.
This is the one place that lists them.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from sapiens2.task_table import TASKS

HUB_OWNER = "facebook"
DENSE_INPUT = (1024, 768)  # H, W of every task model
SIZES = ("0.4b", "0.8b", "1b", "5b")
#: The Sapiens2 tasks released at every size (matting came at 1b only; depth is Sapiens v1's).
TASK_NAMES = tuple(t for t, info in TASKS.items() if 2 in info.generations and t != "matting")
_SUFFIXES = (".safetensors", ".pth", ".bin", ".pt", ".pt2")

#: What each kind of file is. `pth` is a pickle (read weights-only with the pickle opt-in); `torchscript`
#: and `bfloat16` (a bfloat16 torch.export program) are `.pt2` programs that carry code and load only with
#: the code opt-in (`allow_code=True`).
FORMATS = ("safetensors", "pth", "torchscript", "bfloat16")
CODE_FORMATS = ("torchscript", "bfloat16")

#: The licences the weights come under, as their hub repositories state them.
SAPIENS2_LICENSE = "Sapiens2 License"  # Meta's custom licence (hub metadata: other / sapiens2-license)
SAPIENS1_LICENSE = "CC-BY-NC-4.0"
DETECTOR_LICENSE = "Apache-2.0"
UNPUBLISHED = "unpublished"  # no file on the hub, so no licence stated


@dataclass(frozen=True)
class ModelInfo:
    """One official checkpoint."""

    name: str  # e.g. "sapiens2-pose-0.4b"
    arch: str  # key of sapiens2.models.ARCHS (v1: its size; the detector: "rtmdet-m")
    task: str  # "pretrain", one of TASK_NAMES, "matting", "depth", "detect" or "foreground"
    repo: str  # hub repo id; "" for a model published nowhere (a local file only)
    filename: str  # file inside the repo (its path there); a local-only model's file name
    input_size: tuple[int, int] = DENSE_INPUT  # (H, W) the model was trained at
    generation: int = 2
    keypoints: int | None = None  # pose models: 308, 133 or 17
    local_relpath: str = ""  # where the reference folder layout keeps the file, under its root
    license: str = SAPIENS2_LICENSE
    format: str = "safetensors"  # one of FORMATS

    @property
    def basename(self) -> str:
        return self.filename.rsplit("/", 1)[-1]

    @property
    def hub_id(self) -> str:
        return self.repo

    @property
    def on_hub(self) -> bool:
        """False for a model whose weights are not published (a file you must already have)."""
        return bool(self.repo)

    @property
    def hub_confirmed(self) -> bool:
        """Every hub repo and file here was seen on the hub; a local-only model has neither."""
        return self.on_hub

    @property
    def needs_code(self) -> bool:
        """A program (TorchScript / torch.export) rather than weights: loads only with `allow_code=True`."""
        return self.format in CODE_FORMATS

    @property
    def needs_pickle(self) -> bool:
        """A pickle file: loads with `allow_pickle=True` (weights only), or after `sapiens2 convert`."""
        return self.format == "pth"

    def not_published_message(self, here: object) -> str:
        """What to say when a model that is published nowhere is not at `here`, its place in the layout."""
        return (f"{self.basename} ({self.name}) was not found at {here}. This model is not published on the "
                f"Hugging Face hub (the release ships its config and demo, not its weights), so it cannot be "
                f"downloaded: put your copy of the file at {here}.")


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
            # Albedo: no hub repo exists; the reference's albedo demo reads these names from its local layout.
            published = task != "albedo"
            models.append(ModelInfo(name, arch, task, f"{HUB_OWNER}/{name}" if published else "", file,
                                    keypoints=308 if task == "pose" else None, local_relpath=f"{task}/{file}",
                                    license=SAPIENS2_LICENSE if published else UNPUBLISHED))
    # Matting was released after the others, in the 1B size only.
    file = _file("1b", "matting")
    models.append(ModelInfo("sapiens2-matting-1b", "1b", "matting", f"{HUB_OWNER}/sapiens2-matting-1b", file,
                            local_relpath=f"matting/{file}"))
    # The person detector the pose demo runs (RTMDet-m, one class), an mmengine pickle; see sapiens2.detect.
    # The hub keeps mmdet's file name; the Sapiens2 docs save it locally as detector/rtmdet_m.pth.
    models.append(ModelInfo("rtmdet-m-person", "rtmdet-m", "detect", f"{HUB_OWNER}/sapiens-pose-bbox-detector",
                            "rtmdet_m_8xb32-100e_coco-obj365-person-235e8209.pth", (640, 640),
                            local_relpath="detector/rtmdet_m.pth", license=DETECTOR_LICENSE, format="pth"))
    return models + _v1_entries()


# Sapiens v1 release stems per (task, size): the original `.pth` files (SAPIENS_V1.md, section 3b). No pose-2b
# (308) or seg-2b file is published.
_V1_STEMS = {
    "pretrain": {"0.3b": "sapiens_0.3b_epoch_1600", "0.6b": "sapiens_0.6b_epoch_1600",
                 "1b": "sapiens_1b_epoch_173", "2b": "sapiens_2b_epoch_660"},
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
        size = (1024, 1024) if task == "pretrain" else DENSE_INPUT
        for arch, stem in stems.items():
            name = f"sapiens-{task}-{arch}" + (f"-{variant}" if variant else "")
            folder = f"{task}/checkpoints/sapiens_{arch}"
            # The original weights; the pretrain files carry `_clean` (their lite programs do not).
            original = f"{stem}_clean.pth" if task == "pretrain" else f"{stem}.pth"
            # The lite programs: a repo per format under facebook/; in the COCO repo, a bfloat16 folder is
            # described but holds no file, so only the TorchScript programs are there.
            formats = ("pth", "torchscript") if variant else ("pth", "torchscript", "bfloat16")
            for fmt in formats:
                file = original if fmt == "pth" else f"{stem}_{fmt}.pt2"
                if variant:
                    host = "sapiens_host" if fmt == "pth" else f"sapiens_lite_host/{fmt}"
                    repo, filename = _V1_COCO_REPO, f"{host}/{folder}/{file}"
                else:
                    suffix = "" if fmt == "pth" else f"-{fmt}"
                    repo, filename = f"{HUB_OWNER}/sapiens-{task}-{arch}{suffix}", file
                models.append(ModelInfo(name + ("" if fmt == "pth" else f"-{fmt}"), arch, task, repo, filename, size,
                                        generation=1, keypoints=keypoints, local_relpath=f"{folder}/{file}",
                                        license=SAPIENS1_LICENSE, format=fmt))
    # The v1 lite helper that removes the background (person vs background), a TorchScript program only.
    file = "sapiens_1b_seg_foreground_epoch_8_torchscript.pt2"
    models.append(ModelInfo("sapiens-seg-foreground-1b-torchscript", "1b", "foreground",
                            f"{HUB_OWNER}/sapiens-seg-foreground-1b-torchscript", file, generation=1,
                            local_relpath=f"seg/checkpoints/sapiens_1b/{file}", license=SAPIENS1_LICENSE,
                            format="torchscript"))
    return models


MODELS: dict[str, ModelInfo] = {m.name: m for m in _entries()}
#: The default person detector of the pose pipeline.
DETECTOR = MODELS["rtmdet-m-person"]


def task_sizes(task: str, generation: int | None = None) -> list[str]:
    """The sizes released for a task (each once, in release order), of one generation when given."""
    return list(dict.fromkeys(m.arch for m in MODELS.values()
                              if m.task == task and generation in (None, m.generation)))


def find_model(query: str) -> ModelInfo | None:
    """The official model a name, hub id or file name refers to (case-insensitive), or None.

    A file matches by its hub name or its name in the local layout (the detector: `rtmdet_m.pth`), and by
    its stem too: a converted `.safetensors` of a released `.pth` keeps the stem."""
    q = query.strip().lower()
    q = q.removeprefix("https://huggingface.co/").removeprefix(f"{HUB_OWNER}/")
    stem = q.rsplit(".", 1)[0] if q.endswith(_SUFFIXES) else q
    for m in MODELS.values():
        if q == m.name:
            return m
    for m in MODELS.values():
        for base in {m.basename.lower(), m.local_relpath.rsplit("/", 1)[-1].lower()}:
            if q == base or stem == base.rsplit(".", 1)[0]:
                return m
    return None


def suggest(query: str, n: int = 3) -> list[str]:
    """Official names closest to a mistyped one."""
    return difflib.get_close_matches(query.lower().removeprefix(f"{HUB_OWNER}/"), list(MODELS), n=n, cutoff=0.5)
