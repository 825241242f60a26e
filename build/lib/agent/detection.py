"""The public detector API (`detect_small_objects`), kept at this name for users' scripts; the detector
lives in `agent.perception.detection`."""

from agent.perception.detection import detect_boxes, detect_small_objects, detect_small_objects_batch

__all__ = ["detect_boxes", "detect_small_objects", "detect_small_objects_batch"]
