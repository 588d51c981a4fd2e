"""Face editing without a driving video: expression controls, presets, keyframe sequences, audio."""
