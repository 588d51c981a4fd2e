"""The loaded LivePortrait networks as one value (`LivePortraitModels`) and their dtype policy.

Build it with `liveportrait_core.weights.load_models(path, device, dtype)`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import nn

log = logging.getLogger("liveportrait")

BASE_NETWORKS = ("appearance_feature_extractor", "motion_extractor", "warping_module", "spade_generator")

# dtype policy. `dtype` (float32 / float16 / bfloat16) applies to F, W and G, which hold ~96 % of
# the parameters and nearly all of the compute. These stay float32 whatever `dtype` is:
# - motion_extractor: its outputs are geometry. Head pose comes from a softmax expectation over 66
#   bins (`3·Σ p_i·i − 97.5` degrees): float16 logits (10-bit mantissa) put ~0.05° of noise on
#   the angles, bfloat16 (7-bit) ~0.4°, and keypoints/expression get 1e-3…1e-2 relative error,
#   which shows as frame-to-frame jitter of the animated face. Its 23 layer norms and GRNs would
#   be upcast to float32 anyway (a GRN sum of squares over 64×64 positions overflows float16's
#   65504), and M costs a small fraction of a frame (benchmarks/networks.py): float32 is nearly free.
# - stitching_retargeting: 0.2 M parameters; its outputs are keypoint deltas added to float32
#   keypoints, so low precision would only add noise for no speed gain.
# - spectral norm of the SPADE generator: σ = uᵀ·(W_orig·v) sums up to 4608 products and divides
#   the whole layer weight; networks/blocks.py (SNConv2d) evaluates it in float32 on every call
#   from the stored tensors, so a float16/bfloat16 generator only rounds W_orig, u, v themselves
#   (≤5e-4 relative per element in float16, ≤4e-3 in bfloat16) and never accumulates in low precision.
# Inside F, W, G the numerically sensitive reductions (instance/layer norm statistics) are also
# computed in float32 by the blocks; convolutions, grid sampling and the rest run in `dtype`
# (upstream runs these networks under float16 autocast on GPU as well).
FLOAT32_NETWORKS = ("motion_extractor", "stitching_retargeting")
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def network_dtype(name: str, dtype: torch.dtype) -> torch.dtype:
    """The dtype network `name` is kept in when the models are asked for `dtype`."""
    return torch.float32 if name in FLOAT32_NETWORKS else dtype


@dataclass
class LivePortraitModels:
    """The five LivePortrait networks, in eval mode, without gradients.

    appearance_feature_extractor(x [B,3,256,256] RGB 0..1) → [B,32,16,64,64]
    motion_extractor(x [B,3,256,256]) → dict pitch/yaw/roll [B,66], t [B,3], exp [B,63],
        scale [B,1], kp [B,63] (raw head outputs, always float32)
    warping_module(feature_3d, kp_source=[B,21,3], kp_driving=[B,21,3]) → dict out [B,256,64,64],
        occlusion_map [B,1,64,64], deformation [B,16,64,64,3]
    spade_generator(feature [B,256,64,64]) → [B,3,512,512] in 0..1
    stitching_retargeting: StitchingRetargeting (.stitching/.eye/.lip, float32) or None when no
        stitching file was found (then compose skips stitching and eye/lip retargeting).
    Every network moves its inputs to its device and casts its data input (image / feature /
    MLP input, not keypoints) to its dtype; outputs come in the network's dtype
    (`network_dtype(name, dtype)`).
    After a float16/bfloat16 load, `.to(dtype=torch.float32)` keeps the rounded values: reload
    for exact float32 weights.
    landmark_path: the 203-point `landmark.onnx` found next to the weights, or None.
    source: the folder passed to load_models; files: network name → file it was loaded from.
    variant: 'human' or 'animal' (guessed from the folder names).
    """

    appearance_feature_extractor: nn.Module
    motion_extractor: nn.Module
    warping_module: nn.Module
    spade_generator: nn.Module
    stitching_retargeting: nn.Module | None
    landmark_path: str | None
    device: torch.device
    dtype: torch.dtype
    source: str
    files: dict[str, str] = field(default_factory=dict)
    variant: str = "human"
    # Derived inference copies of F, W, G (accel.prepare_networks), kept with the weights they
    # were made from: key (precision, device, compute dtype) → {"F", "W", "G"}. Dropped when the
    # weights' dtype changes (`to(dtype=…)`) or by accel.release_prepared.
    prepared: dict = field(default_factory=dict, repr=False, compare=False)

    def networks(self) -> Iterator[tuple[str, nn.Module]]:
        """(name, module) for every loaded network (stitching only when present)."""
        for name in BASE_NETWORKS:
            yield name, getattr(self, name)
        if self.stitching_retargeting is not None:
            yield "stitching_retargeting", self.stitching_retargeting

    def to(self, device: torch.device | str | None = None,
           dtype: torch.dtype | None = None) -> "LivePortraitModels":
        """Move all networks (in place) to `device` and/or apply the dtype policy for `dtype`."""
        if dtype is not None and dtype not in SUPPORTED_DTYPES:
            raise ValueError(f"dtype must be one of {SUPPORTED_DTYPES}, got {dtype}")
        device = torch.device(device) if device is not None else self.device
        dtype = dtype if dtype is not None else self.dtype
        if dtype != self.dtype:
            self.prepared.clear()  # derived from the weights before they were re-rounded
        for name, module in self.networks():
            module.to(device=device, dtype=network_dtype(name, dtype))
        self.device, self.dtype = device, dtype
        return self

    def offload(self) -> "LivePortraitModels":
        """Move every network to the CPU (frees accelerator memory; dtype unchanged)."""
        return self.to("cpu")

    @property
    def has_stitching(self) -> bool:
        return self.stitching_retargeting is not None

    def num_parameters(self) -> int:
        return sum(p.numel() for _, m in self.networks() for p in m.parameters())

    def memory_bytes(self) -> int:
        """Bytes held by all parameters and buffers (for memory planning)."""
        return sum(t.numel() * t.element_size()
                   for _, m in self.networks() for t in (*m.parameters(), *m.buffers()))
