"""People across video frames: stable track IDs (`Tracker`) and keypoint smoothing (`OneEuroFilter`)."""

from sapiens2.track.smoothing import KeypointSmoother, OneEuroFilter
from sapiens2.track.tracker import Tracker, box_iou, keypoint_similarity

__all__ = ["KeypointSmoother", "OneEuroFilter", "Tracker", "box_iou", "keypoint_similarity"]
