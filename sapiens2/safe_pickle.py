"""Reading `torch.save` pickle checkpoints without running their code.

Unpickling can run arbitrary code, so pickles are read here with a restricted unpickler:

- tensors, `OrderedDict`, a few inert builtins and numpy's array/scalar/dtype reconstructors resolve to
  the real objects (an explicit allow-list, the same idea as `torch.load(weights_only=True)` plus numpy);
- classes from the OpenMMLab training stack (`mmengine`, `mmdet`, `mmcv`, ...), which mmengine checkpoints
  keep in their `meta`, become inert placeholders that only record the data the pickle gives them; none of
  their code is imported or run;
- any other global (`os.system`, `builtins.eval`, `subprocess.Popen`, ...) stops the load with
  `UnsafeCheckpointError` before it is ever called.

The archive is read here, not by `torch.load`: `torch.load` hands a TorchScript archive to `torch.jit.load`
whatever pickle module it is given, and that runs the archive's code. Only the zip format is accepted; the
legacy pre-1.6 format (a bare pickle stream) is refused unread.
"""

from __future__ import annotations

import builtins
import collections
import io
import os
import pickle
import pickletools
import sys
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sapiens2.checkpoint import (
    BARE_PICKLE,
    PROGRAMS,
    TORCH_ZIP,
    CheckpointError,
    CorruptCheckpointError,
    UnknownFormatError,
    UnsafeCheckpointError,
    detect_format,
    is_count,
    program_refusal,
)

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


def _bytearray(data: Any = b"", *args: Any) -> bytearray:
    """`bytearray` for data only: a size argument would let a file ask for any amount of memory."""
    if not isinstance(data, (bytes, str)):
        raise pickle.UnpicklingError(f"bytearray from a {type(data).__name__} is not allowed")
    return bytearray(data, *args)


def _latin1_encode(text: Any, encoding: Any = "utf-8", *args: Any) -> bytes:
    """`_codecs.encode` as protocol-2 pickles use it for bytes: a str to latin-1, nothing else."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode is allowed only to turn a str into latin-1 bytes")
    return text.encode("latin1")


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): torch._utils._rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch", "Size"): torch.Size,
    ("_codecs", "encode"): _latin1_encode,  # how protocol-2 pickles carry bytes (numpy array data)
    ("builtins", "bytearray"): _bytearray,
    **{("builtins", n): getattr(builtins, n) for n in ("set", "frozenset", "complex", "slice")},
    **{("torch", n): v for n, v in vars(torch).items() if isinstance(v, torch.dtype)},
    **_numpy_globals(),
}


class _StorageType:
    """What a pickled `torch.FloatStorage` (etc.) global stands for here: a dtype, not a callable class."""

    __slots__ = ("dtype",)

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


def _storage_types() -> dict[str, _StorageType]:
    """`torch.FloatStorage` ... by name (quantized ones excluded: their tensors are not allow-listed)."""
    found = {"UntypedStorage": _StorageType(torch.uint8)}
    with warnings.catch_warnings():  # reading a legacy storage class's dtype warns that TypedStorage is old
        warnings.simplefilter("ignore")
        for name, value in vars(torch).items():
            dtype = getattr(value, "dtype", None) if name.endswith("Storage") and not name.startswith("Q") else None
            if isinstance(dtype, torch.dtype):
                found[name] = _StorageType(dtype)
    return found


_STORAGE_TYPES = _storage_types()


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module.split(".")[0] in _PLACEHOLDER_PACKAGES:
            return _placeholder(module, name)
        raise pickle.UnpicklingError(f"refusing to load global '{module}.{name}' (not on the allow-list)")


class _ArchiveUnpickler(_RestrictedUnpickler):
    """The restricted unpickler with `torch.save`'s storage references resolved from the archive."""

    def __init__(self, data: bytes, archive: _Archive) -> None:
        super().__init__(io.BytesIO(data), encoding="utf-8")
        self.archive = archive

    def find_class(self, module: str, name: str) -> Any:
        if module in ("torch", "torch.storage") and name in _STORAGE_TYPES:
            return _STORAGE_TYPES[name]
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] in ("storage", b"storage")):
            raise pickle.UnpicklingError(f"unsupported storage reference {str(pid)[:80]}")
        _, kind, key, _location, numel = pid
        if not isinstance(kind, _StorageType) or not isinstance(key, str) or not is_count(numel):
            raise pickle.UnpicklingError(f"malformed storage reference {str(pid)[:80]}")
        storage = self.archive.storage(key, numel * torch.empty((), dtype=kind.dtype).element_size(), kind.dtype)
        return torch.storage.TypedStorage(wrap_storage=storage, dtype=kind.dtype, _internal=True)


class _Archive:
    """The records of one `torch.save` zip: `<root>/data.pkl`, `<root>/data/<key>` storages, `<root>/byteorder`."""

    _CHUNK = 16 << 20
    _MAX_DEFLATE_RATIO = 1100  # deflate cannot expand data more than ~1032x; a bigger claim is a lie
    _MAX_PICKLE = 1 << 30

    def __init__(self, path: Path, zf: zipfile.ZipFile) -> None:
        self.path, self.zf = path, zf
        roots = [n[: -len("data.pkl")] for n in zf.namelist() if n.count("/") == 1 and n.endswith("/data.pkl")]
        if len(roots) != 1:
            raise CorruptCheckpointError(path, f"a torch.save archive needs exactly one <folder>/data.pkl, found "
                                         f"{len(roots)}")
        self.root = roots[0]
        order = self._record("byteorder", optional=True) or b"little"
        if order not in (b"little", b"big"):
            raise CorruptCheckpointError(path, f"unknown byte order {order[:20]!r}")
        self.swap = order.decode() != sys.byteorder
        self.storages: dict[str, torch.UntypedStorage] = {}

    def _record(self, name: str, optional: bool = False) -> bytes | None:
        try:
            return self.zf.read(self.root + name)
        except KeyError:
            if optional:
                return None
            raise CorruptCheckpointError(self.path, f"the archive lacks its record {self.root + name}") from None

    def pickle(self) -> bytes:
        info = self.zf.getinfo(self.root + "data.pkl")
        self._check_size(info, info.file_size)
        if info.file_size > self._MAX_PICKLE:
            raise CorruptCheckpointError(self.path, f"its data.pkl claims {info.file_size} bytes; a checkpoint's "
                                         f"pickle is far smaller (at most {self._MAX_PICKLE} read)")
        with self.zf.open(info) as f:
            return f.read(self._MAX_PICKLE)

    def _check_size(self, info: zipfile.ZipInfo, nbytes: int) -> None:
        """Refuse a record whose claimed size no real archive of this file's size could hold."""
        limit = self.path.stat().st_size
        ratio = 1 if info.compress_type == zipfile.ZIP_STORED else self._MAX_DEFLATE_RATIO
        if info.compress_size > limit or nbytes > ratio * info.compress_size + 1024:
            raise CorruptCheckpointError(self.path, f"record {info.filename} claims {nbytes} bytes from "
                                         f"{info.compress_size} stored bytes in a {limit}-byte file, which no "
                                         "real archive does")

    def storage(self, key: str, nbytes: int, dtype: torch.dtype) -> torch.UntypedStorage:
        """Storage `key` read into its own buffer, once (tensors sharing it share it here too)."""
        if key in self.storages:
            found = self.storages[key]
            if found.nbytes() < nbytes:
                raise CorruptCheckpointError(self.path, f"storage {key!r} is referenced with {nbytes} bytes but "
                                             f"holds {found.nbytes()}")
            return found
        name = f"{self.root}data/{key}"
        try:
            info = self.zf.getinfo(name)
        except KeyError:
            raise CorruptCheckpointError(self.path, f"the archive lacks the storage record {name}") from None
        if info.file_size != nbytes:
            raise CorruptCheckpointError(self.path, f"storage record {name} holds {info.file_size} bytes; the "
                                         f"pickle says {nbytes}")
        self._check_size(info, nbytes)
        buffer = bytearray(nbytes)
        with self.zf.open(info) as f:
            view, got = memoryview(buffer), 0
            while got < nbytes:
                chunk = f.read(min(self._CHUNK, nbytes - got))
                if not chunk:
                    raise CorruptCheckpointError(self.path, f"storage record {name} is truncated")
                view[got:got + len(chunk)] = chunk
                got += len(chunk)
        storage = torch.frombuffer(buffer, dtype=torch.uint8).untyped_storage() if nbytes else torch.UntypedStorage(0)
        if self.swap:
            storage.byteswap(dtype)
        self.storages[key] = storage
        return storage


_MEMO_PUTS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})


def _check_memo_indices(data: bytes) -> None:
    """Refuse memo slots numbered far beyond the opcodes before them, without unpickling anything.

    A pickler numbers its memo 0, 1, 2, ... (at most one slot per opcode; the slack allows for optimised
    streams); CPython's unpickler grows its memo array to any index it is given, so one
    `LONG_BINPUT 4294967295` costs tens of GB and minutes.
    """
    try:
        for count, (op, arg, _) in enumerate(pickletools.genops(data)):
            if op.name in _MEMO_PUTS and (not isinstance(arg, int) or not 0 <= arg <= 2 * count + 64):
                raise pickle.UnpicklingError(f"memo index {arg} at opcode {count} (a real pickle numbers its memo "
                                             "from 0)")
    except ValueError as e:
        raise pickle.UnpicklingError(f"malformed opcodes: {e}") from None


def read_pickle_checkpoint(path: str | os.PathLike) -> Any:
    """The object in a `torch.save` zip archive, unpickled by the restricted unpickler only.

    The format is decided from the bytes first: TorchScript and torch.export programs (which `torch.load`
    would hand to `torch.jit.load`, running their code) and bare pickle streams are refused unread.
    `torch.load` is never called: this module reads the archive's records itself.
    """
    path = Path(path)
    kind = detect_format(path)
    if kind in PROGRAMS:
        raise program_refusal(path, kind)
    if kind == BARE_PICKLE:
        raise UnknownFormatError(path, "not a torch.save zip archive but a bare pickle stream (PyTorch's legacy "
                                 "pre-1.6 format, or a plain pickle), which is not read: re-save it with a "
                                 "current PyTorch as weights only")
    if kind != TORCH_ZIP:
        raise UnknownFormatError(path, f"is a {kind} file, not a torch.save archive")
    try:
        with zipfile.ZipFile(path) as zf:
            archive = _Archive(path, zf)
            data = archive.pickle()
            _check_memo_indices(data)
            return _ArchiveUnpickler(data, archive).load()
    except CheckpointError:
        raise
    except pickle.UnpicklingError as e:
        if "allow-list" in str(e):
            raise UnsafeCheckpointError(path, f"unsafe pickle, nothing executed: {e}") from None
        raise CorruptCheckpointError(path, f"corrupt pickle data: {e}") from None
    except Exception as e:  # noqa: BLE001 - only allow-listed code runs here, so any failure is a bad file
        raise CorruptCheckpointError(path, f"unreadable checkpoint (truncated or corrupt?): "
                                     f"{type(e).__name__}: {str(e)[:200]}") from None


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
    # A view may repeat its storage's bytes (stride 0) to claim any size; weights never do, and such a
    # tensor would be materialised later (conversion, dtype change) at the size it claims.
    inflated = [k for k, v in obj.items() if v.numel() * v.element_size() > v.untyped_storage().nbytes()]
    if inflated:
        k = inflated[0]
        raise CorruptCheckpointError(path, f"tensor {k!r} claims shape {list(obj[k].shape)} over a storage of only "
                                     f"{obj[k].untyped_storage().nbytes()} bytes")
    return dict(obj)


def read_pickle_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a pickle checkpoint, read with the restricted unpickler."""
    return state_dict_from_checkpoint(read_pickle_checkpoint(path), path)
