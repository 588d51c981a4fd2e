"""Peak memory of the file pipeline against video length: streamed vs whole-array.

For a video source (tracking + crops, what `animate_files` keeps for paste-back) and a cropped
driving video (tracking + global box + motion), at N = 8, 16 and 64 frames (16 = one stream
chunk), each configuration runs in its own subprocess and reports its peak RSS during the work
(VmHWM after resetting it through /proc/self/clear_refs; resource.getrusage's lifetime peak
where that is unavailable) and the growth over the RSS it had after loading the networks.
'stream' is the pipeline (`animate.source_crops`, `animate.driving_motion`); 'whole' is the
former path (all frames read into one array + crop_faces on all of them). Rendering is left out (about 13 s per
frame on this CPU): with streaming it holds one batch of source frames for paste-back.

Input: the first N frames of ../shared/data/source/s18.mp4 (1280×720), else of the 6-frame test
clip tests/fixtures/photos/s18_6f.mp4 looped. Networks: synthetic weights (tests/synth_weights.py),
the offline face detector, no landmark model.

Run: `OMP_NUM_THREADS=1 .venv/bin/python benchmarks/streaming.py [--frames 8 16 64] [--impl whole stream]`
(about 3 min).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

CLIPS = (os.path.join(ROOT, "..", "shared", "data", "source", "s18.mp4"),
         os.path.join(ROOT, "tests", "fixtures", "photos", "s18_6f.mp4"))


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        return next(float(ln.split()[1]) for ln in f if ln.startswith(key)) / 1024.0


def _reset_peak() -> bool:
    """Restart the peak-RSS count (Linux ≥ 4.0), so loading the networks does not hide the work."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_mb(reset: bool) -> float:
    if reset:
        return _status_mb("VmHWM")  # peak since _reset_peak
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB, lifetime peak


def _child(kind: str, impl: str, video: str, weights: str) -> dict:
    """One configuration in this (fresh) process: peak RSS before and after the work."""
    import numpy as np

    from liveportrait_core import animate
    from liveportrait_core import video as vio
    from liveportrait_core.extract import extract_motion
    from liveportrait_core.face.pipeline import crop_faces
    from liveportrait_core.weights import load_models

    models = load_models(weights)
    tools = animate.FaceTools(models, animate.FaceOptions(), note=lambda m: None)
    run = animate.RunOptions(batch_size=4)
    tools.detector.detect(np.zeros((64, 64, 3), np.uint8))  # load the detector before the baseline
    reset = _reset_peak()
    base, t = _status_mb("VmRSS") if reset else _peak_mb(False), time.perf_counter()
    if kind == "source" and impl == "stream":
        crops, _, frames = animate.source_crops(video, "video", tools, run)
    elif kind == "source":  # former path: all frames read, cropped at once, kept for paste-back
        frames = np.stack(list(vio.iter_frames(video)))
        crops = crop_faces(frames, tools.detector, tools.runner, purpose="source", name="source")
    elif impl == "stream":
        crops = animate.driving_motion(video, "video", models, tools, run, note=lambda m: None)
    else:
        frames, fps = np.stack(list(vio.iter_frames(video))), vio.probe(video).fps
        crops = extract_motion(models, crop_faces(frames, tools.detector, tools.runner, purpose="driving",
                                                  name="driving"), fps, run.batch_size)
    return {"n": len(crops), "base_mb": base, "peak_mb": _peak_mb(reset), "s": time.perf_counter() - t}


def _make_video(path: str, n: int) -> str:
    from liveportrait_core import video as vio

    clip = next(p for p in CLIPS if os.path.exists(p))
    frames = []
    while len(frames) < n:  # loop a short clip
        frames += list(vio.iter_frames(clip, n - len(frames)))
    with vio.VideoWriter(path, 25) as w:
        w.write(np.stack(frames))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, nargs="+", default=[8, 16, 64])
    ap.add_argument("--impl", nargs="+", choices=["whole", "stream"], default=["whole", "stream"])
    ap.add_argument("--child", nargs=4, metavar=("KIND", "IMPL", "VIDEO", "WEIGHTS"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(_child(*a.child)))
        return
    import synth_weights

    with tempfile.TemporaryDirectory() as tmp:
        weights = synth_weights.write_folder(os.path.join(tmp, "w"), 0, "safetensors-flat")
        videos = {n: _make_video(os.path.join(tmp, f"v{n}.mp4"), n) for n in a.frames}
        from liveportrait_core import video as vio

        w, h = vio.probe(videos[a.frames[0]]).size
        print(f"video {w}x{h} (one frame = {w * h * 3 / 2**20:.1f} MiB); peak RSS MiB, growth over the "
              "RSS after loading the networks")
        print(f"{'configuration':34s} {'frames':>6s} {'peak':>8s} {'growth':>8s} {'time s':>7s}")
        for kind in ("source", "driving"):
            for impl in a.impl:
                for n in a.frames:
                    r = subprocess.run([sys.executable, __file__, "--child", kind, impl, videos[n], weights],
                                       capture_output=True, text=True, check=True)
                    d = json.loads(r.stdout.strip().splitlines()[-1])
                    label = f"{kind} video, {impl}" + (" (former path)" if impl == "whole" else "")
                    print(f"{label:34s} {n:6d} {d['peak_mb']:8.0f} {d['peak_mb'] - d['base_mb']:8.0f} {d['s']:7.1f}")


if __name__ == "__main__":
    main()
