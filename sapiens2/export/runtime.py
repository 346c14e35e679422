"""Exported files as `nn.Module`s that the predictors run like the PyTorch networks they came from.

`OnnxNetwork` feeds onnxruntime, `ProgramNetwork` a `torch.export` program; both take the float32 batch a
predictor makes and return tensors shaped exactly as the PyTorch network's outputs, so `Segmenter("m.onnx")`
and `Pose("pose.onnx", detector=None)` keep the project's own pre- and post-processing. They carry what the
predictors read from a network: `task`, `num_keypoints` (pose), `strides` (the detector), `input_size`, and
one empty float32 parameter that says which device and dtype to feed (always float32; a half-precision file
casts inside its graph).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sapiens2.checkpoint import CheckpointError, UnsafeCheckpointError
from sapiens2.export.adapter import ExportInfo, unflatten
from sapiens2.export.program import INFO_FILE
from sapiens2.weights import CompiledPackage, load_program

__all__ = ["ExportedNetwork", "OnnxNetwork", "ProgramNetwork", "load_exported"]

EXPORTED_SUFFIXES = (".onnx", ".pt2")


class ExportedNetwork(nn.Module):
    """What both runtimes share: the stored info, input checks, fixed-batch looping, output nesting."""

    def __init__(self, path: Path, info: ExportInfo) -> None:
        super().__init__()
        # The predictors take device and dtype from the first parameter; an exported file takes float32.
        self.input_marker = nn.Parameter(torch.empty(0), requires_grad=False)
        self.path = path
        self.info = info
        self.task = info.task
        self.input_size = tuple(info.input_size)
        if info.num_keypoints is not None:
            self.num_keypoints = info.num_keypoints
        if info.strides is not None:
            self.strides = tuple(info.strides)

    def extra_repr(self) -> str:
        h, w = self.input_size
        batch = "any batch" if self.info.batch is None else f"batch {self.info.batch}"
        return f"{self.path.name}: {self.task}, {h}x{w}, {batch}, {self.info.dtype}"

    def forward(self, x: torch.Tensor) -> Any:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"{self.path.name}: expected a B x 3 x H x W batch, got {tuple(x.shape)}")
        if tuple(x.shape[-2:]) != self.input_size:
            h, w = self.input_size
            raise ValueError(f"{self.path.name} was exported for {h}x{w} inputs, got {x.shape[-2]}x{x.shape[-1]}: "
                             f"pass input_size=({h}, {w}) to the predictor, or export again with --input-size")
        x = x.float()
        if self.info.batch is None or x.shape[0] == self.info.batch:
            flat = self.run_flat(x)
        else:  # a fixed-batch file: one image at a time
            parts = [self.run_flat(x[i:i + 1]) for i in range(x.shape[0])]
            flat = [torch.cat(outs) for outs in zip(*parts)]
        return unflatten([t.to(x.device) for t in flat], self.info.layout)

    def run_flat(self, x: torch.Tensor) -> Sequence[torch.Tensor]:
        """The graph's flat float32 outputs for a batch it accepts."""
        raise NotImplementedError


class OnnxNetwork(ExportedNetwork):
    """An exported ONNX file on onnxruntime. `providers`: onnxruntime execution providers in order of
    preference (default: every available one, e.g. CUDA then CPU); `threads`: intra-op threads (0: its own)."""

    def __init__(self, path: str | os.PathLike, providers: Sequence[str] | None = None, threads: int = 0) -> None:
        import onnxruntime as ort

        from sapiens2.export.adapter import METADATA_KEY

        path = Path(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads)
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(str(path), options, providers=list(providers or ort.get_available_providers()))
        except Exception as e:  # onnxruntime raises its own exception types for unreadable or invalid files
            raise CheckpointError(path, f"onnxruntime cannot load it: {e}") from e
        meta = session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in meta:
            raise CheckpointError(path, "is not a sapiens2 export (no `sapiens2` metadata): export it with "
                                  "`sapiens2 export`, or run it with onnxruntime directly")
        super().__init__(path, ExportInfo.from_json(meta[METADATA_KEY]))
        self.session = session
        self.input_name = session.get_inputs()[0].name

    def run_flat(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = self.session.run(None, {self.input_name: x.detach().cpu().numpy()})
        return [torch.from_numpy(o) for o in outs]


class ProgramNetwork(ExportedNetwork):
    """A `torch.export` program written by `sapiens2 export --format pt2`; it runs on the program's device
    (move the module with `.to(device)`). Or an AOTInductor package (`--format pt2 --aoti`), which runs on
    the CPU it was compiled for."""

    def __init__(self, path: str | os.PathLike, allow_code: bool = False) -> None:
        path = Path(path)
        if not allow_code:
            raise UnsafeCheckpointError(
                path, "is a torch.export program (or AOTInductor package), which carries code that runs when "
                "loaded. Pass allow_code=True for a file you trust "
                "(sapiens2.export.load_exported(path, allow_code=True)), or "
                "export ONNX instead, which needs no such trust")
        extra = {INFO_FILE: ""}
        try:
            module = load_program(path, allow_code=True, extra_files=extra)  # the one place programs are run
        except CheckpointError:
            raise
        except Exception as e:  # a corrupt zip, another format, a version mismatch: one clear error
            raise CheckpointError(path, f"not a readable torch.export program ({type(e).__name__}: {e})") from e
        if not extra[INFO_FILE]:
            raise CheckpointError(path, f"is a torch.export program without {INFO_FILE}: not written by "
                                  "`sapiens2 export` (Sapiens v1 lite archives load with sapiens2.load(..., "
                                  "allow_code=True))")
        super().__init__(path, ExportInfo.from_json(extra[INFO_FILE]))
        self.program = module

    def train(self, mode: bool = True) -> ProgramNetwork:
        """A program is frozen in inference form (it refuses train()/eval()); only the flag is kept."""
        self.training = mode
        return self

    def run_flat(self, x: torch.Tensor) -> Sequence[torch.Tensor]:
        if isinstance(self.program, CompiledPackage):
            return self.program(x.cpu().contiguous())
        device = next(self.program.parameters(), self.input_marker).device
        return self.program(x.to(device))


def load_exported(path: str | os.PathLike, allow_code: bool = False, providers: Sequence[str] | None = None,
                  threads: int = 0) -> ExportedNetwork:
    """An exported `.onnx` or `.pt2` file as a network for the predictors (`.pt2` needs `allow_code=True`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such exported model file")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return OnnxNetwork(path, providers, threads)
    if suffix == ".pt2":
        return ProgramNetwork(path, allow_code)
    raise ValueError(f"{path}: not an exported model (expected {' or '.join(EXPORTED_SUFFIXES)})")
