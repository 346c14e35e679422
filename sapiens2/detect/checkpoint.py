"""Reading the official RTMDet checkpoint safely, converting it to safetensors, and strict loading.

The official detector file is an mmengine checkpoint: a `torch.save` zip holding
`{"meta": {...}, "state_dict": {...}}`, where `meta` carries training bookkeeping (numpy scalars and arrays,
strings, dicts, sometimes objects of mmengine's own classes). Unpickling can run arbitrary code, so it is read
here with a restricted unpickler:

- tensors, `OrderedDict`, a few inert builtins and numpy's array/scalar/dtype reconstructors resolve to
  the real objects (an explicit allow-list);
- classes from the OpenMMLab training stack (`mmengine`, `mmdet`, `mmcv`, ...) become inert placeholders
  that only record the data the pickle gives them; none of their code is imported or run;
- any other global (`os.system`, `builtins.eval`, `subprocess.Popen`, ...) stops the load with
  `UnsafeCheckpointError` before it is ever called.

The file is recognised by its bytes first (`sapiens2.weights`): a TorchScript or torch.export program is
refused unread unless the caller passes `allow_code=True`, whatever the file is called; the legacy pre-1.6
format (a bare pickle stream) is refused unread. `convert_detector_checkpoint` writes the state dict once as `.safetensors`; `read_detector_state_dict`
then prefers that file when it sits next to the `.pth` and is not older than it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from sapiens2.checkpoint import CheckpointError, UnsafeCheckpointError  # noqa: F401 - re-exported
from sapiens2.detect.rtmdet import RTMDet, RTMDetConfig, shared_head_keys
from sapiens2.safe_pickle import read_pickle_checkpoint  # noqa: F401 - re-exported by sapiens2.detect
from sapiens2.weights import convert_to_safetensors, read_state_dict

_LIST_LIMIT = 12


# Errors are the package's own checkpoint errors; the old name stays for callers of this module.
DetectorCheckpointError = CheckpointError


# The detector's one-time conversion is the generic one.
convert_detector_checkpoint = convert_to_safetensors


def read_detector_state_dict(path: str | os.PathLike, allow_code: bool = False) -> tuple[dict[str, torch.Tensor], Path]:
    """The state dict from `path` and the file it was actually read from.

    What the file is comes from its bytes, not its name. A `torch.save` archive is read with the restricted
    unpickler (the official file is one); a TorchScript / torch.export program only with `allow_code=True`.
    For a `.pth`, a `.safetensors` of the same stem in the same folder is used instead when it exists and
    is at least as new (made by `convert_detector_checkpoint`).
    """
    path = Path(path)
    sibling = path.with_suffix(".safetensors")
    if (path.suffix != ".safetensors" and path.is_file() and sibling.is_file()
            and sibling.stat().st_mtime >= path.stat().st_mtime):
        path = sibling
    return read_state_dict(path, allow_pickle=True, allow_code=allow_code), path


# ---------------------------------------------------------------------------------------------------------
# Architecture from a state dict, and strict loading

_DEPTHS = {(1, 1, 1, 1): 0.167, (1, 2, 2, 1): 0.33, (2, 4, 4, 2): 0.67, (3, 6, 6, 3): 1.0, (4, 8, 8, 4): 1.33}


def infer_config(state: Mapping[str, torch.Tensor], path: str | os.PathLike = "<state dict>") -> RTMDetConfig:
    """The RTMDet size of a state dict with mmdet's key names, from its shapes and block counts.

    The box regression's exp() is not visible in the weights; it follows the official sizes: tiny and s
    regress distances linearly, m and larger (any model with at least 2 blocks in stage 1) use exp().
    """
    try:
        widen = state["backbone.stage4.0.conv.weight"].shape[0] / 1024
        blocks = tuple(1 + max(int(k.split(".")[4]) for k in state
                               if k.startswith(f"backbone.stage{s}.{2 if s == 4 else 1}.blocks."))
                       for s in range(1, 5))
        neck_blocks = 1 + max(int(k.split(".")[4]) for k in state if k.startswith("neck.top_down_blocks.0.blocks."))
        neck_out = state["neck.out_convs.0.conv.weight"].shape[0]
        classes = state["bbox_head.rtm_cls.0.weight"].shape[0]
        stacked = 1 + max(int(k.split(".")[3]) for k in state if k.startswith("bbox_head.cls_convs.0."))
    except (KeyError, ValueError, IndexError) as e:
        raise DetectorCheckpointError(path, f"not an RTMDet state dict (mmdet key names expected): missing or "
                                      f"malformed {e}") from None
    if blocks not in _DEPTHS:
        raise DetectorCheckpointError(path, f"backbone stage block counts {blocks} match no RTMDet size")
    return RTMDetConfig(deepen_factor=_DEPTHS[blocks], widen_factor=widen, neck_out_channels=neck_out,
                        neck_csp_blocks=neck_blocks, num_classes=classes, stacked_convs=stacked,
                        exp_on_reg=blocks[0] >= 2)


def check_state_dict(model: RTMDet, state: Mapping[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Raise `DetectorCheckpointError` listing missing, unexpected and wrongly shaped keys, if any."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k}: file {tuple(state[k].shape)} vs model {expected[k]}"
                  for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    problems = [f"{len(items)} {what}: {_preview(items)}" for what, items in
                (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched))
                if items]
    if problems:
        raise DetectorCheckpointError(path, "does not match the RTMDet layout; " + "; ".join(problems))
    for first, others in shared_head_keys(model).items():
        differing = [k for k in others if not torch.equal(state[k], state[first])]
        if differing:
            raise DetectorCheckpointError(path, f"head convs are shared across levels, but {_preview(differing)} "
                                          f"differ from {first}")


def load_detector(path: str | os.PathLike, config: RTMDetConfig | None = None,
                  device: torch.device | str | None = None, allow_code: bool = False) -> RTMDet:
    """An RTMDet in eval mode with the weights of `path` (.pth or .safetensors), loaded strictly.

    Without `config` the architecture is inferred from the file (see `infer_config`). `allow_code=True`
    also accepts a TorchScript / torch.export program holding the same weights (its code runs: trusted
    files only).
    """
    state, source = read_detector_state_dict(path, allow_code)
    config = config or infer_config(state, source)
    with torch.device("meta"):
        model = RTMDet(config)
    check_state_dict(model, state, source)
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device or "cpu").eval()


def _preview(items: Any) -> str:
    items = list(items)
    shown = ", ".join(items[:_LIST_LIMIT])
    return shown + (f", ... ({len(items) - _LIST_LIMIT} more)" if len(items) > _LIST_LIMIT else "")
