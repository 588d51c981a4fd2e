"""Per-network inference time on this CPU (synthetic SEED=0 weights from tests/synth_weights).

Prints a table of milliseconds per call and per frame for F, M, W, G (and the stitching MLPs)
at the requested dtypes and batch sizes. Each measurement: one warm-up call, then `--repeat`
timed calls under torch.inference_mode(); reported: the best wall-clock time, and the process CPU
time of that call divided by the thread count (close to the wall time on an idle machine; on a
shared, oversubscribed machine the wall time inflates while this stays roughly put).

Run: `.venv/bin/python benchmarks/networks.py` (defaults: 2 threads, float32 + bfloat16,
batch 1 and 4). Example: `--nets W G --dtypes float32 --batches 1 --repeat 3`.
`--dtypes nnpack` times the 'fast' float32 copy of CPUs without native bf16 (BatchNorm folded,
NNPACK Winograd / FFT convolutions; accel/derive.py).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests"))

import synth_weights  # noqa: E402
from liveportrait_core.networks import (AppearanceFeatureExtractor, MotionExtractor,  # noqa: E402
                                        SPADEGenerator, StitchingRetargeting, WarpingModule)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
          "nnpack": torch.float32}


def build(short: str) -> tuple[torch.nn.Module, callable]:
    """(model, make_inputs(batch, dtype) → (args, kwargs)) for F, M, W, G or S."""
    sds = synth_weights.state_dicts(0)
    g = torch.Generator().manual_seed(0)

    def rand(*shape, scale=1.0):
        return torch.rand(*shape, generator=g) * scale

    if short in ("F", "M"):
        model = AppearanceFeatureExtractor() if short == "F" else MotionExtractor()
        model.load_state_dict(sds["appearance_feature_extractor" if short == "F" else
                                  "motion_extractor"])
        return model, lambda b, dt: ((rand(b, 3, 256, 256).to(dt),), {})
    if short == "W":
        model = WarpingModule()
        model.load_state_dict(sds["warping_module"])

        def inputs(b, dt):
            kp_s = rand(b, 21, 3) * 1.2 - 0.6
            kp_d = kp_s + (rand(b, 21, 3) - 0.5) * 0.1
            return (rand(b, 32, 16, 64, 64, scale=0.5).to(dt),), {"kp_source": kp_s.to(dt),
                                                                  "kp_driving": kp_d.to(dt)}
        return model, inputs
    if short == "G":
        model = SPADEGenerator()
        model.load_state_dict(sds["spade_generator"])
        return model, lambda b, dt: (((rand(b, 256, 64, 64) - 0.5).to(dt),), {})
    if short == "S":
        model = StitchingRetargeting()
        model.load_state_dict({f"{s}.{k.removeprefix('module.')}": v
                               for s, d in sds["stitching_retargeting_module"].items()
                               for k, v in d.items()})

        class Stitch(torch.nn.Module):  # stitching MLP only (the one called per frame)
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, x):
                return self.m.stitching(x)

        return Stitch(model), lambda b, dt: ((rand(b, 126).to(dt),), {})
    raise ValueError(short)


def time_call(model, args, kwargs, repeat: int) -> tuple[float, float]:
    """(best wall ms, process-CPU ms / threads of that call)."""
    with torch.inference_mode():
        model(*args, **kwargs)  # warm-up (oneDNN primitive creation, allocator)
        best = None
        for _ in range(repeat):
            w0, c0 = time.perf_counter(), time.process_time()
            model(*args, **kwargs)
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            if best is None or wall < best[0]:
                best = (wall, cpu)
    return best[0] * 1000, best[1] * 1000 / torch.get_num_threads()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--nets", nargs="+", default=["F", "M", "W", "G", "S"])
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=DTYPES)
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 4])
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"cpu capability {torch.backends.cpu.get_cpu_capability()}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus")
    print(f"{'net':<4}{'dtype':<10}{'batch':>6}{'ms/call':>11}{'ms/frame':>11}{'cpu ms/frame':>14}")
    for short in a.nets:
        model, make_inputs = build(short)
        model.eval()
        for dname in a.dtypes:
            dt = DTYPES[dname]
            model.to(dt)
            net = model
            if dname == "nnpack":
                from liveportrait_core.accel.derive import prepare_network

                net = prepare_network(model, torch.float32, memory_channels_last=False, nnpack=True)
            for b in a.batches:
                args, kwargs = make_inputs(b, dt)
                ms, cpu = time_call(net, args, kwargs, a.repeat)
                print(f"{short:<4}{dname:<10}{b:>6}{ms:>11.1f}{ms / b:>11.1f}{cpu / b:>14.1f}",
                      flush=True)
        del model
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
