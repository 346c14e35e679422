"""Config files for training and pretraining: TOML read into plain dataclasses, checked field by field.

Every error is a `ConfigError` naming the dotted field (`optim.lr`, `data.train[0].root`) and the reason, so a
typo, a wrong type or a non-finite number is reported before anything is built. `from_dict` is generic (any
dataclass of ints, floats, bools, strings, tuples, lists, dicts, optionals, literals and nested dataclasses):
fine-tuning (`sapiens2.train.config`) and pretraining (`sapiens2.pretrain.config`) describe their sections with
it. `read_toml` turns a missing, unreadable or malformed file into a `ConfigError` naming the file.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Literal


class ConfigError(ValueError):
    """A configuration value that cannot be used: `field` is its dotted path, `reason` says why."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field or 'config'}: {reason}")


def read_toml(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """A TOML config file as a dict, with `key.path=value` overrides applied (shared with pretraining)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError("", f"{path} is a folder, not a config file (give a .toml file)")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("", f"{path}: no such config file") from None
    except UnicodeDecodeError as e:
        raise ConfigError("", f"{path} is not a UTF-8 text file (byte {e.start}); TOML configs are UTF-8") from None
    except OSError as e:
        raise ConfigError("", f"{path} cannot be read: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("", f"{path} is not valid TOML: {e}") from None
    for item in overrides:
        apply_override(data, item)
    return data


def check_folder(field: str, path: str | Path) -> None:
    """A folder the run will create or write into: refused when it, or a folder above it, is an existing file."""
    p = Path(path)
    for candidate in (p, *p.parents):
        if candidate.exists():
            if not candidate.is_dir():
                what = "is" if candidate == p else f"is inside {candidate}, which is"
                raise ConfigError(field, f"{path} {what} a file, not a folder")
            return


def apply_override(data: dict[str, Any], item: str) -> None:
    """`optim.lr=1e-4` (the value read as TOML, else as a plain string) into the nested dict."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(item, "an override must look like section.field=value")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    parts = key.strip().split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(".".join(parts[: i + 1]), "is not a table, so it has no fields to override")
        node = nxt
    node[parts[-1]] = value


def to_dict(cfg: Any) -> Any:
    """A dataclass config back to plain TOML-able values (tuples as lists, None fields dropped)."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)
                if getattr(cfg, f.name) is not None}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {str(k): to_dict(v) for k, v in cfg.items() if v is not None}
    return cfg


def dump_toml(obj: dict[str, Any]) -> str:
    """A small TOML writer for configs (scalars, arrays, tables, arrays of tables)."""
    lines: list[str] = []
    _emit(obj, [], lines)
    return "\n".join(lines).strip() + "\n"


def _emit(table: dict[str, Any], path: list[str], lines: list[str]) -> None:
    scalars = {k: v for k, v in table.items() if not _is_table(v) and not _is_table_array(v)}
    if path and (scalars or not table):
        lines.append(f"\n[{'.'.join(map(_key, path))}]")
    for k, v in scalars.items():
        lines.append(f"{_key(k)} = {_value(v)}")
    for k, v in table.items():
        if _is_table(v):
            _emit(v, [*path, k], lines)
        elif _is_table_array(v):
            for item in v:
                lines.append(f"\n[[{'.'.join(map(_key, [*path, k]))}]]")
                for ik, iv in item.items():
                    lines.append(f"{_key(ik)} = {_value(iv)}")


def _is_table(v: Any) -> bool:
    return isinstance(v, dict)


def _is_table_array(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def _key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else f'"{k}"'


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


# --------------------------------------------------------------------------- generic dataclass reading


def from_dict(cls: type, data: Any, where: str = "") -> Any:
    """Build dataclass `cls` from `data`, converting and checking every field against its type hint."""
    if not isinstance(data, dict):
        raise ConfigError(where, f"expected a table, got {_describe(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        known = ", ".join(fields)
        raise ConfigError(_join(where, unknown[0]), f"unknown field (known fields here: {known})")
    values = {}
    for name, f in fields.items():
        path = _join(where, name)
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(path, "is required")
            continue
        values[name] = _convert(hints[name], data[name], path)
    return cls(**values)


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _describe(v: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
             dict: "a table"}
    return f"{names.get(type(v), type(v).__name__)} ({v!r})" if not isinstance(v, (dict, list)) else names[type(v)]


def _convert(tp: Any, v: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return v
    if origin in (typing.Union, types.UnionType):
        if v is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(a, v, path)
            except ConfigError as e:
                errors.append(e.reason)
        raise ConfigError(path, " or ".join(dict.fromkeys(errors)))
    if origin is Literal:
        if v not in args:
            raise ConfigError(path, f"must be one of {', '.join(repr(a) for a in args)}, got {v!r}")
        return v
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, v, path)
    if origin in (list, tuple):
        if not isinstance(v, (list, tuple)):
            raise ConfigError(path, f"expected an array, got {_describe(v)}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(v) != len(args):
                raise ConfigError(path, f"expected an array of {len(args)} values, got {len(v)}")
            return tuple(_convert(a, x, f"{path}[{i}]") for i, (a, x) in enumerate(zip(args, v)))
        inner = args[0] if args else Any
        out = [_convert(inner, x, f"{path}[{i}]") for i, x in enumerate(v)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(v, dict):
            raise ConfigError(path, f"expected a table, got {_describe(v)}")
        vt = args[1] if args else Any
        return {str(k): _convert(vt, x, f"{path}.{k}") for k, x in v.items()}
    if tp is bool:
        if not isinstance(v, bool):
            raise ConfigError(path, f"expected true or false, got {_describe(v)}")
        return v
    if tp is int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(path, f"expected an integer, got {_describe(v)}")
        return v
    if tp is float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(path, f"expected a number, got {_describe(v)}")
        if not math.isfinite(v):  # TOML has inf and nan; no setting means either (a NaN loss would follow)
            raise ConfigError(path, f"must be a finite number, got {v}")
        return float(v)
    if tp is str:
        if not isinstance(v, str):
            raise ConfigError(path, f"expected a string, got {_describe(v)}")
        return v
    raise ConfigError(path, f"cannot be set from a config file (type {getattr(tp, '__name__', tp)})")
