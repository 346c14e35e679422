"""sapiens2: Meta's Sapiens2 human-centric vision transformers, end to end.

`load()` gives the networks on official or custom checkpoints; the task predictors sit on top.
"""

__version__ = "0.1.0"

from sapiens2.checkpoint import CheckpointError, UnsafeCheckpointError
from sapiens2.hub import CheckpointMismatchError, CheckpointNotFoundError, UnknownModelError, inspect, load
from sapiens2.models import BackboneConfig, build_model
from sapiens2.tasks.dense import Albedo, DensePipeline, Depth, Matting, Normals, Pointmap, Segmenter, run_tasks
from sapiens2.tasks.pose import Pose, PoseResult
from sapiens2.zoo import MODELS

__all__ = [
    "MODELS", "Albedo", "BackboneConfig", "DensePipeline", "Depth", "Matting", "Normals", "Pointmap", "Pose", "PoseResult",
    "Segmenter", "run_tasks", "CheckpointError", "CheckpointMismatchError", "CheckpointNotFoundError",
    "UnknownModelError", "UnsafeCheckpointError", "__version__", "build_model", "inspect", "load",
]
