"""ComfyUI socket types of the pack; each value is a core dataclass (docs/ARCHITECTURE.md, Layers)."""
from __future__ import annotations

from .comfy import io

LPModels = io.Custom("LP_MODELS")            # liveportrait_core.models.LivePortraitModels
LPFaceDetector = io.Custom("LP_FACE_DETECTOR")  # a face detector backend + options (core face/detectors)
LPFaces = io.Custom("LP_FACES")              # liveportrait_core.face.crops.FaceCrops
LPMotion = io.Custom("LP_MOTION")            # liveportrait_core.motion.Motion
LPKeypoints = io.Custom("LP_KEYPOINTS")      # liveportrait_core.compose.KeypointPlan
FaceLandmarks = io.Custom("FACE_LANDMARKS")  # ComfyUI core (nodes_mediapipe): MediaPipe landmarks

CATEGORY = "LivePortrait"
