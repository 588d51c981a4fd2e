"""Acceleration: everything the 'fast' precision adds to the reference networks.

Public API (the rest are the package's own modules):

* `prepare_networks(models, precision, device)` → {"F", "W", "G"} modules for a render;
  `prepared_bytes(models)`, `release_prepared(models)` — the cached derived copies.
* `PRECISIONS`, `resolve_dtype(precision, device)`, `bf16_supported_cpu()`.
* `compute_input(x, dtype, device)` — a tensor as the prepared networks take it.
* `flush_denormal()` / `keep_freed_memory()` — process-wide CPU scopes used while rendering,
  restored exactly on every exit.

Modules: `precision` (modes → dtype), `prepared` (the entry point and its cache), `derive`
(derived copies: spectral norm, BN folding, layouts), `spade` (G's SPADE stand-ins), `nnpack`
(Winograd / FFT float32 convolutions), `swap` (module replacement), `half` (float16 storage: CPU
layers and the input-cast hook of loaded networks), `denormal`, `heap`.

Names are loaded on first use: `networks/` imports `accel.half`, and `derive` imports the
networks, so this package must not import its submodules eagerly.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "prepare_networks": "prepared", "prepared_bytes": "prepared", "release_prepared": "prepared",
    "compute_input": "prepared",
    "PRECISIONS": "precision", "resolve_dtype": "precision", "bf16_supported_cpu": "precision",
    "flush_denormal": "denormal", "keep_freed_memory": "heap",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
