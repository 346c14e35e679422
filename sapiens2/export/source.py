"""The network to export, from what `sapiens2 export MODEL` was given: a name, a hub id or a checkpoint file."""

from __future__ import annotations

import os

from torch import nn

from sapiens2.zoo import DENSE_INPUT

__all__ = ["default_input_size", "load_source"]


def load_source(spec: str | os.PathLike, allow_pickle: bool = False) -> nn.Module:
    """The float32 CPU network for an official name (task or detector), a hub id or a checkpoint file.

    The detector is recognized by its zoo name (`rtmdet-m-person`) or by a file whose keys are RTMDet's."""
    from sapiens2.detect.checkpoint import load_detector
    from sapiens2.hub import load, resolve

    path, info = resolve(spec)
    if info is not None and info.task == "detect":
        return load_detector(path)
    if path.suffix.lower() in (".onnx", ".pt2"):
        raise ValueError(f"{path} is already an exported model; export the checkpoint it came from")
    try:
        return load(path, allow_pickle=allow_pickle)
    except Exception as sapiens_error:
        try:  # a detector checkpoint under another name
            return load_detector(path)
        except Exception:
            raise sapiens_error from None


def default_input_size(network: nn.Module) -> tuple[int, int]:
    """(H, W) the network is normally fed: the detector's letterbox (640 x 640), a v1 model's training size,
    else 1024 x 768."""
    from sapiens2.detect.pipeline import SAPIENS2_SETTINGS
    from sapiens2.models.sapiens1 import trained_input_size

    if getattr(network, "task", None) is None and getattr(network, "strides", None) is not None:
        return SAPIENS2_SETTINGS.input_size, SAPIENS2_SETTINGS.input_size
    return trained_input_size(network) or DENSE_INPUT
