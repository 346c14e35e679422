"""Reading `torch.save` pickle checkpoints without running their code.

Unpickling can run arbitrary code, so pickles are read here with a restricted unpickler:

- tensors, `OrderedDict`, a few inert builtins and numpy's array/scalar/dtype reconstructors resolve to
  the real objects (an explicit allow-list, the same idea as `torch.load(weights_only=True)` plus numpy);
- classes from the OpenMMLab training stack (`mmengine`, `mmdet`, `mmcv`, ...), which mmengine checkpoints
  keep in their `meta`, become inert placeholders that only record the data the pickle gives them; none of
  their code is imported or run;
- any other global (`os.system`, `builtins.eval`, `subprocess.Popen`, ...) stops the load with
  `UnsafeCheckpointError` before it is ever called.

Only the zip format is accepted; the legacy pre-1.6 format (a bare pickle stream) is refused unread.
"""

from __future__ import annotations

import builtins
import codecs
import collections
import os
import pickle
import types
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from sapiens2.checkpoint import CheckpointError, UnsafeCheckpointError  # noqa: F401 - re-raised types

_LIST_LIMIT = 12




class _Placeholder:
    """Stands in for an object of a training-framework class: keeps what the pickle passes, runs nothing."""

    qualified_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> _Placeholder:
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs, self.state = args, kwargs, None
        self.items: dict[Any, Any] = {}
        self.values: list[Any] = []

    def __setstate__(self, state: Any) -> None:
        self.state = state

    # dict and list subclasses are rebuilt through SETITEMS / APPENDS.
    def __setitem__(self, key: Any, value: Any) -> None:
        self.items[key] = value

    def append(self, value: Any) -> None:
        self.values.append(value)

    def extend(self, values: Any) -> None:
        self.values.extend(values)

    def __repr__(self) -> str:
        return f"<placeholder for {self.qualified_name}>"


_PLACEHOLDER_PACKAGES = ("mmengine", "mmdet", "mmcv", "mmpose", "mmyolo", "mmpretrain", "mmcls")
_placeholders: dict[str, type] = {}


def _placeholder(module: str, name: str) -> type:
    key = f"{module}.{name}"
    if key not in _placeholders:
        _placeholders[key] = type(name, (_Placeholder,), {"qualified_name": key, "__module__": __name__})
    return _placeholders[key]


def _numpy_globals() -> dict[tuple[str, str], Any]:
    core = getattr(np, "_core", None) or np.core
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    # Pickles name numpy's core module as numpy.core (numpy 1) or numpy._core (numpy 2); both mean the same.
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = core.multiarray._reconstruct
        allowed[(mod, "scalar")] = core.multiarray.scalar
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        for name in dir(dtypes):
            obj = getattr(dtypes, name)
            if isinstance(obj, type) and issubclass(obj, np.dtype):
                allowed[("numpy.dtypes", name)] = obj
    return allowed


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch", "Size"): torch.Size,
    ("_codecs", "encode"): codecs.encode,  # how protocol-2 pickles carry bytes (numpy array data)
    **{("builtins", n): getattr(builtins, n) for n in ("set", "frozenset", "complex", "slice", "bytearray")},
    **_numpy_globals(),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module.split(".")[0] in _PLACEHOLDER_PACKAGES:
            return _placeholder(module, name)
        raise pickle.UnpicklingError(f"refusing to load global '{module}.{name}' (not on the allow-list)")


def _restricted_load(file: Any, **kwargs: Any) -> Any:
    return _RestrictedUnpickler(file, **kwargs).load()


# torch.load takes a "pickle module": anything with an Unpickler class and a load function.
_restricted_pickle = types.ModuleType("sapiens2_restricted_pickle")
_restricted_pickle.Unpickler = _RestrictedUnpickler  # type: ignore[attr-defined]
_restricted_pickle.load = _restricted_load  # type: ignore[attr-defined]
_restricted_pickle.__name__ = "sapiens2_restricted_pickle"


def read_pickle_checkpoint(path: str | os.PathLike) -> Any:
    """Unpickle a `torch.save` zip checkpoint with the restricted unpickler (see the module docstring)."""
    path = Path(path)
    require_nonempty_file(path)
    if not zipfile.is_zipfile(path):
        raise CheckpointError(path, "not a PyTorch checkpoint: not a torch.save zip archive (random "
                                      "bytes, a truncated download, or the legacy pre-1.6 format, which is "
                                      "not read)")
    try:
        return torch.load(path, map_location="cpu", pickle_module=_restricted_pickle, weights_only=False)
    except pickle.UnpicklingError as e:
        if "allow-list" in str(e):
            raise UnsafeCheckpointError(path, f"unsafe pickle, nothing executed: {e}") from None
        raise CheckpointError(path, f"corrupt pickle data: {e}") from None
    except (RuntimeError, EOFError, OSError, ValueError, TypeError, AttributeError, KeyError,
            IndexError, zipfile.BadZipFile) as e:
        raise CheckpointError(path, f"unreadable checkpoint (truncated or corrupt?): "
                                      f"{type(e).__name__}: {e}") from None


def require_nonempty_file(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(path, "empty file (0 bytes)")




def state_dict_from_checkpoint(obj: Any, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict of a checkpoint (`state_dict`, `model` or `module` entry, or a bare tensor dict), checked."""
    for wrapper in ("state_dict", "model", "module"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
            break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(path, f"holds a {type(obj).__name__}, not a checkpoint with a "
                                      "'state_dict' of tensors")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(path, f"'state_dict' has {len(bad)} entries that are not named tensors, "
                                      f"e.g. {', '.join(map(str, bad[:_LIST_LIMIT]))}")
    return dict(obj)




def read_pickle_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a pickle checkpoint, read with the restricted unpickler."""
    return state_dict_from_checkpoint(read_pickle_checkpoint(path), path)


def convert_to_safetensors(pth: str | os.PathLike, out_safetensors: str | os.PathLike | None = None) -> Path:
    """Write the state dict of a `.pth` as `.safetensors` (default: beside it, same stem), once.

    The file is written to a temporary name and renamed into place, so a reader never sees half a file.
    Tensors that share storage in the pickle (e.g. the detector head's shared convs) are written as copies.
    """
    pth = Path(pth)
    out = Path(out_safetensors) if out_safetensors is not None else pth.with_suffix(".safetensors")
    state = read_pickle_state_dict(pth)
    tensors = {k: v.detach().contiguous().clone() for k, v in state.items()}
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(tmp), metadata={"format": "pt", "converted_from": pth.name})
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
