"""Keypoint sets (308-point Sapiens2, COCO-17, COCO-WholeBody-133), format conversion,
COCO results, and the UDP heatmap codec (``sapiens2.keypoints.udp``)."""

from .coco_results import RESULT_FORMATS, instance_score, to_coco_results
from .convert import (
    FORMATS,
    ConvertedKeypoints,
    KeypointMapping,
    convert_keypoints,
    keypoint_mapping,
    to_coco17,
    to_coco_wholebody133,
    to_openpose_body18,
    to_openpose_body25,
)
from .metadata import KeypointSet, coco17, coco_wholebody133, keypoint_set_for, keypoints308, load_keypoint_set
from .udp import HEATMAP_SIZE, INPUT_SIZE, UDPHeatmapCodec, udp_decode, udp_encode

__all__ = [
    "KeypointSet",
    "keypoints308",
    "coco17",
    "coco_wholebody133",
    "keypoint_set_for",
    "load_keypoint_set",
    "FORMATS",
    "KeypointMapping",
    "ConvertedKeypoints",
    "keypoint_mapping",
    "convert_keypoints",
    "to_coco17",
    "to_coco_wholebody133",
    "to_openpose_body25",
    "to_openpose_body18",
    "RESULT_FORMATS",
    "instance_score",
    "to_coco_results",
    "INPUT_SIZE",
    "HEATMAP_SIZE",
    "UDPHeatmapCodec",
    "udp_encode",
    "udp_decode",
]
