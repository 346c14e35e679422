"""sapiens2: Meta's Sapiens2 human-centric vision transformers, end to end.

`load()` gives the networks on official or custom checkpoints; the task predictors sit on top. Names are
imported on first use, so `import sapiens2` (and `sapiens2 --help`) does not load torch.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

#: public name -> the module that defines it
_WHERE = {
    "CheckpointError": "sapiens2.checkpoint", "UnsafeCheckpointError": "sapiens2.checkpoint",
    "CheckpointMismatchError": "sapiens2.hub", "CheckpointNotFoundError": "sapiens2.hub",
    "UnknownModelError": "sapiens2.hub", "inspect": "sapiens2.hub", "load": "sapiens2.hub",
    "BackboneConfig": "sapiens2.models", "build_model": "sapiens2.models",
    "Albedo": "sapiens2.tasks", "DensePipeline": "sapiens2.tasks", "Depth": "sapiens2.tasks",
    "Matting": "sapiens2.tasks", "Normals": "sapiens2.tasks", "Pointmap": "sapiens2.tasks",
    "Segmenter": "sapiens2.tasks", "run_tasks": "sapiens2.tasks", "Pose": "sapiens2.tasks",
    "PoseResult": "sapiens2.tasks", "MODELS": "sapiens2.zoo", "TASKS": "sapiens2.task_table",
}

__all__ = ["__version__", *_WHERE]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        from importlib import import_module

        value = getattr(import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sapiens2' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
