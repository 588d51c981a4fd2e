"""Editing a face by hand: named expression controls, presets (and keyframes, audio).

`controls`: the control table and applying it to a Motion; `presets`: control values as
small versioned JSON files. See docs/MOTION.md, "Expression controls".
"""
from ..motion import neutral_motion
from .controls import (CONTROLS, Control, ControlValues, Row, apply_controls, edited_keypoints,
                       expression_offsets, frame_weights, neutral_values, pose_deltas, validate_controls)
from .presets import load_preset, preset_from_json, preset_to_json, save_preset

__all__ = ["CONTROLS", "Control", "ControlValues", "Row", "apply_controls", "edited_keypoints",
           "expression_offsets", "frame_weights", "load_preset", "neutral_motion", "neutral_values",
           "pose_deltas", "preset_from_json", "preset_to_json", "save_preset", "validate_controls"]
