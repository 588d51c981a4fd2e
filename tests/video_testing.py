"""Whole-video helpers of the tests, built on the library's streaming I/O (video.py streams;
only tests hold a whole video in memory)."""
from __future__ import annotations

import numpy as np

from liveportrait_core import video as vio
from liveportrait_core.errors import VideoError


def read_frames(path, max_frames=None):
    """All frames `[N,H,W,3]` uint8 of a video / image folder / image, and its fps (the
    library's errors for unreadable inputs; VideoError "no frames" for none)."""
    info = vio.probe(str(path))
    frames = list(vio.iter_frames(str(path), max_frames))
    if not frames:
        raise VideoError(f"'{path}' has no frames.")
    return np.stack(frames), info.fps


def write_video(path, frames, fps, audio_from=None):
    """`[N,H,W,3]` frames (uint8 or float 0..1) to an mp4 at `path`, through VideoWriter."""
    with vio.VideoWriter(str(path), fps, audio_from=audio_from) as w:
        w.write(frames)
    return str(path)
