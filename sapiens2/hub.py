"""`load()`: a model name, hub id or file -> the network with its weights, checked strictly.

Where a checkpoint is looked for, in order: the path itself; the reference folder layout under
`$SAPIENS_CHECKPOINT_ROOT` (default `~/sapiens2_host/<task>/<file>`); the Hugging Face cache, downloading
into it when the hub can be reached (`sapiens2.fetch`). The network is built on the meta device (no
memory, no init), every key and shape of the file is checked against it before any tensor is read, and
tensors are then read one by one, converted to the requested dtype and assigned, so loading peaks near
the checkpoint's own size.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from sapiens2.checkpoint import PROGRAMS, CheckpointError, detect_format
from sapiens2.fetch import (  # noqa: F401 - part of this module's interface
    CheckpointNotFoundError,
    cached_path,
    checkpoint_root,
    download,
    local_path,
)
from sapiens2.models.backbone import ARCHS
from sapiens2.models.build import official_head_config
from sapiens2.models.layout import CheckpointLayout, NotSapiens2Error, infer_layout
from sapiens2.models.layout_v1 import V1Layout, infer_v1_layout, looks_like_v1, official_v1_layout
from sapiens2.nn.rope import rope_periods
from sapiens2.weights import load_program, open_weights
from sapiens2.zoo import MODELS, ModelInfo, find_model, suggest

Layout = CheckpointLayout | V1Layout
_PERIODS = "rope_embed.periods"
_LIST_AT_MOST = 12


class UnknownModelError(ValueError):
    """A name that is neither a file nor an official model."""


class CheckpointMismatchError(CheckpointError):
    """The file's keys or shapes are not those of the requested network."""


def resolve(name_or_path: str | os.PathLike) -> tuple[Path, ModelInfo | None]:
    """The checkpoint file for a path, an official name or hub id, and its zoo entry when it has one."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.is_file():
        return path, find_model(path.name)
    if path.is_dir():
        raise CheckpointError(path, "is a directory; give the checkpoint file inside it")
    info = find_model(text)
    if info is None:
        if path.suffix or text.startswith((".", "~", os.sep)) or text.count("/") > 1:
            raise CheckpointNotFoundError(f"{path}: no such checkpoint file")
        close = suggest(text)
        hint = f" Did you mean {', '.join(close)}?" if close else " Run `sapiens2 models` for the list."
        raise UnknownModelError(f"{text!r} is neither a file nor an official Sapiens2 model name.{hint}")
    for candidate in (local_path(info), cached_path(info)):
        if candidate is not None and candidate.is_file():
            return candidate, info
    return download(info), info


def load(
    name_or_path: str | os.PathLike,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    allow_pickle: bool = False,
    rope_dtype: torch.dtype | None = None,
    allow_code: bool = False,
) -> nn.Module:
    """The network for an official name (`sapiens2-pose-0.4b`), hub id (`facebook/sapiens2-pose-0.4b`) or file.

    Returns the backbone for pretrain checkpoints and backbone + decode_head for task checkpoints, in eval
    mode, float32 unless `dtype` says otherwise (the RoPE periods stay bfloat16, as in the reference).
    `rope_dtype=torch.float32` computes RoPE in float32 instead of the reference's bfloat16.
    What a file is comes from its bytes, never its name (see `sapiens2.weights`): pickle archives are
    refused unless `allow_pickle=True`, and then read weights-only (no code runs). TorchScript and
    torch.export programs, such as Sapiens v1 "lite" archives (`*_torchscript.pt2`, `*_bfloat16.pt2`),
    carry code: they are refused unread unless `allow_code=True` (trusted files only), and then returned
    as the module they contain. `device="meta"` checks the file against the network without reading any
    tensor data.
    """
    path, info = resolve(name_or_path)
    if info is not None and info.task == "detect":
        raise ValueError(f"{info.name} is the person detector: load it with sapiens2.detect.PersonDetector.from_file")
    if detect_format(path) in PROGRAMS:
        return _load_program(path, allow_code, device, dtype)
    weights = open_weights(path, allow_pickle=allow_pickle)
    shapes, tensors, hints = weights.shapes, weights.tensors, weights.metadata
    layout = _layout_for(path, shapes, info, hints)
    with torch.device("meta"):
        model = layout.build(rope_dtype)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    _check_keys(path, expected, shapes, layout, info)
    if torch.device(device or "cpu").type == "meta":
        # Checks only: the layout and every key and shape were verified above; no tensor data is read.
        return model.to(dtype or torch.float32).eval()
    state = dict(_converted(tensors(), dtype or torch.float32, device))
    periods_key = next((k for k in expected if k.endswith(_PERIODS)), None)
    if periods_key is not None and periods_key not in state:
        # Deterministic from the arch: regenerated exactly as the reference creates it.
        state[periods_key] = rope_periods(layout.backbone.head_dim, layout.backbone.rope_base).to(device or "cpu")
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def _load_program(path: Path, allow_code: bool, device: str | torch.device | None,
                  dtype: torch.dtype | None) -> nn.Module:
    """A TorchScript or torch.export archive (Sapiens v1 lite), which carries code, on explicit opt-in."""
    module = load_program(path, allow_code=allow_code, device=device)
    info = find_model(path.name.replace("_torchscript", "").replace("_bfloat16", ""))
    if dtype is not None:
        module = module.to(dtype)
    try:
        module.task = info.task if info else "unknown"
    except (AttributeError, RuntimeError):  # a ScriptModule may refuse new attributes
        pass
    try:
        module.eval()
    except NotImplementedError:  # an exported program is already frozen in inference form
        pass
    return module


def inspect(name_or_path: str | os.PathLike, allow_pickle: bool = False, allow_code: bool = False) -> Layout:
    """What a checkpoint holds (generation, arch, task, head): from a safetensors header alone; a pickle is
    read (restricted unpickler) only with `allow_pickle`, a program loaded (its code runs) only with
    `allow_code`."""
    path, _ = resolve(name_or_path)
    weights = open_weights(path, allow_pickle=allow_pickle, allow_code=allow_code)
    try:
        return infer_any_layout(weights.shapes, weights.metadata)
    except NotSapiens2Error as e:
        raise CheckpointError(path, f"not a Sapiens checkpoint: {e}") from e


def infer_any_layout(shapes: Mapping[str, Sequence[int]], hints: Mapping[str, str] | None = None) -> Layout:
    """The Sapiens v1 or Sapiens2 layout the keys and shapes describe.

    `hints` is the safetensors metadata. Files written by `sapiens2 train` carry `task` and `num_heads`,
    which a v1 file's shapes cannot tell for a custom width or for a 1- or 3-class segmentation head.
    """
    hints = hints or {}
    if looks_like_v1(shapes):
        heads = hints.get("num_heads", "")
        try:
            return infer_v1_layout(shapes, int(heads) if heads.isdigit() else None, hints.get("task"))
        except (KeyError, IndexError, ValueError) as e:
            raise NotSapiens2Error(f"it looks like Sapiens v1 but its layout is incomplete ({e})") from e
    return infer_layout(shapes)


def official_layout(info: ModelInfo) -> Layout:
    """The layout every file of the official model `info` has."""
    if info.generation == 1:
        return official_v1_layout(info.arch, info.task, info.keypoints)
    head = None if info.task == "pretrain" else official_head_config(info.arch, info.task)
    return CheckpointLayout(ARCHS[info.arch], info.task, head)


def _layout_for(path: Path, shapes: Mapping[str, Sequence[int]], info: ModelInfo | None,
                hints: Mapping[str, str] | None = None) -> Layout:
    """The layout to build: the zoo entry's when the file was named as an official model, else the file's own."""
    try:
        found = infer_any_layout(shapes, hints)
    except NotSapiens2Error as e:
        if info is None:
            raise CheckpointError(path, f"not a Sapiens checkpoint: {e}") from e
        raise CheckpointMismatchError(path, f"expected {_what(info)}, but {e}") from e
    if info is None:
        return found
    if (found.generation, found.arch, found.task, found.keypoints) != (info.generation, info.arch, info.task,
                                                                         info.keypoints):
        raise CheckpointMismatchError(path, f"expected {_what(info)}, but the file looks like {found.describe()}")
    return official_layout(info)


def _what(info: ModelInfo) -> str:
    generation = "Sapiens v1" if info.generation == 1 else "Sapiens2"
    keypoints = f", {info.keypoints} keypoints" if info.keypoints and info.generation == 1 else ""
    return f"{info.name} ({generation} {info.arch} {info.task}{keypoints})"


def _check_keys(
    path: Path,
    expected: Mapping[str, tuple[int, ...]],
    found: Mapping[str, Sequence[int]],
    layout: Layout,
    info: ModelInfo | None,
) -> None:
    missing = [k for k in expected if k not in found and not k.endswith(_PERIODS)]
    unexpected = [k for k in found if k not in expected]
    mismatched = [k for k in expected if k in found and tuple(found[k]) != expected[k]]
    if not (missing or unexpected or mismatched):
        return
    lines = [f"does not match {info.name if info else layout.describe()}:"]
    lines += _listing("missing", missing, lambda k: f"{k} {list(expected[k])}")
    lines += _listing("unexpected", unexpected, lambda k: f"{k} {list(found[k])}")
    lines += _listing("wrong shape", mismatched, lambda k: f"{k}: file {list(found[k])}, model {list(expected[k])}")
    try:
        lines.append(f"The file looks like {infer_any_layout(found).describe()}, with {len(found)} tensors.")
    except NotSapiens2Error as e:
        lines.append(f"The file is not recognisable as Sapiens: {e}.")
    raise CheckpointMismatchError(path, "\n".join(lines))


def _listing(title: str, keys: list[str], fmt) -> list[str]:
    if not keys:
        return []
    shown = [f"    {fmt(k)}" for k in keys[:_LIST_AT_MOST]]
    more = [f"    ... and {len(keys) - _LIST_AT_MOST} more"] if len(keys) > _LIST_AT_MOST else []
    return [f"  {len(keys)} {title}:", *shown, *more]


def _converted(
    items: Iterable[tuple[str, torch.Tensor]], dtype: torch.dtype, device: str | torch.device | None
) -> Iterator[tuple[str, torch.Tensor]]:
    """Each tensor in the target dtype and device, one at a time (RoPE periods always bfloat16)."""
    for key, t in items:
        target = torch.bfloat16 if key.endswith(_PERIODS) else dtype
        if t.is_floating_point() and t.dtype != target:
            t = t.to(target)
        if device is not None:
            t = t.to(device)
        yield key, t


def available_models() -> dict[str, Path | None]:
    """Every official model and the local file that holds it (reference layout or hub cache), if any."""
    out: dict[str, Path | None] = {}
    for name, info in MODELS.items():
        here = local_path(info)
        out[name] = here if here.is_file() else cached_path(info)
    return out
