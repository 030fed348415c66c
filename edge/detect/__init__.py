"""Detect stage (mode 'detect'): whole frames in, plate crops out, for the recognizer.

    contracts.py   the detector contracts (DetectNet_v2 as NVIDIA's LPDNet, YOLO end-to-end), decoded here
    detector.py    Detector: a model on the shared backend layer, frames -> boxes in frame pixels
    zones.py       PlateFilter: zones, masks, min_plate_px; boxes -> 96x48 crops
    worker.py      DetectorWorker: the thread between the capture threads and the recognizer worker
"""
from edge.detect.detector import Detector, DetectorError
from edge.detect.worker import DetectorWorker
from edge.detect.zones import DETECT_ROI, PlateFilter, crop_box

__all__ = ["DETECT_ROI", "Detector", "DetectorError", "DetectorWorker", "PlateFilter", "crop_box"]
