"""LivePortraitAnimate: source faces + keypoint plan → animated 512² face crops (IMAGE)."""
from __future__ import annotations

import contextlib

import torch

from . import comfy as C
from . import memory
from .comfy import io
from .types import CATEGORY, LPFaces, LPKeypoints, LPModels


class LivePortraitAnimate(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LivePortraitAnimate",
            display_name="LivePortrait Animate",
            category=CATEGORY,
            description=("Renders the animated face crops: warps the source appearance by the keypoint plan and "
                         "decodes 512×512 crops, batch by batch (progress and live preview on the node; Cancel "
                         "stops between frames). Upscale or restore the crops if you like, then paste them "
                         "back with LivePortrait Paste Back."),
            inputs=[
                LPModels.Input("models", tooltip="From Load LivePortrait Models."),
                LPFaces.Input("source_faces", tooltip="The SOURCE face crops (the ones the source motion was extracted from)."),
                LPKeypoints.Input("keypoints", tooltip="Keypoint plan from LivePortrait Retarget."),
                io.Int.Input("batch_size", default=4, min=1, max=64,
                             tooltip="Frames warped and decoded together: higher is faster on a GPU but needs "
                                     "more memory (about 0.5 GB per frame in fp32; after an out-of-memory error "
                                     "the node retries with half the batch). On CPU, 4 is fastest for fast "
                                     "precision; exact precision renders frames one at a time anyway."),
                io.Combo.Input("precision", options=["exact", "fast"], default="exact",
                               tooltip="exact: the networks as loaded (fp32 gives the reference result). fast: "
                                       "float16 on GPUs, bfloat16 on CPUs that support it, else float32 with "
                                       "Winograd/FFT convolutions (NNPACK); faster, slightly different pixels."),
            ],
            outputs=[io.Image.Output(display_name="crops",
                                     tooltip="Animated 512×512 face crops, one per keypoint-plan frame (IMAGE).")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, models, source_faces, keypoints, batch_size: int, precision: str) -> io.NodeOutput:
        from ..liveportrait_core.errors import InputError
        from ..liveportrait_core.render import Animator

        n = len(keypoints)
        if n == 0:
            raise InputError("LivePortraitAnimate: the keypoint plan has no frames; check the driving motion "
                             "given to LivePortrait Retarget.")
        prog = C.Progress(n, cls.hidden.unique_id)
        out = None
        done = 0

        def render_from_done(batch: int) -> None:
            """Render frames done..n in batches of `batch` (restartable after an out-of-memory error)."""
            nonlocal out, done
            animator = Animator(models, precision=precision, batch_size=batch, device=C.compute_device())
            nets = None if precision == "exact" else animator.networks()
            memory.load_for_rendering(models, nets, batch, animator.dtype)
            # closed at once on any error (not when garbage-collected): the render's scopes end there
            with contextlib.closing(animator.iter_render(keypoints.frames(done, n), source_faces, output="float",
                                                         cancel=C.check_interrupt)) as chunks:
                for chunk in chunks:
                    if out is None:  # one preallocated output: peak memory = the result + one chunk
                        out = torch.empty((n, *chunk.shape[1:]), dtype=torch.float32,
                                          device=C.intermediate_device())
                    out[done:done + chunk.shape[0]] = chunk
                    done += chunk.shape[0]
                    prog.update(chunk.shape[0], preview=chunk)

        memory.with_batch_fallback(batch_size, render_from_done, "LivePortraitAnimate")
        return io.NodeOutput(out)
