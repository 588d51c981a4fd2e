"""Rendering: source appearance features + keypoint plan → animated 512² face crops.

`Animator` batches the three rendering networks: the appearance extractor F once per source
item, then warping W and the decoder G over the output frames, yielding chunks so memory stays
flat however long the video is (docs/ARCHITECTURE.md, "Data flow"). Which networks run — the
loaded ones ('exact') or derived fast copies ('fast') — is the acceleration package's choice
(`accel.prepare_networks`); this module only batches, caches source features and converts the
output (`images.render_to_u8` / `render_to_float`).
"""
from __future__ import annotations

from typing import Dict, Iterator, List, Optional

import torch

from .accel.denormal import flush_denormal
from .accel.heap import keep_freed_memory
from .accel.precision import resolve_dtype
from .accel.prepared import compute_input, prepare_networks
from .checks import check_finite_keypoints
from .compose import KeypointPlan
from .errors import InputError
from .face.crops import FaceCrops
from .images import crops_to_input, render_to_float, render_to_u8
from .progress import CancelFn, ProgressFn, check_cancel


class Animator:
    """Warp + decode keypoint plans for face crops, in batches.

    models:     a `LivePortraitModels` (appearance_feature_extractor, warping_module,
                spade_generator, device).
    precision:  'exact' (float32) or 'fast' (fp16 on CUDA/MPS, bf16 on CPUs with native bf16,
                else float32 with NNPACK Winograd / FFT convolutions).
    batch_size: frames per W/G batch (and per F batch). In exact mode on CPU the frames of a
                batch are still warped one at a time (faster there), so it only sets the chunk
                size; fast mode on CPU is fastest at about 4 (benchmarks/animate.py).
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

    # Networks are fetched lazily: the derived fast copies cost a few seconds and memory the
    # first time (then they are kept with the models, see accel/prepared.py).
    def _networks(self) -> Dict[str, torch.nn.Module]:
        if self._nets is None:
            self._nets = prepare_networks(self.models, self.precision, self.device)
        return self._nets

    def networks(self) -> Dict[str, torch.nn.Module]:
        """The networks this animator runs: F / W / G as loaded (exact) or their fast copies."""
        return self._networks()

    def _scope(self):
        return flush_denormal(self.device.type == "cpu")

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        return compute_input(x, self.dtype, self.device)

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
            check_cancel(cancel)
            with self._scope():
                out.append(F(self._prep(x[i:i + self.batch_size])))
        return torch.cat(out)

    # --------------------------------------------------------------------------- W+G

    @torch.inference_mode()
    def warp_decode(self, f_s: torch.Tensor, x_s: torch.Tensor, x_d: torch.Tensor,
                    cancel: Optional[CancelFn] = None) -> torch.Tensor:
        """One batch: `W(f_s, x_s, x_d)` → `G` → image `[B,3,512,512]` float32 in [0,1].

        f_s `[B,32,16,64,64]`, x_s / x_d `[B,21,3]` (normalised keypoints). Exact mode on CPU
        runs the items one at a time (W and G give bit-identical items at any batch size, and
        one at a time was faster there: cache); the fast copies take the batch and decide per
        layer (accel/nnpack.py: small maps share calls, large ones per item). `cancel` is polled
        before every item's W and between W and G, so a cancel lands within one frame's time
        (a W or G call) in exact mode and within one batch's W or G in fast mode.
        """
        if self.device.type == "cpu" and f_s.shape[0] > 1 and self.precision == "exact":
            return torch.cat([self.warp_decode(f_s[i:i + 1], x_s[i:i + 1], x_d[i:i + 1], cancel)
                              for i in range(f_s.shape[0])])
        nets = self._networks()
        check_cancel(cancel)
        with self._scope():
            kp_s = x_s.to(self.device, torch.float32)  # geometry stays float32 (W upcasts anyway)
            kp_d = x_d.to(self.device, torch.float32)
            warped = nets["W"](self._prep(f_s), kp_source=kp_s, kp_driving=kp_d)["out"]
            check_cancel(cancel)
            img = nets["G"](warped.to(self.device, self.dtype).contiguous())
        return img.float()

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
                truncated as the reference does (`images.render_to_u8`); 'raw' → `[b,3,512,512]` float32.
        progress(done, total) is called after every chunk; cancel (progress.py) is polled before
        every batch and between frames (see `warp_decode`). Chunks are CPU tensors.
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
                check_cancel(cancel)
                f_s = cache.features_for(a, b, cancel)
                img = self.warp_decode(f_s, plan.x_s[a:b], plan.x_d[a:b], cancel)
                del f_s
                cache.release_until(b)
                if output == "uint8":
                    chunk = render_to_u8(img)
                elif output == "float":
                    chunk = render_to_float(img)
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
