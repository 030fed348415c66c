"""Crop stage: frame -> plate crops. Fixed ROIs now (a gate or lane camera); a plate detector later
plugs in here with the same interface: `crops(frame_rgb) -> [PlateCrop]`."""
from edge.crop.roi import FrameCropper, PlateCrop, RoiCropper, cropper_for

__all__ = ["FrameCropper", "PlateCrop", "RoiCropper", "cropper_for"]
