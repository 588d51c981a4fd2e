"""Face detectors: one interface (`FaceDetector.detect(image) -> [DetectedFace]`), several backends.

Backends are imported lazily by `make_detector`, so importing this package loads no model.
"""
from .base import BACKENDS, ORDERS, DetectedFace, FaceDetector, make_detector, order_faces

__all__ = ["BACKENDS", "ORDERS", "DetectedFace", "FaceDetector", "make_detector", "order_faces"]
