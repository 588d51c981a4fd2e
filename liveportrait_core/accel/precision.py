"""The precision modes and the compute dtype each one means on a device."""
from __future__ import annotations

from typing import Union

import torch

from ..errors import InputError

PRECISIONS = ("exact", "fast")


def bf16_supported_cpu() -> bool:
    """True when this CPU has native bfloat16 support in oneDNN (AVX512-BF16 / AMX)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # noqa: BLE001 - older builds without the probe
        return False


def resolve_dtype(precision: str, device: Union[str, torch.device]) -> torch.dtype:
    """Compute dtype of F, W, G for `precision` on `device`.

    'exact' → float32 (the networks as loaded). 'fast' → float16 on CUDA / MPS, bfloat16 on CPUs
    with native bf16, else float32 (where bf16 would be emulated, far slower than float32, the
    fast copies use NNPACK's Winograd / FFT convolutions instead: accel/nnpack.py).
    """
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {PRECISIONS}, got {precision!r}.")
    if precision == "exact":
        return torch.float32
    dev = torch.device(device)
    if dev.type in ("cuda", "mps"):
        return torch.float16
    if dev.type == "cpu" and bf16_supported_cpu():
        return torch.bfloat16
    return torch.float32
