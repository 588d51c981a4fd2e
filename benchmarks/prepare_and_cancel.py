"""Fast-copy preparation and cancel latency, on this CPU.

Prints: the time to prepare the 'fast' derived copies of F, W, G the first time and when they are
asked again (kept with the models: accel.prepare_networks), the memory they hold
(accel.prepared_bytes), and in exact mode how long after a cancel request the render stops
(requested while frame 1 of a batch of 4 is being warped; polled between frames and between W
and G). Synthetic SEED-0 weights (tests/synth_weights.py).

Run: `OMP_NUM_THREADS=2 .venv/bin/python benchmarks/prepare_and_cancel.py` (about a minute).
"""
from __future__ import annotations

import os
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests"))


def main() -> None:
    import torch

    import synth_weights
    from liveportrait_core.accel import prepare_networks, prepared_bytes, resolve_dtype
    from liveportrait_core.compose import KeypointPlan
    from liveportrait_core.progress import Cancelled
    from liveportrait_core.render import Animator
    from liveportrait_core.weights import load_models

    with tempfile.TemporaryDirectory() as tmp:
        models = load_models(synth_weights.write_folder(os.path.join(tmp, "w"), 0, "upstream-pth"))
    t0 = time.perf_counter()
    prepare_networks(models, "fast")
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    Animator(models, "fast")._networks()
    again = time.perf_counter() - t0
    print(f"fast copies ({resolve_dtype('fast', 'cpu')}): first {first:.2f} s, again {again * 1000:.2f} ms, "
          f"{prepared_bytes(models) / 2**20:.0f} MiB held (loaded networks {models.memory_bytes() / 2**20:.0f} MiB)")

    n = 4
    g = torch.Generator().manual_seed(0)
    x_s = torch.randn(n, 21, 3, generator=g) * 0.1
    plan = KeypointPlan(x_s, x_s + 0.01 * torch.randn(n, 21, 3, generator=g), torch.zeros(n, dtype=torch.long))
    src = torch.randint(0, 256, (1, 256, 256, 3), dtype=torch.uint8, generator=g)
    anim = Animator(models, "exact", batch_size=4)
    asked, calls = [], []

    def on_w(module, args, kwargs):  # frame 1's W starts: the user presses Cancel now
        calls.append(1)
        if len(calls) == 2:
            asked.append(time.perf_counter())

    hook = models.warping_module.register_forward_pre_hook(on_w, with_kwargs=True)
    stopped = None
    try:
        list(anim.iter_render(plan, src, cancel=lambda: bool(asked)))
    except Cancelled:
        stopped = time.perf_counter()
    finally:
        hook.remove()
    print(f"exact, one batch of 4 frames: a cancel asked when frame 1 starts stops the render "
          f"{stopped - asked[0]:.2f} s later (after frame 1's W; W ran {len(calls)} of 4 times)")


if __name__ == "__main__":
    main()
