"""The loading policy, in one place: what a checkpoint file is allowed to make this process do.

Every entry point that reads a checkpoint (`sapiens2.load`, `inspect`, `convert`, the person detector,
training's `model.init`) comes through `open_weights`, which first decides what the file is from its bytes
(`sapiens2.checkpoint.detect_format`), then:

- safetensors: read by this package's own parser; always allowed (it cannot carry code);
- a `torch.save` zip archive: refused unless `allow_pickle=True`, then unpickled only by the restricted
  unpickler of `sapiens2.safe_pickle` (tensors, plain containers, numpy arrays; nothing that runs code);
- a TorchScript or torch.export program, or an AOTInductor package (compiled machine code): refused unread
  unless `allow_code=True`, then loaded by `torch.jit.load` / `torch.export.load` /
  `torch._inductor.aoti_load_package`, which run its code (`load_program` is the only place that calls
  them);
- anything else, including bare pickle streams (PyTorch's legacy format): refused unread.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from sapiens2.checkpoint import (
    AOTINDUCTOR,
    BARE_PICKLE,
    PROGRAMS,
    SAFETENSORS,
    TORCHSCRIPT,
    CheckpointError,
    CorruptCheckpointError,
    SafetensorsFile,
    UnsafeCheckpointError,
    detect_format,
    program_refusal,
)
from sapiens2.safe_pickle import read_pickle_state_dict

StateItems = Callable[[], Iterator[tuple[str, torch.Tensor]]]


@dataclass
class Weights:
    """An opened checkpoint: its format, every key's shape, and a way to read the tensors one by one."""

    path: Path
    format: str
    shapes: dict[str, tuple[int, ...]]
    tensors: StateItems
    metadata: dict[str, str] = field(default_factory=dict)


def open_weights(path: str | os.PathLike, *, allow_pickle: bool = False, allow_code: bool = False) -> Weights:
    """The weights in `path`, under the policy of the module docstring.

    Raises `UnsafeCheckpointError` (a pickle without `allow_pickle`, or one naming code),
    `ProgramCheckpointError` (a program without `allow_code`), `UnknownFormatError` / `CorruptCheckpointError`
    (not a checkpoint, or a damaged one) and FileNotFoundError; all but the last are `CheckpointError`s
    whose message names the file.
    """
    path = Path(path)
    kind = detect_format(path)
    if kind == SAFETENSORS:
        st = SafetensorsFile(path)
        return Weights(path, kind, st.shapes, st.iter_tensors, st.metadata)
    if kind == AOTINDUCTOR:  # machine code with its weights inside: nothing to read them back as tensors
        if not allow_code:
            raise program_refusal(path, kind)
        raise CheckpointError(path, "is an AOTInductor package (compiled code): it holds no weights to read; "
                              "use the checkpoint it was compiled from")
    if kind in PROGRAMS:
        state = program_state_dict(load_program(path, allow_code=allow_code), path)
    elif kind == BARE_PICKLE or allow_pickle:
        state = read_pickle_state_dict(path)  # a bare pickle is refused there, unread
    else:
        raise UnsafeCheckpointError(
            path, "is a pickle checkpoint (a torch.save archive), which can run arbitrary code when loaded by "
            "ordinary means. Pass allow_pickle=True (command line: --allow-pickle) to read it with a "
            "weights-only unpickler (tensors and numpy arrays, no code), or use a .safetensors file.")
    return Weights(path, kind, {k: tuple(v.shape) for k, v in state.items()}, lambda: iter(state.items()))


def read_state_dict(path: str | os.PathLike, *, allow_pickle: bool = False,
                    allow_code: bool = False) -> dict[str, torch.Tensor]:
    """Every tensor of `path`, read under the policy (see `open_weights`)."""
    return dict(open_weights(path, allow_pickle=allow_pickle, allow_code=allow_code).tensors())


class CompiledPackage(nn.Module):
    """An AOTInductor package's compiled model as a module: it runs on the device it was compiled for and
    holds no parameters (its weights live inside the compiled library)."""

    def __init__(self, runner: object, path: Path) -> None:
        super().__init__()
        self.runner = runner
        self.path = path

    def forward(self, *args: torch.Tensor) -> object:
        return self.runner(*args)


def load_program(path: str | os.PathLike, *, allow_code: bool, device: str | torch.device | None = None,
                 extra_files: dict[str, str] | None = None) -> nn.Module:
    """The module of a TorchScript or torch.export archive, or of an AOTInductor package. Its code runs:
    only with `allow_code=True`. `extra_files` (torch.export, AOTInductor): names to read from the archive,
    filled in place."""
    path = Path(path)
    kind = detect_format(path)
    if kind not in PROGRAMS:
        raise CheckpointError(path, f"is a {kind} file, not a TorchScript or torch.export program")
    if not allow_code:
        raise program_refusal(path, kind)
    try:
        if kind == TORCHSCRIPT:
            return torch.jit.load(str(path), map_location=device or "cpu")
        if kind == AOTINDUCTOR:
            from torch._inductor import aoti_load_package

            _read_extra_files(path, extra_files)
            return CompiledPackage(aoti_load_package(str(path)), path)
        module = torch.export.load(str(path), extra_files=extra_files).module()
    except Exception as e:  # noqa: BLE001 - the caller trusted this file; say it failed, in one line
        raise CorruptCheckpointError(path, f"the {kind} could not be loaded: {type(e).__name__}: "
                                     f"{str(e).splitlines()[0][:200] if str(e) else ''}") from None
    return module.to(device) if device is not None else module


def _read_extra_files(path: Path, extra_files: dict[str, str] | None) -> None:
    """Fill `extra_files` from a PT2 archive's `extra/` members (plain text; nothing is run)."""
    import zipfile

    if not extra_files:
        return
    with zipfile.ZipFile(path) as z:
        members = {name.split("/", 1)[1]: name for name in z.namelist() if "/" in name}
        for name in extra_files:
            if f"extra/{name}" in members:
                extra_files[name] = z.read(members[f"extra/{name}"]).decode("utf-8")


def program_state_dict(module: nn.Module, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The parameters and buffers a loaded program holds, by name."""
    state = {k: v.detach() for k, v in module.state_dict().items() if isinstance(v, torch.Tensor)}
    if not state:
        raise CheckpointError(path, "the program holds no named weights")
    return state


def convert_to_safetensors(src: str | os.PathLike, out_safetensors: str | os.PathLike | None = None, *,
                           allow_code: bool = False) -> Path:
    """Write the weights of a `.pth` (or, with `allow_code=True`, a program) as `.safetensors`.

    The default output sits beside the input with the same stem. The pickle is read with the restricted
    unpickler, so converting never runs code from it. The file is written to a temporary name and renamed
    into place, so a reader never sees half a file. Tensors that share storage in the pickle (e.g. the
    detector head's shared convs) are written as copies.
    """
    src = Path(src)
    out = Path(out_safetensors) if out_safetensors is not None else src.with_suffix(".safetensors")
    if out.resolve() == src.resolve():
        raise CheckpointError(src, "is its own conversion target; give another output path")
    state = read_state_dict(src, allow_pickle=True, allow_code=allow_code)
    tensors = {k: v.detach().contiguous().clone() for k, v in state.items()}
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(tmp), metadata={"format": "pt", "converted_from": src.name})
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
