"""Person detection for top-down pose: RTMDet-m on the official weights, in plain PyTorch."""

from sapiens2.detect.boxes import batched_nms, box_area, box_iou, nms
from sapiens2.detect.checkpoint import (
    DetectorCheckpointError,
    UnsafeCheckpointError,
    convert_detector_checkpoint,
    load_detector,
    read_detector_state_dict,
    read_pickle_checkpoint,
)
from sapiens2.detect.detector import DETECTOR_FILENAME, DETECTOR_HUB_REPO, PersonDetector
from sapiens2.detect.pipeline import (
    MMDET_TEST_SETTINGS,
    SAPIENS2_SETTINGS,
    DetectionSettings,
    Detections,
    Letterbox,
    letterbox,
)
from sapiens2.detect.rtmdet import RTMDet, RTMDetConfig

__all__ = [
    "DETECTOR_FILENAME", "DETECTOR_HUB_REPO", "MMDET_TEST_SETTINGS", "SAPIENS2_SETTINGS", "DetectionSettings",
    "Detections", "DetectorCheckpointError", "Letterbox", "PersonDetector", "RTMDet", "RTMDetConfig",
    "UnsafeCheckpointError", "batched_nms", "box_area", "box_iou", "convert_detector_checkpoint", "letterbox",
    "load_detector", "nms", "read_detector_state_dict", "read_pickle_checkpoint",
]
