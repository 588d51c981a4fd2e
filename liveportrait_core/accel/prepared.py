"""The networks a render uses, per precision: the one entry point of the acceleration package.

`prepare_networks(models, precision, device)` returns F, W and G for a precision mode:

* 'exact' — the loaded networks themselves (eval mode, on `device`): the reference computation.
* 'fast'  — derived copies (accel/derive.py) in the compute dtype of `resolve_dtype`.

The derived copies are kept with the loaded models (`models.prepared`, keyed by precision,
device and compute dtype), so they are made once per (weights, precision, device), whichever
Animator or run asks; `prepared_bytes` tells how much memory they hold (for a memory estimate)
and `release_prepared` drops them. `LivePortraitModels.to(dtype=…)` drops them too (the weights
they were derived from changed).
"""
from __future__ import annotations

import threading
from typing import Dict, Optional, Union

import torch
from torch import nn

from .derive import channels_last, prepare_network
from .precision import resolve_dtype

NETWORKS = {"F": "appearance_feature_extractor", "W": "warping_module", "G": "spade_generator"}
_lock = threading.Lock()


def _store(models) -> dict:
    """The dict on `models` holding its derived copies (created on objects without one)."""
    store = getattr(models, "prepared", None)
    if store is None:
        store = {}
        models.prepared = store
    return store


def prepare_networks(models, precision: str = "exact",
                     device: Union[str, torch.device, None] = None) -> Dict[str, nn.Module]:
    """F, W, G (`{"F", "W", "G"}` → module) of `models` for `precision` on `device`
    (default: the models' device). 'exact' returns the loaded networks (moved to `device`);
    'fast' returns derived copies, made on first use and cached on `models`."""
    device = torch.device(device if device is not None else getattr(models, "device", "cpu"))
    dtype = resolve_dtype(precision, device)
    raw = {k: getattr(models, name) for k, name in NETWORKS.items()}
    if precision == "exact":
        return {k: v.eval().to(device) for k, v in raw.items()}
    key = (precision, device, dtype)
    with _lock:
        store = _store(models)
        nets = store.get(key)
        if nets is None:
            # Low precision: channels-last (G's SPADE blocks become layout-keeping ones so the whole
            # decoder stays channels-last). Float32: NNPACK convolutions, which want the default layout.
            nets = {k: prepare_network(v, dtype, device, memory_channels_last=dtype != torch.float32, nnpack=True)
                    for k, v in raw.items()}
            store[key] = nets
    return nets


def _unique_tensors(nets) -> Dict[int, int]:
    """storage address → bytes, over every parameter and buffer of `nets` (shared storage once)."""
    seen: Dict[int, int] = {}
    for net in nets:
        for t in (*net.parameters(), *net.buffers()):
            s = t.untyped_storage()
            seen[s.data_ptr()] = s.nbytes()
    return seen


def prepared_bytes(models, device: Union[str, torch.device, None] = None) -> int:
    """Bytes held by the derived copies cached on `models` (those on `device`, or all)."""
    dev = torch.device(device) if device is not None else None
    store = getattr(models, "prepared", None) or {}
    nets = [n for (_, d, _), group in store.items() if dev is None or d == dev for n in group.values()]
    return sum(_unique_tensors(nets).values())


def release_prepared(models, device: Union[str, torch.device, None] = None) -> int:
    """Drop the derived copies cached on `models` (those on `device`, or all); returns how many
    sets were dropped. The next `prepare_networks` makes them again."""
    dev = torch.device(device) if device is not None else None
    with _lock:
        store = getattr(models, "prepared", None) or {}
        keys = [k for k in store if dev is None or k[1] == dev]
        for k in keys:
            del store[k]
    return len(keys)


def compute_input(x: torch.Tensor, dtype: torch.dtype, device: Optional[torch.device]) -> torch.Tensor:
    """`x` as the networks of that compute dtype take it: on `device`, in `dtype`, channels-last
    for reduced precision (the layout their weights are stored in)."""
    x = x.to(device, dtype)
    return channels_last(x) if dtype != torch.float32 else x
