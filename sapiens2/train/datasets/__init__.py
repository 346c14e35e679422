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
    "TransformedDataset", "sample_rng", "worker_init",
]

