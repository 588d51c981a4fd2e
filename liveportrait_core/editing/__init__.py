"""Editing a face by hand: named expression controls, presets (and keyframes, audio).

`controls`: the control table and applying it to a Motion; `presets`: control values as
small versioned JSON files. See docs/MOTION.md, "Expression controls".
"""
from ..motion import neutral_motion
from .controls import (CONTROLS, Control, ControlValues, Row, apply_controls, edited_keypoints,
                       expression_offsets, frame_weights, neutral_values, pose_deltas, validate_controls)

__all__ = ["CONTROLS", "Control", "ControlValues", "Row", "apply_controls", "edited_keypoints",
           "expression_offsets", "frame_weights", "neutral_motion", "neutral_values", "pose_deltas",
           "validate_controls"]
