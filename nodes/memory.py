"""The LivePortrait networks under ComfyUI's memory manager: one ModelPatcher per network.

As ComfyUI's own nodes do (`comfy_extras/nodes_mediapipe.py`: one patcher per network;
`nodes_upscale_model.py`: a memory estimate for `load_models_gpu` and a smaller work unit after an
out-of-memory error), a node asks ComfyUI to load the networks it needs together with the memory
its batch will take; ComfyUI unloads other models to make room, keeps ours on the compute device
while memory allows, moves them to the offload device when something else needs it, and "Unload
models" / `POST /free` lets them go.

Who holds what: the loaded `LivePortraitModels` is held by ComfyUI's output cache of the loader
node (the loader's own cache is weak, see nodes/loaders.py), the patchers and the fast copies live
on that object — so when ComfyUI drops its cache, weights, patchers and fast copies go together.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Callable, Iterable, Iterator, Optional, TypeVar

import torch

from . import comfy as C

log = logging.getLogger(__name__)

RENDER_NETWORKS = ("appearance_feature_extractor", "warping_module", "spade_generator")
EXTRACT_NETWORKS = ("motion_extractor",)

# Activation memory of warping + decoding one 512² frame in float32: the 32×16×64×64 feature
# volume and its warped copy, the deformation grid, and the decoder's 256² / 512² maps with
# their SPADE modulation maps (peak, measured with the exact networks; an upper bound).
BYTES_PER_FRAME_FP32 = 600 * 1024 ** 2
_PATCHERS = "_comfy_patchers"  # attribute of a LivePortraitModels holding its patchers


def _patcher_for(owner, key, module: torch.nn.Module):
    """The patcher of `module`, created once and stored on `owner` (the models object)."""
    store = owner.__dict__.setdefault(_PATCHERS, {})
    patcher = store.get(key)
    if patcher is None or patcher.model is not module:
        patcher = store[key] = C.model_patcher(module)
    return patcher


def patchers(models, names: Iterable[str]) -> list:
    """ModelPatchers of the named networks of `models` (missing networks are skipped)."""
    out = []
    for name in names:
        module = getattr(models, name, None)
        if module is not None:
            out.append(_patcher_for(models, name, module))
    return out


def frame_bytes(dtype: torch.dtype) -> int:
    """Estimated activation bytes of warping + decoding one frame in `dtype`."""
    return BYTES_PER_FRAME_FP32 * torch.empty((), dtype=dtype).element_size() // 4


def load_for_extraction(models, batch_size: int) -> torch.device:
    """Put the motion extractor on the compute device (small: ~4 MB of activations per crop)."""
    C.load_patchers(patchers(models, EXTRACT_NETWORKS), memory_required=batch_size * 64 * 1024 ** 2)
    return C.compute_device()


def load_for_rendering(models, networks: Optional[dict], batch_size: int, dtype: torch.dtype) -> torch.device:
    """Put the rendering networks on the compute device with room for a batch of `batch_size`.

    networks: the networks that will run (name → module): the loaded F/W/G for exact precision,
    or the derived fast copies (which then get their own patchers, so ComfyUI counts and moves
    them like the rest). None: the loaded F/W/G.
    """
    if networks is None:
        ps = patchers(models, RENDER_NETWORKS)
    else:
        ps = [_patcher_for(models, ("prepared", name, id_free_key(module)), module)
              for name, module in networks.items()]
    C.load_patchers(ps, memory_required=batch_size * frame_bytes(dtype))
    return C.compute_device()


def id_free_key(module: torch.nn.Module) -> str:
    """A key naming a derived network by what it is (class, dtype, device), not by object id."""
    p = next(module.parameters(), None)
    return f"{type(module).__name__}:{getattr(p, 'dtype', None)}:{getattr(p, 'device', None)}"


T = TypeVar("T")


def with_batch_fallback(batch_size: int, attempt: Callable[[int], T], what: str) -> T:
    """Run `attempt(batch)`; after an out-of-memory error retry with half the batch, down to 1.

    `attempt` must be restartable (it resumes where the previous attempt stopped). Any other
    error is re-raised unchanged; at batch 1 the out-of-memory error becomes a clear message.
    """
    from ..liveportrait_core.errors import InputError

    batch = max(1, int(batch_size))
    while True:
        try:
            return attempt(batch)
        except Exception as e:  # noqa: BLE001  (filtered just below)
            C.raise_unless_out_of_memory(e)
            C.soft_empty_cache()
            if batch == 1:
                raise InputError(
                    f"{what}: out of memory on {C.compute_device()} even with batch_size 1. Close other "
                    "models (Unload models), use a lower weights precision, or run ComfyUI with --lowvram.") from None
            batch = max(1, batch // 2)
            log.warning("[LivePortrait] %s: out of memory, retrying with batch_size %d", what, batch)


@contextlib.contextmanager
def networks_loaded(models) -> Iterator[torch.device]:
    """Every network of `models` on the compute device with room for one frame (the editor and the
    timeline preview extract and render single frames)."""
    C.load_patchers(patchers(models, EXTRACT_NETWORKS + RENDER_NETWORKS), memory_required=frame_bytes(models.dtype))
    yield C.compute_device()
