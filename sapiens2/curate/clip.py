"""CLIP for curation: image and text embeddings (transformers' `CLIPModel`), the LAION aesthetic head, and
zero-shot scores over prompt sets.

The image preprocessing is ours (cv2 / numpy), so nothing pulls in torchvision: CLIP's resize of the short
side, centre crop and mean / std, read from the checkpoint's ``preprocessor_config.json`` when it has one.
Weights are read as safetensors only. A hub id is looked up in the Hugging Face cache first and
downloaded only when the hub is reachable (`HF_HUB_OFFLINE=1` is honoured); a missing file is a
`CheckpointNotFoundError` with a one-line summary, as for every other model of the project.

The aesthetic head is the LAION "improved aesthetic predictor" (christophschuhmann/improved-aesthetic-predictor,
file ``sac+logos+ava1-l14-linearMSE.pth``): an MLP on L2-normalised CLIP ViT-L/14 image embeddings,
Linear 768->1024, Dropout 0.2, Linear 1024->128, Dropout 0.2, Linear 128->64, Dropout 0.1, Linear 64->16,
Linear 16->1, with no activations, kept in an ``nn.Sequential`` named ``layers`` (so the file's keys are
``layers.{0,2,4,6,7}.{weight,bias}``); trained on SAC + LAION-Logos + AVA ratings, so its scale is 1-10.
The same file is mirrored on the Hugging Face hub in ``camenduru/improved-aesthetic-predictor`` (~3.7 MB,
used there by several public projects through ``hf_hub_download``), which is our default. The older
linear head of LAION-AI/aesthetic-predictor (``sa_0_4_vit_l_14_linear.pth``: an ``nn.Linear(768, 1)``,
keys ``weight`` / ``bias``) loads too. Both are pickles: read by the restricted unpickler of
`sapiens2.safe_pickle` (tensors only, no code), or as safetensors.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from sapiens2.checkpoint import CheckpointError
from sapiens2.fetch import CheckpointNotFoundError

#: OpenAI CLIP's normalisation, used when a checkpoint has no preprocessor_config.json.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: What a transformers CLIP checkpoint folder needs from its hub repo (no pickles: safetensors only).
HUB_PATTERNS = ("config.json", "model.safetensors", "model.safetensors.index.json", "model-*.safetensors",
                "vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                "preprocessor_config.json")
#: The improved aesthetic predictor's layers: (key prefix, output width); the input is the CLIP width.
AESTHETIC_MLP = (("layers.0", 1024), ("layers.2", 128), ("layers.4", 64), ("layers.6", 16), ("layers.7", 1))


# --- locating the files ---------------------------------------------------------------------------------

def missing_clip_files(folder: Path) -> list[str]:
    """What a CLIP checkpoint folder lacks: config, safetensors weights, a tokenizer."""
    missing = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    if not ((folder / "model.safetensors").is_file() or (folder / "model.safetensors.index.json").is_file()):
        missing.append("model.safetensors")
    if not ((folder / "tokenizer.json").is_file()
            or ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file())):
        missing.append("tokenizer.json (or vocab.json + merges.txt)")
    return missing


#: The files of a CLIP hub repo that `hf download` should fetch for us.
CLIP_FILES = ("config.json", "model.safetensors", "vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json", "preprocessor_config.json")


def _hub_missing(what: str, repo: str, files: Sequence[str], reason: str) -> CheckpointNotFoundError:
    """One line, like `CheckpointNotFoundError.line` of an official model: the file, what, where, the fix."""
    others = f", with {len(files) - 1} config / tokenizer files" if len(files) > 1 else ""
    main = next((f for f in files if f.endswith((".safetensors", ".pth"))), files[0])
    return CheckpointNotFoundError(
        f"{main} ({what}, hub repo {repo}{others}): not in the Hugging Face cache; {reason}. Get it when online "
        f"with `hf download {repo} {' '.join(files)}`, or name a local copy in the [clip] table")


def clip_folder(model: str) -> Path:
    """The local folder of CLIP checkpoint `model`: a folder given as is, else a hub id from the cache or the hub.

    Raises `CheckpointNotFoundError` (one line) when the files are neither here nor obtainable."""
    path = Path(model).expanduser()
    if path.is_dir():
        missing = missing_clip_files(path)
        if missing:
            raise CheckpointNotFoundError(f"{path} (CLIP checkpoint folder) lacks {', '.join(missing)}: save the "
                                          "model with save_pretrained(..., safe_serialization=True)")
        return path
    if path.exists() or model.startswith((".", "/", "~")) or model.count("/") != 1:
        raise CheckpointNotFoundError(f"{model} (CLIP): not a checkpoint folder here, nor a hub id "
                                      "(owner/name); [clip] model names one or the other")
    from huggingface_hub import snapshot_download

    from sapiens2.fetch import hub_failure, hub_unreachable, quiet_hub

    reason = hub_unreachable()
    try:
        with quiet_hub():
            folder = Path(snapshot_download(model, allow_patterns=list(HUB_PATTERNS),
                                            local_files_only=reason is not None))
    except Exception as e:  # noqa: BLE001 - offline, no network, no such repo...: one clear line
        raise _hub_missing("CLIP", model, CLIP_FILES, reason or hub_failure(e)[0]) from None
    missing = missing_clip_files(folder)
    if missing:
        why = reason or f"the hub repo has no {', '.join(missing)} (safetensors weights are required)"
        raise _hub_missing("CLIP", model, CLIP_FILES, why)
    return folder


def aesthetic_head_file(repo: str, filename: str) -> Path:
    """The aesthetic head's file: `filename` itself when `repo` is empty, else the file of that hub repo."""
    if not repo:
        path = Path(filename).expanduser()
        if not path.is_file():
            raise CheckpointNotFoundError(f"{path} (aesthetic head): no such file ([clip] aesthetic_file, with "
                                          "aesthetic_repo = \"\" for a local file)")
        return path
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    from sapiens2.fetch import hub_failure, hub_unreachable, quiet_hub

    reason = hub_unreachable()
    if reason is not None:
        found = try_to_load_from_cache(repo, filename)
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
        raise _hub_missing("aesthetic head", repo, [filename], reason)
    try:
        with quiet_hub():
            return Path(hf_hub_download(repo, filename))
    except Exception as e:  # noqa: BLE001
        raise _hub_missing("aesthetic head", repo, [filename], hub_failure(e)[0]) from None


# --- preprocessing --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClipPreprocess:
    """CLIP's image preprocessing: short side to `short_side`, centre crop to `crop` (h, w), mean / std.

    Shrinking uses area interpolation (what an antialiased bicubic, as CLIP's own PIL resize does, comes
    closest to in cv2); enlarging uses bicubic."""

    short_side: int = 224
    crop: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD

    @classmethod
    def from_folder(cls, folder: Path, image_size: int) -> ClipPreprocess:
        """From ``preprocessor_config.json`` when the folder has one, else CLIP's constants at `image_size`."""
        path = folder / "preprocessor_config.json"
        if not path.is_file():
            return cls(image_size, (image_size, image_size))
        try:
            cfg = json.loads(path.read_text(encoding="utf-8"))
            size = cfg.get("size", image_size)
            if isinstance(size, dict):
                size = size.get("shortest_edge") or min(size["height"], size["width"])
            crop = cfg.get("crop_size", size)
            crop = (crop["height"], crop["width"]) if isinstance(crop, dict) else (crop, crop)
            mean = tuple(float(v) for v in cfg.get("image_mean", CLIP_MEAN))
            std = tuple(float(v) for v in cfg.get("image_std", CLIP_STD))
            out = cls(int(size), (int(crop[0]), int(crop[1])), mean, std)
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: not a usable CLIP preprocessor config ({type(e).__name__}: {e})") from None
        if out.short_side < 1 or min(out.crop) < 1 or len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"{path}: sizes must be >= 1 and image_mean / image_std 3 values (std > 0)")
        return out

    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """RGB uint8 images -> (N, 3, crop_h, crop_w) float32."""
        ch, cw = self.crop
        out = np.empty((len(images), 3, ch, cw), np.float32)
        mean = np.asarray(self.mean, np.float32) * 255
        scale = 1 / (np.asarray(self.std, np.float32) * 255)
        for i, im in enumerate(images):
            h, w = im.shape[:2]
            s = self.short_side / min(h, w)
            size = (max(self.short_side, round(w * s)), max(self.short_side, round(h * s)))
            im = cv2.resize(im, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
            pad_y, pad_x = max(0, ch - im.shape[0]), max(0, cw - im.shape[1])
            if pad_y or pad_x:  # a crop larger than the resized image: zero padding around it
                im = np.pad(im, ((pad_y // 2, pad_y - pad_y // 2), (pad_x // 2, pad_x - pad_x // 2), (0, 0)))
            y, x = (im.shape[0] - ch) // 2, (im.shape[1] - cw) // 2
            out[i] = ((im[y:y + ch, x:x + cw].astype(np.float32) - mean) * scale).transpose(2, 0, 1)
        return out


# --- the model ------------------------------------------------------------------------------------------

def _l2(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class ClipEmbedder:
    """L2-normalised CLIP image and text embeddings; text embeddings of a prompt set are computed once.

    Callable on a list of RGB images, so it is also an `Embedder` for dedup and clustering."""

    def __init__(self, model: nn.Module, tokenizer, preprocess: ClipPreprocess | None = None,
                 device: str | torch.device = "cpu", batch_size: int = 32) -> None:
        self.model = model.eval().to(device)
        self.tokenizer = tokenizer
        size = model.config.vision_config.image_size
        self.preprocess = preprocess or ClipPreprocess(size, (size, size))
        self.device, self.batch_size = torch.device(device), batch_size
        self._texts: dict[tuple[str, ...], np.ndarray] = {}

    @classmethod
    def load(cls, model: str, device: str = "cpu", batch_size: int = 32) -> ClipEmbedder:
        """From a hub id or a local folder (see `clip_folder`); weights from safetensors only."""
        folder = clip_folder(model)
        try:
            from transformers import CLIPModel, CLIPTokenizer
            from transformers.utils import logging as hf_logging
        except ImportError:
            raise ImportError("the CLIP stage needs transformers: pip install 'sapiens2[curate]' (or set [clip] "
                              "enabled = false)") from None

        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # the curate command shows its own progress
        try:
            net = CLIPModel.from_pretrained(folder, use_safetensors=True)
            tokenizer = CLIPTokenizer.from_pretrained(folder)
        except (OSError, ValueError) as e:
            raise ValueError(f"{folder}: cannot load the CLIP checkpoint: {str(e).splitlines()[0][:300]}") from None
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        preprocess = ClipPreprocess.from_folder(folder, net.config.vision_config.image_size)
        return cls(net, tokenizer, preprocess, device, batch_size)

    @property
    def dim(self) -> int:
        return int(self.model.config.projection_dim)

    @property
    def logit_scale(self) -> float:
        """exp of the learned temperature, capped at 100 as CLIP's training does."""
        return float(min(self.model.logit_scale.exp().item(), 100.0))

    def _dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @torch.inference_mode()
    def image_features(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(N, D) float32, unit length."""
        out = []
        for start in range(0, len(images), self.batch_size):
            x = torch.from_numpy(self.preprocess(images[start:start + self.batch_size]))
            pooled = self.model.vision_model(pixel_values=x.to(self.device, self._dtype())).pooler_output
            out.append(self.model.visual_projection(pooled).float().cpu().numpy())
        return _l2(np.concatenate(out)) if out else np.zeros((0, self.dim), np.float32)

    __call__ = image_features

    @torch.inference_mode()
    def text_features(self, prompts: Sequence[str]) -> np.ndarray:
        """(P, D) float32, unit length; computed once per prompt set for the life of this embedder."""
        key = tuple(prompts)
        if key not in self._texts:
            limit = self.model.config.text_config.max_position_embeddings
            tokens = self.tokenizer(list(key), padding=True, truncation=True, max_length=limit, return_tensors="pt")
            pooled = self.model.text_model(input_ids=tokens["input_ids"].to(self.device),
                                           attention_mask=tokens["attention_mask"].to(self.device)).pooler_output
            self._texts[key] = _l2(self.model.text_projection(pooled).float().cpu().numpy())
        return self._texts[key]


def zero_shot(image_features: np.ndarray, text_features: np.ndarray, logit_scale: float) -> np.ndarray:
    """(N, P) probabilities: a softmax over the prompts of the scaled cosine similarities, as CLIP classifies."""
    logits = logit_scale * (image_features.astype(np.float64) @ text_features.astype(np.float64).T)
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)


# --- the aesthetic head ---------------------------------------------------------------------------------

class AestheticMLP(nn.Module):
    """The improved aesthetic predictor's network, in its file's key layout (``layers.N``)."""

    def __init__(self, in_dim: int = 768) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(in_dim, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
            nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def expected_aesthetic_shapes(in_dim: int, linear: bool) -> dict[str, tuple[int, ...]]:
    """Every key and shape of a head file for `in_dim`-wide embeddings (the MLP, or the linear head)."""
    if linear:
        return {"weight": (1, in_dim), "bias": (1,)}
    shapes, width = {}, in_dim
    for prefix, out in AESTHETIC_MLP:
        shapes[f"{prefix}.weight"], shapes[f"{prefix}.bias"] = (out, width), (out,)
        width = out
    return shapes


def build_aesthetic_head(state: dict[str, torch.Tensor], path: str | os.PathLike) -> nn.Module:
    """The head (MLP or linear, told apart by the keys) with `state` loaded; a layout that is neither is a
    `CheckpointError` naming the file and what was expected."""
    linear = set(state) == {"weight", "bias"}
    first = state.get("weight" if linear else "layers.0.weight")
    in_dim = int(first.shape[-1]) if first is not None and first.ndim == 2 else 768
    want = expected_aesthetic_shapes(in_dim, linear)
    got = {k: tuple(v.shape) for k, v in state.items()}
    if got != want:
        missing = [k for k in want if k not in got]
        extra = [k for k in got if k not in want]
        wrong = [f"{k} {list(got[k])} (expected {list(want[k])})" for k in want if k in got and got[k] != want[k]]
        detail = "; ".join(part for part in (
            f"missing {', '.join(missing)}" if missing else "", f"unexpected {', '.join(extra[:8])}" if extra else "",
            f"wrong shapes {', '.join(wrong)}" if wrong else "") if part)
        raise CheckpointError(path, "is not a LAION aesthetic head (the improved predictor's MLP, layers.0/2/4/6/7, "
                                    f"or the linear head, weight/bias): {detail}")
    head = nn.Linear(in_dim, 1) if linear else AestheticMLP(in_dim)
    head.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return head.eval()


class AestheticScorer:
    """(N, D) unit CLIP image embeddings -> (N,) aesthetic scores (1-10 for the LAION heads)."""

    def __init__(self, head: nn.Module, device: str | torch.device = "cpu") -> None:
        self.head, self.device = head.eval().to(device), torch.device(device)
        weight = head.weight if isinstance(head, nn.Linear) else head.layers[0].weight
        self.in_dim = int(weight.shape[1])

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "cpu") -> AestheticScorer:
        """From a ``.pth`` (restricted unpickler: tensors only) or a ``.safetensors`` file."""
        from sapiens2.weights import read_state_dict

        return cls(build_aesthetic_head(read_state_dict(path, allow_pickle=True), path), device)

    @torch.inference_mode()
    def __call__(self, features: np.ndarray) -> np.ndarray:
        if features.ndim != 2 or features.shape[1] != self.in_dim:
            raise ValueError(f"the aesthetic head takes (N, {self.in_dim}) CLIP embeddings, got {features.shape}")
        x = torch.from_numpy(np.ascontiguousarray(features, np.float32)).to(self.device)
        return self.head(x)[:, 0].float().cpu().numpy()
