"""Live-preview benchmark: ms per preview update (the route's logic) vs one warp+decode of a frame.

Loads the pack through the ComfyUI stand-in (tests/comfy_stub) so it calls the real request
handling of nodes/routes.py (`preview_response`: parse + validate the JSON body, number the
request, edited keypoints, W + G of one frame, PNG encoding), with synthetic SEED-0 weights and
the e2e fixture's source crop registered once in the preview cache (features computed once).
Each update moves the "smile" and "head_yaw" sliders to new values. Also prints the FLOPs of
one W+G frame (torch's FLOP counter: convolutions and matrix products) and what that means on a
GPU.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/preview.py [--precision fast] [--repeat 5]
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))

from _timing import best_ms  # noqa: E402  (benchmarks/ is the script's folder)


def _e2e():
    shared = os.path.join(os.path.dirname(REPO), "shared", "fixtures", "parity", "e2e_image_to_video.npz")
    return np.load(shared if os.path.exists(shared) else os.path.join(REPO, "tests", "fixtures", "e2e_image_to_video.npz"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--precision", default="fast", choices=["exact", "fast"])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--weights", default=None, help="weights folder (default: synthetic SEED-0 in a temp dir)")
    args = ap.parse_args()

    import torch
    from comfy_stub import harness

    module, _ = harness.load_pack(REPO)
    pk = lambda name: importlib.import_module(f"{module.__name__}.{name}")  # noqa: E731
    routes = pk("nodes.routes")
    weights = args.weights
    if weights is None:
        import synth_weights

        weights = tempfile.mkdtemp(prefix="lp_bench_")
        synth_weights.write_folder(weights, 0, "safetensors-flat")
    models = pk("liveportrait_core.weights").load_models(weights)
    crop = torch.from_numpy(_e2e()["source_crop256_u8"])
    motion = pk("liveportrait_core.extract").extract_motion(models, crop[None])
    cache = routes.preview_cache()
    t0 = time.perf_counter()
    key = cache.register(models, crop, motion, precision=args.precision)
    t_first = (time.perf_counter() - t0) * 1000
    animator = cache.animator(models, args.precision)
    src = cache.get(key)

    i = [0]

    def update():
        i[0] += 1
        body = json.dumps({"source": key, "controls": {"smile": (i[0] % 10) / 10, "head_yaw": i[0] % 20 - 10},
                           "client": "bench"}).encode()
        status, _, png = routes.preview_response(body)
        assert status == 200, png

    x_s = src.motion.keypoints()
    x_d = pk("liveportrait_core.editing.controls").edited_keypoints(src.motion, {"smile": 0.5},
                                                                   mlps=models.stitching_retargeting)

    def warp_decode():
        animator.warp_decode(src.features, x_s, x_d)

    t_wd = best_ms(warp_decode, args.repeat, warmup=1)
    t_up = best_ms(update, args.repeat, warmup=1)

    from torch.utils.flop_counter import FlopCounterMode

    exact = cache.animator(models, "exact")
    with FlopCounterMode(display=False) as fc:
        exact.warp_decode(src.features.float(), x_s, x_d)
    gflops = fc.get_total_flops() / 1e9

    print(f"precision {args.precision}, torch threads {torch.get_num_threads()}, best of {args.repeat}")
    print(f"first preview of a source (F features + prepared networks): {t_first:8.0f} ms (once per source)")
    print(f"one warp+decode (W+G, 1 frame, 512²):                        {t_wd:8.0f} ms")
    print(f"one preview update via the route logic (JSON → PNG):         {t_up:8.0f} ms "
          f"= {t_up / t_wd:.2f}× warp+decode (target ≤ 1.5×)")
    print(f"W+G FLOPs per frame (convolutions + matmuls): {gflops:.0f} GFLOP")
    for name, tflops in (("RTX 3060 class, fp16, ~13 TFLOP/s effective", 13.0),
                         ("RTX 4090 class, fp16, ~80 TFLOP/s effective", 80.0)):
        print(f"  GPU expectation, {name}: ~{gflops / tflops:.0f} ms/frame compute "
              f"(+ a few ms PNG + HTTP): interactive at slider speed")


if __name__ == "__main__":
    main()
