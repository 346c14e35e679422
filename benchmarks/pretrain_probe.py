"""Does pretraining learn? A short CPU run of the Sapiens2 objective on drawn images, then frozen probes.

1. Draw an unlabelled set of images: gratings (stripes) at one of four orientations, with random
   colours, contrast, period and phase, and pixel noise.
2. Pretrain a tiny Sapiens2 backbone on them with the real pipeline (`sapiens2.pretrain`: multi-crop,
   75 % mixed masking, MAE + DINO-style [cls] distillation + KoLeo, EMA teacher), and export it.
3. On a separate labelled set (the orientation), freeze the exported backbone and fit a k-NN and a
   linear probe on its [cls] and mean-pooled patch features; compare with the same network at its
   random initialisation. Colour and brightness carry no label, so only learned structure helps.

    python benchmarks/pretrain_probe.py            # about 7 minutes on 2 shared CPU cores
    python benchmarks/pretrain_probe.py --iters 150 --unlabelled 512   # a quick look
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, print_table  # noqa: E402

import sapiens2  # noqa: E402
from sapiens2.pretrain.augment import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from sapiens2.pretrain.config import config_from_dict  # noqa: E402
from sapiens2.pretrain.runtime import Runtime  # noqa: E402
from sapiens2.pretrain.trainer import Pretrainer, build_meta_arch  # noqa: E402

ORIENTATIONS = (0, 45, 90, 135)  # degrees: the class of each image
SIZE = 64
PATCH = 8


def draw(rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """One RGB uint8 image and its class: a grating (stripes) at one of four orientations (+-10 degrees),
    with random colours, contrast, period and phase, plus pixel noise, so that neither colour nor
    brightness tells the classes apart: only local structure does."""
    label = int(rng.integers(len(ORIENTATIONS)))
    angle = math.radians(ORIENTATIONS[label] + rng.uniform(-10, 10))
    period = rng.uniform(5, 12)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    wave = 0.5 + 0.5 * np.sin(2 * math.pi * (xx * math.cos(angle) + yy * math.sin(angle)) / period
                              + rng.uniform(0, 2 * math.pi))
    c0 = rng.uniform(0, 255, 3)
    c1 = (c0 + rng.choice([-1, 1], 3) * rng.uniform(60, 160, 3)).clip(0, 255)
    img = c0 * (1 - wave[..., None]) + c1 * wave[..., None] + rng.normal(0, 12, (SIZE, SIZE, 3))
    return img.clip(0, 255).astype(np.uint8), label


def labelled(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    images, labels = zip(*(draw(rng) for _ in range(n)))
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std, torch.tensor(labels)


@torch.no_grad()
def features(backbone: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    backbone.eval()
    tokens = torch.cat([backbone(chunk) for chunk in x.split(256)])
    prefix = backbone.num_prefix_tokens
    cls, patches = tokens[:, 0], tokens[:, prefix:].mean(1)
    return {"cls": cls, "patch mean": patches, "cls + patch mean": torch.cat((cls, patches), 1)}


def knn_accuracy(train: torch.Tensor, y_train: torch.Tensor, test: torch.Tensor, y_test: torch.Tensor,
                 k: int = 20, temperature: float = 0.07) -> float:
    """Weighted k-NN on cosine similarity (DINO's protocol)."""
    a, b = F.normalize(train, dim=1), F.normalize(test, dim=1)
    sims, idx = (b @ a.T).topk(k, dim=1)
    votes = torch.zeros(len(test), int(y_train.max()) + 1).scatter_add_(1, y_train[idx], (sims / temperature).exp())
    return (votes.argmax(1) == y_test).float().mean().item()


def linear_accuracy(train: torch.Tensor, y_train: torch.Tensor, test: torch.Tensor, y_test: torch.Tensor) -> float:
    """Multinomial logistic regression on standardised features (L-BFGS, light L2)."""
    mu, sd, w, b = fit_linear(train, y_train, int(y_train.max()) + 1)
    return ((((test - mu) / sd) @ w + b).argmax(1) == y_test).float().mean().item()


def fit_linear(a: torch.Tensor, y: torch.Tensor, n_cls: int, iters: int = 300) -> tuple[torch.Tensor, ...]:
    mu, sd = a.mean(0), a.std(0) + 1e-6
    a = (a - mu) / sd
    w = torch.zeros(a.shape[1], n_cls, requires_grad=True)
    bias = torch.zeros(n_cls, requires_grad=True)
    opt = torch.optim.LBFGS([w, bias], lr=1, max_iter=iters, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(a @ w + bias, y) + 1e-3 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return mu, sd, w.detach(), bias.detach()


def probe(backbone: torch.nn.Module, train: tuple, test: tuple) -> dict[str, tuple[float, float]]:
    ftr, fte = features(backbone, train[0]), features(backbone, test[0])
    return {name: (knn_accuracy(ftr[name], train[1], fte[name], test[1]),
                   linear_accuracy(ftr[name], train[1], fte[name], test[1])) for name in ftr}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iters", type=int, default=600)
    ap.add_argument("--unlabelled", type=int, default=2048)
    ap.add_argument("--probe-train", type=int, default=1200)
    ap.add_argument("--probe-test", type=int, default=1200)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--embed", type=int, default=96)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--layer-scale", type=float, default=0.1,
                    help="LayerScale init (official models: 1e-4, which keeps a tiny model's attention off "
                         "for longer than this short run)")
    ap.add_argument("--locals", type=int, default=2, help="local views per image (the recipe has 4)")
    ap.add_argument("--threads", type=int, default=1, help="1 is fastest for this size on shared cores")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work-dir", help="keep the run here (default: a temporary folder)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work_dir or tmp)
        folder = work / "unlabelled"
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(10_000 + args.seed)
        for i in range(args.unlabelled):
            cv2.imwrite(str(folder / f"{i:05d}.png"), cv2.cvtColor(draw(rng)[0], cv2.COLOR_RGB2BGR))

        cfg = config_from_dict({
            "model": {"backbone": {"embed_dim": args.embed, "depth": args.depth, "num_heads": 4, "patch_size": PATCH,
                                   "n_storage_tokens": 4, "layer_scale": args.layer_scale},
                      "rope_dtype": "float32"},
            "objective": {"decoder_dim": 64, "decoder_depth": 2, "decoder_heads": 4, "head_out_dim": 1024,
                          "head_hidden_dim": 256, "head_bottleneck_dim": 64},
            "teacher": {"momentum": 0.99, "momentum_final": 1.0, "temp_warmup_iters": 100},
            "crops": {"global_size": [SIZE, SIZE], "local_size": [32, 32], "n_local": args.locals},
            "data": {"source": [str(folder)], "num_workers": 0},
            "optim": {"lr": 1e-3, "min_lr": 1e-5, "warmup_iters": 100},
            "train": {"work_dir": str(work / "run"), "num_iters": args.iters, "batch_size": args.batch_size,
                      "save_every": args.iters, "log_every": max(1, args.iters // 10), "seed": args.seed},
        })
        torch.manual_seed(args.seed)
        random_backbone = build_meta_arch(cfg).student.backbone  # the run's own starting point
        trainer = Pretrainer(cfg, Runtime(0, 1, 0, torch.device("cpu"), "none"))
        t0 = time.perf_counter()
        exported = trainer.run(resume=False)
        train_s = time.perf_counter() - t0
        pretrained = sapiens2.load(exported)

        train_set = labelled(args.probe_train, seed=20_000 + args.seed)
        test_set = labelled(args.probe_test, seed=30_000 + args.seed)
        results = {"random init": probe(random_backbone, train_set, test_set),
                   "pretrained (EMA teacher)": probe(pretrained, train_set, test_set)}

    print(f"\n{machine()}; {args.iters} iterations x {args.batch_size} images in {train_s:.0f} s, "
          f"{args.unlabelled} unlabelled images; probe: {len(ORIENTATIONS)} grating orientations, "
          f"{args.probe_train} train / {args.probe_test} test, chance {100 / len(ORIENTATIONS):.1f} %\n")
    rand, pre = results["random init"], results["pretrained (EMA teacher)"]
    rows = []
    for feat in rand:
        for i, probe_name in enumerate(("k-NN (k=20)", "linear")):
            r, p = rand[feat][i], pre[feat][i]
            rows.append([feat, probe_name, f"{100 * r:.1f}", f"{100 * p:.1f}", f"{100 * (p - r):+.1f}"])
    print_table(["features (frozen)", "probe", "random init acc %", "pretrained acc %", "gain"], rows)
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
