"""The default image embedder: mean-pooled patch tokens of a Sapiens2 backbone (a pretrain checkpoint)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
from torch import nn

from sapiens2.tasks.resize import MEAN_RGB, STD_RGB


class BackboneEmbedder:
    """Images -> (N, D) features: each squashed to `size` x `size`, normalised as every Sapiens2 model is,
    through the backbone, patch tokens averaged (the [cls] and storage tokens left out)."""

    def __init__(self, backbone: nn.Module, size: int = 224, device: str | torch.device = "cpu",
                 batch_size: int = 32) -> None:
        if not hasattr(backbone, "forward_featmap"):
            raise TypeError(f"expected a Sapiens2 backbone (a pretrain checkpoint), got {type(backbone).__name__}")
        self.backbone = backbone.eval().to(device)
        self.size, self.device, self.batch_size = size, torch.device(device), batch_size
        self._mean = torch.tensor(MEAN_RGB, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(STD_RGB, device=self.device).view(1, 3, 1, 1)

    @classmethod
    def load(cls, model: str, size: int = 224, device: str = "cpu") -> BackboneEmbedder:
        """From an official pretrain name, hub id or file (through `sapiens2.load`)."""
        from sapiens2.hub import load

        return cls(load(model, device=device), size=size, device=device)

    @torch.inference_mode()
    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray:
        out = []
        for start in range(0, len(images), self.batch_size):
            chunk = [cv2.resize(im, (self.size, self.size), interpolation=cv2.INTER_AREA)
                     for im in images[start:start + self.batch_size]]
            x = torch.from_numpy(np.stack(chunk)).to(self.device).permute(0, 3, 1, 2).float()
            dtype = next(self.backbone.parameters()).dtype
            fmap = self.backbone.forward_featmap(((x - self._mean) / self._std).to(dtype))
            out.append(fmap.float().mean(dim=(2, 3)).cpu().numpy())
        dim = out[0].shape[1] if out else 0
        return np.concatenate(out) if out else np.zeros((0, dim), np.float32)
