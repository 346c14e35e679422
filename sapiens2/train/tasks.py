"""What differs between tasks, in one place: loss weights, the criterion, transforms, the network, and
validation. The loop (`sapiens2.train.loop`) only sees `TaskSpec`s.

Loss weights (the `[loss]` table) default to the reference recipes (spec §6.5); a weight of 0 turns a
term off. Matting has no reference recipe: alpha (head channel 3) learns from L1 + gradient + Laplacian-pyramid
losses, and the premultiplied foreground (channels 0-2) from the image times alpha where alpha is near 0 or 1,
the only pixels where that product is the true premultiplied foreground.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from sapiens2.models import DenseHeadConfig, PointmapHeadConfig, PoseHeadConfig, SegHeadConfig
from sapiens2.train import losses as L
from sapiens2.train import transforms as T
from sapiens2.train.config import ConfigError, TrainConfig, from_dict

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------ loss weights


@dataclass
class PoseLoss:
    mse: float = 10.0
    ohkm: float = 0.0  # the reference keeps OHKM commented out
    ohkm_topk: int = 128


@dataclass
class SegLoss:
    ce: float = 1.0
    dice: float = 1.0
    class_weights: list[float] | None = None  # None: the reference weights for 29 classes, else uniform


@dataclass
class NormalLoss:
    cosine: float = 10.0
    l1: float = 1.0
    grad: float = 10.0


@dataclass
class PointmapLoss:
    l1: float = 2.0
    multiscale_l1: float = 1.0
    silog: float = 1.0
    intrinsics: float = 1.0
    shift_invariant_l1: float = 1.0
    normal: float = 2.0
    scale: float = 4.0
    clamp: float = 4.0  # the L1 terms are clamped at this value after weighting


@dataclass
class AlbedoLoss:
    l1: float = 2.0
    grad: float = 2.0
    chroma: float = 1.0


@dataclass
class DepthLoss:
    silog: float = 1.0  # Sapiens v1 trained relative depth with the scale-invariant log loss


@dataclass
class MattingLoss:
    l1: float = 1.0
    grad: float = 1.0
    laplacian: float = 1.0
    foreground: float = 1.0


# --------------------------------------------------------------------------------------- criteria


class PoseCriterion(nn.Module):
    def __init__(self, w: PoseLoss) -> None:
        super().__init__()
        self.mse = L.KeypointMSELoss(w.mse) if w.mse else None
        self.ohkm = L.KeypointOHKMMSELoss(w.ohkm, w.ohkm_topk) if w.ohkm else None

    def forward(self, out: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        hm, kw = batch["heatmaps"], batch["keypoint_weights"]
        res = {}
        if self.mse is not None:
            res["loss_kpt"] = self.mse(out, hm, kw)
        if self.ohkm is not None:
            res["loss_ohkm"] = self.ohkm(out, hm, kw)
        res["acc_pose"] = pck_accuracy(out.detach(), hm, kw)
        return res


def pck_accuracy(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor, thr: float = 0.05) -> torch.Tensor:
    """PCK@thr between heatmap argmaxes, distances normalized by the heatmap (W, H), over weighted points."""
    b, k, h, w = pred.shape

    def peaks(x: torch.Tensor) -> torch.Tensor:
        i = x.float().flatten(2).argmax(-1)
        return torch.stack([(i % w).float() / w, (i // w).float() / h], -1)

    d = (peaks(pred) - peaks(target)).norm(dim=-1)
    valid = weights > 0
    return ((d < thr) & valid).sum() / valid.sum().clamp(min=1)


class SegCriterion(nn.Module):
    def __init__(self, w: SegLoss, num_classes: int) -> None:
        super().__init__()
        cw = w.class_weights
        if cw is None and num_classes == len(L.SEG29_CLASS_WEIGHTS):
            cw = L.SEG29_CLASS_WEIGHTS
        if cw is not None and len(cw) != num_classes:
            raise ConfigError("loss.class_weights", f"has {len(cw)} weights for {num_classes} classes")
        self.ce = L.WeightedCrossEntropyLoss(w.ce, tuple(cw) if cw else None) if w.ce else None
        self.dice = L.DiceLoss(w.dice) if w.dice else None

    def forward(self, out: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        labels = batch["label"]
        res = {}
        if self.ce is not None:
            res["loss_ce"] = self.ce(out, labels)
        if self.dice is not None:
            res["loss_dice"] = self.dice(out, labels)
        logits = L.match_size(out.detach().float(), labels)
        valid = labels != 255
        res["acc_seg"] = 100 * ((logits.argmax(1) == labels) & valid).sum() / valid.sum().clamp(min=1)
        return res


class NormalCriterion(nn.Module):
    def __init__(self, w: NormalLoss) -> None:
        super().__init__()
        self.terms = nn.ModuleDict({k: m for k, m in (
            ("loss_cosine", L.NormalCosineLoss(w.cosine)), ("loss_l1", L.MaskedL1Loss(w.l1)),
            ("loss_grad", L.GradientLoss(w.grad))) if m.weight})

    def forward(self, out: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        return {k: m(out.float(), batch["target"], batch["mask"]) for k, m in self.terms.items()}


class AlbedoCriterion(nn.Module):
    def __init__(self, w: AlbedoLoss) -> None:
        super().__init__()
        self.terms = nn.ModuleDict({k: m for k, m in (
            ("loss_l1", L.MaskedL1Loss(w.l1)), ("loss_grad", L.GradientLoss(w.grad, average=True)),
            ("loss_chroma", L.ChromaticityL1Loss(w.chroma))) if m.weight})

    def forward(self, out: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        return {k: m(out.float(), batch["target"], batch["mask"]) for k, m in self.terms.items()}


class MattingCriterion(nn.Module):
    """On the official matting head's output: channels 0-2 premultiplied foreground, channel 3 alpha."""

    def __init__(self, w: MattingLoss) -> None:
        super().__init__()
        self.terms = nn.ModuleDict({k: m for k, m in (
            ("loss_l1", L.MaskedL1Loss(w.l1)), ("loss_grad", L.AlphaGradientL1Loss(w.grad)),
            ("loss_laplacian", L.LaplacianPyramidLoss(w.laplacian))) if m.weight})
        self.foreground = L.ForegroundL1Loss(w.foreground) if w.foreground else None

    def forward(self, out: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        out = out.float()
        alpha, mask = batch["target"], batch["mask"]
        res = {k: m(out[:, 3:4], alpha, mask) for k, m in self.terms.items()}
        if self.foreground is not None:
            res["loss_foreground"] = self.foreground(out[:, :3], batch["image"].float() / 255, alpha, mask)
        return res


class DepthCriterion(nn.Module):
    """Sapiens v1 relative depth: SiLog between the prediction (resized to the target) and the GT depth."""

    def __init__(self, w: DepthLoss) -> None:
        super().__init__()
        self.silog = L.SiLogLoss(w.silog) if w.silog else None

    def forward(self, out: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        pred = L.match_size(out.float(), batch["target"])
        return {"loss_silog": self.silog(pred[:, 0], batch["target"][:, 0], batch["mask"])} if self.silog else {}


class PointmapCriterion(nn.Module):
    def __init__(self, w: PointmapLoss) -> None:
        super().__init__()
        self.w = w
        self.l1 = L.ClampedL1Loss(w.l1, w.clamp)
        self.ms = L.ClampedL1Loss(w.multiscale_l1, w.clamp, upsample=2)
        self.si = L.ClampedL1Loss(w.shift_invariant_l1, w.clamp, shift_invariant=True)
        self.silog = L.SiLogLoss(w.silog)
        self.intr = L.IntrinsicsConsistencyLoss(w.intrinsics)
        self.normal = L.PointmapNormalLoss(w.normal)
        self.scale = L.ScaleL1Loss(w.scale)

    def forward(self, out: tuple[torch.Tensor, torch.Tensor], batch: dict) -> dict[str, torch.Tensor]:
        pred, pred_scale = out
        pred = L.match_size(pred.float(), batch["target"])
        t, m, md = batch["target"], batch["mask"], batch["mean_depth"]
        w, res = self.w, {}
        if w.l1:
            res["loss_l1"] = self.l1(pred, t, m, md)
        if w.multiscale_l1:
            res["loss_multiscale_l1_2"] = self.ms(pred, t, m, md)
        if w.silog:
            res["loss_silog"] = self.silog(pred[:, 2], t[:, 2], m)
        if w.intrinsics:
            res["loss_intrinsics"] = self.intr(pred, m, batch["K"])
        if w.shift_invariant_l1:
            res["loss_shift_invariant_l1"] = self.si(pred, t, m, md)
        if w.normal:
            res["loss_normal"] = self.normal(pred, t, m, batch["scale"])
        if w.scale:
            res["loss_scale"] = self.scale(pred_scale.float(), batch["scale"])
        return res


# ------------------------------------------------------------------------------------- validation


def _flat(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float, np.floating, np.integer))}


class DenseEvaluator:
    """normal / pointmap / albedo / matting / depth at the network resolution, over each sample's mask."""

    def __init__(self, task: str) -> None:
        from sapiens2.metrics.albedo import AlbedoMetrics
        from sapiens2.metrics.depth import DepthMetrics
        from sapiens2.metrics.matting import MattingMetrics
        from sapiens2.metrics.normals import NormalMetrics
        from sapiens2.metrics.pointmap import PointmapMetrics

        self.task = task
        self.metrics = {"normal": NormalMetrics, "pointmap": PointmapMetrics, "albedo": AlbedoMetrics,
                        "matting": MattingMetrics, "depth": DepthMetrics}[task]()

    def update(self, out: Any, batch: dict) -> None:
        pred = out[0] if isinstance(out, tuple) else out
        pred = L.match_size(pred.float(), batch["target"]).cpu().numpy().transpose(0, 2, 3, 1)  # B x H x W x C
        gt = batch["target"].cpu().numpy().transpose(0, 2, 3, 1)
        mask = batch["mask"].cpu().numpy()
        for p, g, m in zip(pred, gt, mask):
            if not m.any():
                continue
            if self.task == "matting":
                self.metrics.update(p[..., 3], g[..., 0])
            elif self.task in ("albedo", "depth"):
                self.metrics.update(p, g, m)
            else:
                self.metrics.update(p, np.where(m[..., None], g, 0), m)

    def compute(self) -> dict[str, float]:
        return _flat(self.metrics.compute())


class SegEvaluator:
    def __init__(self, num_classes: int) -> None:
        from sapiens2.metrics.segmentation import SegmentationMetrics

        self.metrics = SegmentationMetrics(num_classes)

    def update(self, out: torch.Tensor, batch: dict) -> None:
        labels = batch["label"]
        pred = L.match_size(out.float(), labels).argmax(1).cpu().numpy()
        for p, g in zip(pred, labels.cpu().numpy()):
            self.metrics.update(p, g)

    def compute(self) -> dict[str, float]:
        return _flat(self.metrics.compute())


class PoseEvaluator:
    """GT-box crops -> UDP decode -> image coordinates -> OKS AP over the validation people (no OKS-NMS:
    every crop comes from a distinct GT box)."""

    def __init__(self, source: Any, input_size: tuple[int, int]) -> None:
        self.source = source
        self.h, self.w = input_size
        self.rows: list[tuple[int, np.ndarray, float]] = []

    def update(self, out: torch.Tensor, batch: dict) -> None:
        from sapiens2.keypoints.udp import udp_decode
        from sapiens2.tasks.topdown import crop_to_image

        hm = out.float().cpu().numpy()
        kp, scores = udp_decode(hm, input_size=(self.w, self.h))
        kp = crop_to_image(kp, batch["center"].numpy(), batch["scale"].numpy(), (self.w, self.h))
        for i in range(len(hm)):
            s = scores[i]
            good = s > 0.2
            score = float(s[good].mean()) if good.any() else 0.0
            self.rows.append((int(batch["image_id"][i]), np.concatenate([kp[i], s[:, None]], 1), score))

    def compute(self) -> dict[str, float]:
        from sapiens2.metrics.pose import KeypointAnnotations, KeypointDetections, keypoint_ap

        gts = self.source.gt
        gt = KeypointAnnotations(
            np.array([g["image_id"] for g in gts]), np.stack([g["keypoints"] for g in gts]),
            np.array([g["area"] for g in gts]), np.array([g["bbox"] for g in gts], np.float64),
            np.array([g["iscrowd"] for g in gts]), np.array(self.source.all_image_ids))
        det = KeypointDetections(np.array([r[0] for r in self.rows]), np.stack([r[1] for r in self.rows]),
                                 np.array([r[2] for r in self.rows]))
        res = keypoint_ap(gt, det, self.source.sigmas())
        return {k: float(v) for k, v in res.items()}


# -------------------------------------------------------------------------------------- the specs


@dataclass(frozen=True)
class TaskSpec:
    name: str
    head_config: type | None  # the head's config dataclass (`model.head` fields)
    loss_config: type
    augment_config: type
    model_task: str  # the head layout built by sapiens2.models


TASK_SPECS: dict[str, TaskSpec] = {
    "pose": TaskSpec("pose", PoseHeadConfig, PoseLoss, T.PoseAugment, "pose"),
    "seg": TaskSpec("seg", SegHeadConfig, SegLoss, T.SegAugment, "seg"),
    "normal": TaskSpec("normal", DenseHeadConfig, NormalLoss, T.NormalAugment, "normal"),
    "pointmap": TaskSpec("pointmap", PointmapHeadConfig, PointmapLoss, T.PointmapAugment, "pointmap"),
    "albedo": TaskSpec("albedo", DenseHeadConfig, AlbedoLoss, T.AlbedoAugment, "albedo"),
    "matting": TaskSpec("matting", DenseHeadConfig, MattingLoss, T.MattingAugment, "matting"),
    "depth": TaskSpec("depth", None, DepthLoss, T.DepthAugment, "depth"),  # Sapiens v1 only
}


def build_criterion(cfg: TrainConfig) -> nn.Module:
    spec = TASK_SPECS[cfg.task]
    w = from_dict(spec.loss_config, cfg.loss, "loss")
    if cfg.task == "pose":
        return PoseCriterion(w)
    if cfg.task == "seg":
        return SegCriterion(w, cfg.data.num_classes)
    return {"normal": NormalCriterion, "pointmap": PointmapCriterion, "albedo": AlbedoCriterion,
            "matting": MattingCriterion, "depth": DepthCriterion}[cfg.task](w)


def build_transform(cfg: TrainConfig, source: Any, train: bool) -> Callable:
    spec = TASK_SPECS[cfg.task]
    params = from_dict(spec.augment_config, cfg.augment, "augment")
    size = tuple(cfg.data.input_size)
    if cfg.task == "pose":
        return T.PoseTransform(size, source.layout(), params, train=train, augment=cfg.data.augment)
    if cfg.task == "seg":
        return T.SegTransform(size, cfg.data.num_classes, params, train=train, augment=cfg.data.augment)
    return T.DenseTransform(cfg.task, size, params, train=train, augment=cfg.data.augment,
                            stretch=cfg.model.generation == 1)


def build_evaluator(cfg: TrainConfig, source: Any):
    if cfg.task == "pose":
        return PoseEvaluator(source, tuple(cfg.data.input_size))
    if cfg.task == "seg":
        return SegEvaluator(cfg.data.num_classes)
    return DenseEvaluator(cfg.task)


# --------------------------------------------------------------------------------------- the model


def head_config(cfg: TrainConfig, embed_dim: int, arch: str | None, outputs: int | None) -> Any:
    """The head config: official widths for an official arch (the dataclass defaults otherwise), the
    `model.head` overrides, the data's keypoint / class count (`outputs`: the keypoints, or the init
    checkpoint's classes), and for pointmaps a scale MLP sized to the input."""
    from sapiens2.models import official_head_config
    from sapiens2.models.build import MATTING_CHANNELS

    spec = TASK_SPECS[cfg.task]
    base = official_head_config(arch, spec.model_task) if arch else spec.head_config(embed_dim)
    if cfg.task == "matting" and not arch:
        base = replace(base, out_channels=MATTING_CHANNELS)
    overrides = {f.name: getattr(base, f.name) for f in fields(base)}
    overrides.update(cfg.model.head)
    overrides["in_channels"] = embed_dim
    if cfg.task == "pose" and outputs is not None and "num_keypoints" not in cfg.model.head:
        overrides["num_keypoints"] = outputs
    if cfg.task == "seg" and "num_classes" not in cfg.model.head and (cfg.data.num_classes or outputs):
        overrides["num_classes"] = cfg.data.num_classes or outputs
    head = from_dict(type(base), overrides, "model.head")
    if cfg.task == "pointmap":  # the scale MLP's input width follows from the input size
        h, w = cfg.data.input_size
        gh, gw = h // 16, w // 16
        for _ in head.scale_conv_channels:
            gh, gw = -(-gh // 2), -(-gw // 2)
        head = replace(head, scale_mlp=(head.scale_conv_channels[-1] * gh * gw, *head.scale_mlp[1:]))
    return head


def load_init(cfg: TrainConfig) -> nn.Module:
    """`model.init` through `sapiens2.load`, its errors as `ConfigError`s on that field."""
    import sapiens2
    from sapiens2.checkpoint import ProgramCheckpointError, UnsafeCheckpointError

    m = cfg.model
    if str(m.init).lower().endswith(".pt2"):
        raise ConfigError("model.init", f"{m.init} is a Sapiens v1 lite program (TorchScript / torch.export), not "
                          "weights to fine-tune: use the original .pth of the same model (with model.allow_pickle "
                          "= true) or its official name")
    rope = torch.float32 if m.rope_dtype == "float32" else torch.bfloat16
    try:
        return sapiens2.load(m.init, rope_dtype=rope, allow_pickle=m.allow_pickle)
    except ProgramCheckpointError as e:
        raise ConfigError("model.init", f"{e} A program is not weights to fine-tune: use the original .pth or "
                          ".safetensors of the same model.") from None
    except UnsafeCheckpointError as e:
        raise ConfigError("model.init", f"{e} In a training config: set model.allow_pickle = true "
                          "(or convert the file once with `sapiens2 convert`).") from None
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError("model.init", str(e)) from None


def generation_of(model: nn.Module) -> int:
    from sapiens2.models.sapiens1 import Sapiens1Backbone, Sapiens1TaskModel

    return 1 if isinstance(model, (Sapiens1Backbone, Sapiens1TaskModel)) else 2


def build_network(cfg: TrainConfig, outputs: int | None = None) -> tuple[nn.Module, str]:
    """The network to fine-tune, and a line saying where its weights came from.

    `model.init` goes through `sapiens2.load`: its backbone is always used; its head too when it is a
    checkpoint of the same task with the same head shapes. A Sapiens v1 checkpoint (or `model.generation =
    1`) builds a v1 network (`sapiens2.train.v1`).
    """
    m = cfg.model
    loaded = load_init(cfg) if m.init else None
    generation = m.generation or 2
    if loaded is not None:
        generation = generation_of(loaded)
        if m.generation is not None and m.generation != generation:
            names = {1: "Sapiens v1", 2: "Sapiens2"}
            raise ConfigError("model.init", f"{m.init} is a {names[generation]} checkpoint, but model.generation "
                              f"= {m.generation} asks for {names[m.generation]}")
    if generation == 1:
        from sapiens2.train.v1 import build_v1_network

        return build_v1_network(cfg, outputs, loaded)
    return _build_sapiens2_network(cfg, outputs, loaded)


def _build_sapiens2_network(cfg: TrainConfig, outputs: int | None, loaded: nn.Module | None) -> tuple[nn.Module, str]:
    from sapiens2.models import ARCHS, BackboneConfig, Sapiens2TaskModel, build_backbone, build_head
    from sapiens2.train.config import check_sapiens2_model

    check_sapiens2_model(cfg)
    m = cfg.model
    spec = TASK_SPECS[cfg.task]
    rope = torch.float32 if m.rope_dtype == "float32" else torch.bfloat16
    loaded_head, loaded_task = None, None
    if loaded is not None:
        backbone = loaded.backbone if isinstance(loaded, Sapiens2TaskModel) else loaded
        if isinstance(loaded, Sapiens2TaskModel):
            loaded_head, loaded_task = loaded.decode_head, loaded.task
        want = ARCHS[m.arch] if m.arch else (from_dict(BackboneConfig, m.backbone, "model.backbone") if m.backbone else None)
        if want is not None and replace(want, rope_dtype=rope) != replace(backbone.config, rope_dtype=rope):
            raise ConfigError("model.init", f"{m.init} holds a different backbone than model.arch / model.backbone")
        source = f"backbone from {m.init}"
    else:
        bcfg = ARCHS[m.arch] if m.arch else from_dict(BackboneConfig, m.backbone, "model.backbone")
        backbone = build_backbone(replace(bcfg, rope_dtype=rope))
        source = "random init (no model.init)"
    bcfg = backbone.config
    arch = next((name for name, a in ARCHS.items() if replace(a, rope_dtype=rope) == replace(bcfg, rope_dtype=rope)), None)
    if cfg.task == "seg" and loaded_task == "seg":
        outputs = loaded_head.conv_seg.out_channels
    head = build_head(spec.model_task, head_config(cfg, bcfg.embed_dim, arch, outputs))
    head, source = keep_loaded_head(head, loaded_head if loaded_task == spec.model_task else None, source, m.init)
    return ready_to_train(Sapiens2TaskModel(backbone, head, cfg.task), cfg), source


def keep_loaded_head(head: nn.Module, loaded: nn.Module | None, source: str, init: str | None) -> tuple[nn.Module, str]:
    """The loaded head (of the same task) when it has the shapes of the new `head`, else `head`; and the
    where-from line saying which."""
    if loaded is None:
        return head, source
    mine = {k: v.shape for k, v in head.state_dict().items()}
    if mine == {k: v.shape for k, v in loaded.state_dict().items()}:
        return loaded, f"backbone and head from {init}"
    return head, source + " (its head has other shapes: new head)"


def ready_to_train(model: nn.Module, cfg: TrainConfig) -> nn.Module:
    """`model` with gradient checkpointing and backbone freezing as the config asks, in training mode."""
    model.backbone.grad_checkpointing = cfg.model.grad_checkpointing
    if cfg.model.freeze_backbone:
        model.backbone.requires_grad_(False)
    return model.train()


def settle_config(cfg: TrainConfig, model: nn.Module) -> TrainConfig:
    """`cfg` with what building the network decided written in: the generation and, for seg, the class
    count of the head (so the loss, transforms, metrics and the saved config.toml agree with it)."""
    model_cfg = replace(cfg.model, generation=generation_of(model))
    data = cfg.data
    if cfg.task == "seg":
        data = replace(data, num_classes=model.decode_head.conv_seg.out_channels)
    return replace(cfg, model=model_cfg, data=data)
