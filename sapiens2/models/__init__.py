"""The Sapiens2 networks: backbone, task heads and their builders. Pure tensors in, tensors out."""

from sapiens2.models.backbone import ARCHS, BackboneConfig, Sapiens2Backbone
from sapiens2.models.build import TASKS, Sapiens2TaskModel, build_backbone, build_head, build_model, official_head_config
from sapiens2.models.heads import DenseHeadConfig, PointmapHeadConfig, PoseHeadConfig, SegHeadConfig

__all__ = [
    "ARCHS", "TASKS", "BackboneConfig", "DenseHeadConfig", "PointmapHeadConfig", "PoseHeadConfig", "SegHeadConfig",
    "Sapiens2Backbone", "Sapiens2TaskModel", "build_backbone", "build_head", "build_model", "official_head_config",
]
