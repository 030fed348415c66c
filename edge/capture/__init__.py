"""Capture stage: one thread per camera reads its source, cuts plate crops and queues them."""
from edge.capture.thread import CaptureThread, FrameCrops, FrameImage, SourceEnded

__all__ = ["CaptureThread", "FrameCrops", "FrameImage", "SourceEnded"]
