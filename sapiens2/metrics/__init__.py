"""Evaluation metrics for every Sapiens2 task, as the reference defines them.

pose: OKS AP/AR (308 points, their subsets, COCO-17); seg: IoU / mIoU / mAcc / aAcc; normal: angular errors;
pointmap: point and normal errors; albedo: MAE / RMSE / PSNR / SSIM; matting: SAD / MSE / Grad / Conn.
`evaluate` and `format_table` in `report` are what the CLI calls.
"""

from .albedo import AlbedoMetrics, albedo_metrics
from .matting import MattingMetrics, matting_errors
from .normals import NormalMetrics, angular_error_deg, normal_metrics
from .oks import oks
from .pointmap import PointmapMetrics, align_points, normals_from_points, pointmap_metrics
from .pose import KeypointAnnotations, KeypointDetections, evaluate_keypoints, keypoint_ap
from .readers import (
    MetricsInputError,
    read_keypoint_annotations,
    read_keypoint_results,
    read_label_map,
    read_map,
    read_mask,
)
from .report import evaluate, format_table
from .segmentation import SegmentationMetrics, segmentation_metrics

__all__ = [
    "AlbedoMetrics",
    "KeypointAnnotations",
    "KeypointDetections",
    "MattingMetrics",
    "MetricsInputError",
    "NormalMetrics",
    "PointmapMetrics",
    "SegmentationMetrics",
    "albedo_metrics",
    "align_points",
    "angular_error_deg",
    "evaluate",
    "evaluate_keypoints",
    "format_table",
    "keypoint_ap",
    "matting_errors",
    "normal_metrics",
    "normals_from_points",
    "oks",
    "pointmap_metrics",
    "read_keypoint_annotations",
    "read_keypoint_results",
    "read_label_map",
    "read_map",
    "read_mask",
    "segmentation_metrics",
]
