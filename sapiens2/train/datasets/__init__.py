"""Training and validation data: raw sample sources per task, and the shared resumable pipeline."""

from sapiens2.train.datasets.base import (
    ConcatSources,
    SampleSource,
    StreamSampler,
    TransformedDataset,
    sample_rng,
    worker_init,
)
from sapiens2.train.datasets.folders import DenseFolder, SegFolder
from sapiens2.train.datasets.pose import CocoKeypoints

__all__ = [
    "CocoKeypoints", "ConcatSources", "DenseFolder", "SampleSource", "SegFolder", "StreamSampler",
    "TransformedDataset", "build_source", "sample_rng", "worker_init",
]


def build_source(task: str, cfg, where: str = "data") -> SampleSource:
    """The raw sample source for one `DatasetConfig` of `task`."""
    if task == "pose":
        return CocoKeypoints(cfg, where)
    if task == "seg":
        return SegFolder(cfg, where)
    return DenseFolder(task, cfg, where)
