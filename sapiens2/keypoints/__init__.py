"""Keypoint sets (308-point Sapiens2, COCO-17, COCO-WholeBody-133) and the UDP heatmap
codec (``sapiens2.keypoints.udp``)."""

from .metadata import KeypointSet, coco17, coco_wholebody133, keypoints308, load_keypoint_set
from .udp import HEATMAP_SIZE, INPUT_SIZE, UDPHeatmapCodec, udp_decode, udp_encode

__all__ = [
    "KeypointSet",
    "keypoints308",
    "coco17",
    "coco_wholebody133",
    "load_keypoint_set",
    "INPUT_SIZE",
    "HEATMAP_SIZE",
    "UDPHeatmapCodec",
    "udp_encode",
    "udp_decode",
]
