"""Rendering benchmark: ms per frame and peak RSS, exact vs fast, batch sizes, 8 vs 64 frames.

Each configuration runs in its own subprocess (so its peak RSS is its own). A run loads the
synthetic SEED-0 weights (generated into a temp folder unless --weights is given), takes the
e2e fixture's source crop, builds N driving keypoint frames from the e2e driving keypoints
(cycled, with a small smooth perturbation), and streams `Animator.iter_render` output into a
sink that keeps only the first 4 frames (as a video writer would). Prints one table line per
configuration and the PSNR of fast vs exact on the 512² uint8 output.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/animate.py                 # full grid
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/animate.py --frames 8 --batch 4
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

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests"))


def _e2e():
    shared = os.path.join(os.path.dirname(REPO), "shared", "fixtures", "parity", "e2e_image_to_video.npz")
    return np.load(shared if os.path.exists(shared) else os.path.join(REPO, "tests", "fixtures", "e2e_image_to_video.npz"))


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def worker(args) -> None:
    import torch

    from liveportrait_core.compose import KeypointPlan
    from liveportrait_core.render import Animator
    from liveportrait_core.weights import load_models

    d = _e2e()
    models = load_models(args.weights)
    n = args.frames
    base = torch.from_numpy(d["base_x_d_final"][:, 0])
    t = torch.arange(n, dtype=torch.float32)
    x_d = base[t.long() % 3] + 0.01 * torch.sin(t / 5.0).view(n, 1, 1)
    x_s = torch.from_numpy(d["base_x_s"][0, 0]).expand(n, 21, 3).contiguous()
    plan = KeypointPlan(x_s, x_d, torch.zeros(n, dtype=torch.long), 25.0)
    src = torch.from_numpy(d["source_crop256_u8"])[None]
    anim = Animator(models, args.precision, batch_size=args.batch)
    rss_loaded = _rss_mb()
    t0 = time.perf_counter()
    anim._networks()  # fast mode: derived bf16 copies (one-off, reported separately)
    t_prep = time.perf_counter() - t0
    kept, t_first = [], None
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    for chunk in anim.iter_render(plan, src, output="uint8"):
        if t_first is None:
            t_first = time.perf_counter() - t0
        if len(kept) < 4:
            kept.extend(chunk[: 4 - len(kept)].numpy())
    total = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    if args.save:
        np.save(args.save, np.stack(kept))
    print(json.dumps({"precision": args.precision, "dtype": str(anim.dtype).replace("torch.", ""),
                      "batch": args.batch, "frames": n, "ms_per_frame": 1000 * total / n,
                      "cpu_ms_per_frame": 1000 * cpu / n, "load1": os.getloadavg()[0],
                      "first_chunk_s": t_first, "prep_s": t_prep, "rss_loaded_mb": rss_loaded,
                      "peak_rss_mb": _rss_mb(), "threads": torch.get_num_threads()}))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=None, help="weights folder (default: synthetic SEED-0 weights)")
    p.add_argument("--frames", type=int, nargs="+", default=[8, 64])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    p.add_argument("--precision", nargs="+", default=["exact", "fast"])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--save", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        args.frames, args.batch, args.precision = args.frames[0], args.batch[0], args.precision[0]
        return worker(args)

    with tempfile.TemporaryDirectory() as tmp:
        weights = args.weights
        if weights is None:
            import synth_weights

            weights = synth_weights.write_folder(os.path.join(tmp, "w"), 0, "upstream-pth")
        rows, saved = [], {}
        print(f"{'precision':9} {'dtype':9} {'batch':>5} {'frames':>6} {'ms/frame':>9} {'1st chunk s':>11} "
              f"{'prep s':>6} {'RSS loaded MB':>13} {'peak RSS MB':>11} {'CPU ms/frame':>12} {'load':>5}", flush=True)
        for prec in args.precision:
            for bs in args.batch:
                for n in args.frames:
                    save = os.path.join(tmp, f"{prec}_{bs}_{n}.npy")
                    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--weights", weights,
                           "--frames", str(n), "--batch", str(bs), "--precision", prec, "--save", save]
                    r = subprocess.run(cmd, capture_output=True, text=True)
                    if r.returncode != 0:
                        print(f"{prec} batch {bs} frames {n}: FAILED\n{r.stderr[-2000:]}", flush=True)
                        continue
                    row = json.loads(r.stdout.strip().splitlines()[-1])
                    rows.append(row)
                    saved[(prec, bs, n)] = np.load(save)
                    print(f"{row['precision']:9} {row['dtype']:9} {bs:>5} {n:>6} {row['ms_per_frame']:>9.0f} "
                          f"{row['first_chunk_s']:>11.2f} {row['prep_s']:>6.2f} {row['rss_loaded_mb']:>13.0f} "
                          f"{row['peak_rss_mb']:>11.0f} {row['cpu_ms_per_frame']:>12.0f} {row['load1']:>5.1f}",
                          flush=True)
        for bs in args.batch:
            for n in args.frames:
                if ("exact", bs, n) in saved and ("fast", bs, n) in saved:
                    a, b = saved[("exact", bs, n)], saved[("fast", bs, n)]
                    print(f"PSNR fast vs exact (batch {bs}, {n} frames, first {len(a)} frames 512² uint8): "
                          f"{psnr(a, b):.2f} dB", flush=True)
        by = {(r["precision"], r["batch"], r["frames"]): r for r in rows}
        for prec in args.precision:
            for bs in args.batch:
                if len(args.frames) >= 2 and all((prec, bs, n) in by for n in args.frames[:2]):
                    lo, hi = (by[(prec, bs, n)]["peak_rss_mb"] for n in args.frames[:2])
                    print(f"peak RSS {prec} batch {bs}: {args.frames[0]} frames {lo:.0f} MB, "
                          f"{args.frames[1]} frames {hi:.0f} MB ({100 * (hi - lo) / lo:+.1f}%)", flush=True)


if __name__ == "__main__":
    main()
