"""Rendering: source appearance features + keypoint plan → animated 512² face crops.

`Animator` runs the appearance extractor F once per source item, then warping W and the
decoder G over the output frames in batches, yielding chunks so memory stays flat however
long the video is (ARCHITECTURE.md §0, §7).

Precision: 'exact' runs the networks in float32 as loaded (with denormals flushed on CPU,
which leaves the output identical); 'fast' runs derived copies (BatchNorm folded, spectral
norm precomputed, channels-last) in bfloat16 on CPUs with native bf16 support, float16 on
CUDA / MPS, and on other CPUs in float32 with NNPACK's Winograd / FFT convolutions
(fast_convs.py), where bfloat16 would be emulated and far slower than float32.
"""
from __future__ import annotations

from typing import Callable, Dict, Iterator, List, Optional, Union

import numpy as np
import torch

from .checks import check_finite_keypoints
from .compose import KeypointPlan
from .denormal import flush_denormal
from .errors import InputError, LivePortraitError
from .face.crops import FaceCrops
from .fast import bf16_supported_cpu, channels_last, prepare_network
from .heap import keep_freed_memory

PRECISIONS = ("exact", "fast")
ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], bool]


class Cancelled(LivePortraitError):
    """Rendering was stopped by the cancel callback (raised between batches)."""


def resolve_dtype(precision: str, device: Union[str, torch.device]) -> torch.dtype:
    """Compute dtype for `precision` on `device` ('exact' → float32; 'fast' → bf16 / fp16 / fp32)."""
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {PRECISIONS}, got {precision!r}.")
    if precision == "exact":
        return torch.float32
    dev = torch.device(device)
    if dev.type in ("cuda", "mps"):
        return torch.float16
    if dev.type == "cpu" and bf16_supported_cpu():
        return torch.bfloat16
    return torch.float32  # CPU without native bf16: float32 NNPACK copies (see Animator)


# ------------------------------------------------------------------------- image conversions


def crops_to_input(crops) -> torch.Tensor:
    """Network input `[N,3,256,256]` float32 in [0,1] from RGB uint8 crops `[N,H,W,3]`.

    As the reference's `prepare_source`: non-256 crops are resized with cv2's default
    (bilinear) filter; `u8 / 255`, HWC → CHW (ARCHITECTURE.md §7).
    """
    if isinstance(crops, FaceCrops):
        crops = crops.crops
    arr = crops.detach().cpu().numpy() if isinstance(crops, torch.Tensor) else np.asarray(crops)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise InputError(f"face crops must be [N,H,W,3] RGB, got shape {tuple(arr.shape)}.")
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and float(arr.max(initial=0.0)) <= 1.0:
            arr = arr * 255.0  # float 0..1 images (ComfyUI); the values stay float
        arr = arr.astype(np.float32)
    if arr.shape[1:3] != (256, 256):
        import cv2

        arr = np.stack([cv2.resize(a, (256, 256)) for a in arr])
    x = torch.from_numpy(np.ascontiguousarray(arr)).float().div_(255.0).clamp_(0.0, 1.0)
    return x.permute(0, 3, 1, 2).contiguous()


def parse_output(img: torch.Tensor) -> torch.Tensor:
    """`[B,3,H,W]` float → `[B,H,W,3]` uint8 exactly as the reference: clip, ×255, truncate."""
    x = img.detach().float().permute(0, 2, 3, 1).clamp(0.0, 1.0) * 255.0
    return x.clamp(0.0, 255.0).to(torch.uint8).cpu()


def to_float_image(img: torch.Tensor) -> torch.Tensor:
    """`[B,3,H,W]` → `[B,H,W,3]` float32 in [0,1] on CPU (ComfyUI IMAGE layout)."""
    return img.detach().float().permute(0, 2, 3, 1).clamp(0.0, 1.0).cpu().contiguous()


# ------------------------------------------------------------------------------- animator


class Animator:
    """Warp + decode keypoint plans for face crops, in batches.

    models:     a `LivePortraitModels` (appearance_feature_extractor, warping_module,
                spade_generator, device).
    precision:  'exact' (float32) or 'fast' (fp16 on CUDA/MPS, bf16 on CPUs with native bf16,
                else float32 with NNPACK Winograd / FFT convolutions).
    batch_size: frames per W/G batch (and per F batch). In exact mode on CPU the frames of a
                batch are still warped one at a time (faster there), so it only sets the chunk
                size; fast mode on CPU is fastest at 4 (measured).
    max_cached_features: how many source feature volumes (8 MB each in float32) are kept at
                once; a source item is recomputed only if evicted and needed again (a looping
                source video longer than this). Image sources compute F exactly once.
    """

    def __init__(self, models, precision: str = "exact", batch_size: int = 4, device=None,
                 max_cached_features: int = 8):
        if int(batch_size) < 1:
            raise InputError(f"batch size must be ≥ 1, got {batch_size}.")
        self.models = models
        self.device = torch.device(device if device is not None else getattr(models, "device", "cpu"))
        self.precision = precision
        self.dtype = resolve_dtype(precision, self.device)
        self.batch_size = int(batch_size)
        self.max_cached_features = max(1, int(max_cached_features))
        self._nets: Optional[Dict[str, torch.nn.Module]] = None

    # Networks are prepared lazily (the derived fast copies cost a few seconds and memory).
    def _networks(self) -> Dict[str, torch.nn.Module]:
        if self._nets is None:
            m = self.models
            raw = {"F": m.appearance_feature_extractor, "W": m.warping_module, "G": m.spade_generator}
            if self.dtype == torch.float32 and self.precision == "exact":
                self._nets = {k: v.eval().to(self.device) for k, v in raw.items()}
            else:
                # Low precision: channels-last (fast.py swaps G's SPADE blocks for layout-keeping
                # ones so the whole decoder stays channels-last). Float32 on CPU: NNPACK
                # convolutions, which want the default layout.
                self._nets = {k: prepare_network(v, self.dtype, self.device,
                                                 memory_channels_last=self.dtype != torch.float32, nnpack=True)
                              for k, v in raw.items()}
        return self._nets

    def _scope(self):
        return flush_denormal(self.device.type == "cpu")

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, self.dtype)
        return channels_last(x) if self.dtype != torch.float32 else x

    # ----------------------------------------------------------------------------- F

    @torch.inference_mode()
    def source_features(self, crops, cancel: Optional[CancelFn] = None) -> torch.Tensor:
        """Appearance features `[S,32,16,64,64]` (compute dtype, on device) of source crops.

        crops: FaceCrops or RGB crops `[S,256,256,3]` (uint8, or float 0..1).
        """
        x = crops_to_input(crops)
        F = self._networks()["F"]
        out: List[torch.Tensor] = []
        for i in range(0, x.shape[0], self.batch_size):
            self._check_cancel(cancel)
            with self._scope():
                out.append(F(self._prep(x[i:i + self.batch_size])))
        return torch.cat(out)

    # --------------------------------------------------------------------------- W+G

    @torch.inference_mode()
    def warp_decode(self, f_s: torch.Tensor, x_s: torch.Tensor, x_d: torch.Tensor) -> torch.Tensor:
        """One batch: `W(f_s, x_s, x_d)` → `G` → image `[B,3,512,512]` float32 in [0,1].

        f_s `[B,32,16,64,64]`, x_s / x_d `[B,21,3]` (normalised keypoints). Exact mode on CPU
        runs the items one at a time (W and G give bit-identical items at any batch size, and
        a batch of 4 was 15-50 % slower per frame there: cache; measured); the fast copies take
        the batch and decide per layer (fast_convs: small maps share calls, large ones per item).
        """
        if self.device.type == "cpu" and f_s.shape[0] > 1 and self.precision == "exact":
            return torch.cat([self.warp_decode(f_s[i:i + 1], x_s[i:i + 1], x_d[i:i + 1])
                              for i in range(f_s.shape[0])])
        nets = self._networks()
        with self._scope():
            kp_s = x_s.to(self.device, torch.float32)  # geometry stays float32 (W upcasts anyway)
            kp_d = x_d.to(self.device, torch.float32)
            warped = nets["W"](self._prep(f_s), kp_source=kp_s, kp_driving=kp_d)["out"]
            img = nets["G"](warped.to(self.device, self.dtype).contiguous())
        return img.float()

    @staticmethod
    def _check_cancel(cancel: Optional[CancelFn]) -> None:
        if cancel is not None and cancel():
            raise Cancelled("Rendering cancelled.")

    def iter_render(
        self,
        plan: KeypointPlan,
        source,
        output: str = "float",
        progress: Optional[ProgressFn] = None,
        cancel: Optional[CancelFn] = None,
    ) -> Iterator[torch.Tensor]:
        """Yield the animated crops of `plan` in chunks of `batch_size` frames, in order.

        source: FaceCrops / RGB crops `[S,256,256,3]` (items indexed by `plan.source_index`),
                or precomputed features `[S,32,16,64,64]` from `source_features`.
        output: 'float' → `[b,512,512,3]` float32 in [0,1]; 'uint8' → `[b,512,512,3]` uint8
                truncated exactly as the reference's `parse_output`; 'raw' → `[b,3,512,512]` float32.
        progress(done, total) is called after every chunk; cancel() is polled before every
        batch and raises `Cancelled` when it returns True. Chunks are CPU tensors.
        """
        if output not in ("float", "uint8", "raw"):
            raise InputError(f"output must be 'float', 'uint8' or 'raw', got {output!r}.")
        n = len(plan)
        idx = plan.source_index.reshape(-1).long().cpu()
        if idx.numel() != n or plan.x_s.shape[0] != n:
            raise InputError(f"keypoint plan is inconsistent: {n} x_d, {plan.x_s.shape[0]} x_s, {idx.numel()} source indices.")
        feats_given = isinstance(source, torch.Tensor) and source.dim() == 5
        n_src = source.shape[0] if feats_given else len(source)
        if n and (int(idx.min()) < 0 or int(idx.max()) >= n_src):
            raise InputError(
                f"keypoint plan refers to source item {int(idx.max())}, but the source has {n_src} item(s). "
                "Use the face crops the source motion was extracted from."
            )
        # NaN / inf keypoints (a damaged motion) would be rendered as black frames: refuse first.
        check_finite_keypoints(plan.x_s, plan.x_d)
        cache = _FeatureCache(self, source, idx, feats_given, self.max_cached_features)
        done = 0
        if progress is not None:
            progress(0, n)
        # Freed large tensors stay in the heap for the next layer / frame while rendering (the
        # scope spans the yields; it closes with the generator).
        with keep_freed_memory(self.device.type == "cpu"):
            for a in range(0, n, self.batch_size):
                b = min(n, a + self.batch_size)
                self._check_cancel(cancel)
                f_s = cache.features_for(a, b, cancel)
                img = self.warp_decode(f_s, plan.x_s[a:b], plan.x_d[a:b])
                del f_s
                cache.release_until(b)
                if output == "uint8":
                    chunk = parse_output(img)
                elif output == "float":
                    chunk = to_float_image(img)
                else:
                    chunk = img.cpu()
                done = b
                if progress is not None:
                    progress(done, n)
                yield chunk

    def render(self, plan: KeypointPlan, source, output: str = "float",
               progress: Optional[ProgressFn] = None, cancel: Optional[CancelFn] = None) -> torch.Tensor:
        """All frames at once `[N,512,512,3]` (see `iter_render`); memory = the output itself."""
        chunks = list(self.iter_render(plan, source, output, progress, cancel))
        if not chunks:
            shape = (0, 3, 512, 512) if output == "raw" else (0, 512, 512, 3)
            return torch.zeros(shape, dtype=torch.uint8 if output == "uint8" else torch.float32)
        return torch.cat(chunks)


class _FeatureCache:
    """Source features on demand, each computed once while needed; evicts the item used
    farthest in the future (optimal for a known plan) when over capacity."""

    def __init__(self, animator: Animator, source, idx: torch.Tensor, feats_given: bool, capacity: int):
        self.a, self.source, self.feats_given = animator, source, feats_given
        self.idx = idx.tolist()
        self.capacity = capacity
        self.store: Dict[int, torch.Tensor] = {}
        self.uses: Dict[int, List[int]] = {}
        for pos, s in enumerate(self.idx):
            self.uses.setdefault(s, []).append(pos)
        self._ptr: Dict[int, int] = {s: 0 for s in self.uses}
        self.computed = 0  # number of F evaluations (for tests / diagnostics)

    def _next_use(self, s: int, after: int) -> float:
        u, p = self.uses[s], self._ptr[s]
        while p < len(u) and u[p] < after:
            p += 1
        self._ptr[s] = p
        return u[p] if p < len(u) else float("inf")

    def features_for(self, a: int, b: int, cancel) -> torch.Tensor:
        need = list(dict.fromkeys(self.idx[a:b]))
        missing = [s for s in need if s not in self.store]
        if missing:
            if self.feats_given:
                got = self.source[missing]
            else:
                crops = self.source.crops if isinstance(self.source, FaceCrops) else self.source
                got = self.a.source_features(crops[missing], cancel)
                self.computed += len(missing)
            for s, f in zip(missing, got):
                self.store[s] = f
        return torch.stack([self.store[s] for s in self.idx[a:b]])

    def release_until(self, b: int) -> None:
        """Drop features not needed from frame `b` on; keep at most `capacity` (farthest next use first)."""
        nxt = {s: self._next_use(s, b) for s in self.store}
        for s, t in nxt.items():
            if t == float("inf"):
                del self.store[s]
        if len(self.store) > self.capacity:
            for s in sorted(self.store, key=lambda s: nxt[s], reverse=True)[: len(self.store) - self.capacity]:
                del self.store[s]
