"""Cost of keyframe sequences and audio envelopes (no networks): prints milliseconds.

    OMP_NUM_THREADS=1 python benchmarks/keyframes.py

A 60 s sequence at 25 fps (1500 frames; 5 controls, 40 keys, smooth / eased, automatic blink)
→ values and the driving Motion; the loudness envelope of 60 s of 16 kHz audio at 25 fps.
"""
from __future__ import annotations

import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _timing import best_ms  # noqa: E402

from liveportrait_core.editing.audio import loudness_envelope  # noqa: E402
from liveportrait_core.editing.keyframes import (BlinkOptions, Key, KeyframeSequence,  # noqa: E402
                                                 frame_values, sequence_motion, sequence_values)


def main() -> None:
    torch.set_num_threads(1)
    easings = ["smooth", "ease-in-out", "linear", "ease-out"]
    keys = [Key(1.5 * i, {"head_yaw": 20 * math.sin(i), "smile": abs(math.cos(i)), "eyebrow": 10 * math.sin(2 * i),
                          "lips_open": 40 * abs(math.sin(3 * i)), "blink": 0.0}, easings[i % 4]) for i in range(40)]
    seq = KeyframeSequence(keys=keys, fps=25.0, duration=60.0, blink=BlinkOptions(interval=4.0, seed=1))
    print(f"sequence_values, 1500 frames x 5 controls: {best_ms(lambda: sequence_values(seq), 5):.1f} ms")
    print(f"sequence_motion, 1500 frames: {best_ms(lambda: sequence_motion(seq), 5):.1f} ms")
    print(f"frame_values at frame 1499: {best_ms(lambda: frame_values(seq, 1499), 5):.1f} ms")
    audio = torch.randn(1, 1, 16000 * 60) * 0.1
    print(f"loudness_envelope, 60 s at 16 kHz -> 1500 frames: "
          f"{best_ms(lambda: loudness_envelope(audio, 16000, 25.0), 5):.1f} ms")


if __name__ == "__main__":
    main()
