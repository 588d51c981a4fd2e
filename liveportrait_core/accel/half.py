"""Networks stored in float16 / bfloat16: how they compute, and how loaded networks take input.

Two things make a network loaded (or cast) in a reduced dtype usable without the caller caring:

* CPU float16 layers. PyTorch's CPU float16 convolutions and matmuls have no fast kernels (tens
  to hundreds of times slower than float32), so `Conv2d`, `Conv3d` and `Linear` here — drop-in
  `torch.nn` layers with the same state-dict keys, used by every network in `networks/` —
  compute float16 CPU inputs in float32 from the float16-stored weights and round the result
  back to float16. Every other dtype / device runs the stock layer unchanged, so float32 is
  exactly torch's (and the reference's) computation. `compute_dtype` gives the same rule to
  layers that call `F.conv2d` themselves (the spectral-norm conv).
* The input-casting hook of loaded networks (`inference_setup`): the data input (image, feature
  volume, MLP input) is moved to the network's device and dtype, so a caller may pass float32
  to a float16 network; other tensors (keypoints) only change device, because the warping
  module computes its geometry in float32.

This module imports only torch: `networks/` builds on it, so it must not import them.
"""
from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import nn


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a layer computes `x` in: float32 for float16 on the CPU, else `x.dtype`."""
    return torch.float32 if x.dtype == torch.float16 and x.device.type == "cpu" else x.dtype


class _CpuHalfAsFloat:
    """Mixin for a torch layer with `weight`/`bias`: on CPU, float16 input computes in float32
    from the float16-stored weights and rounds the result back; anything else is unchanged."""

    def _apply_weight(self, x: torch.Tensor, weight: torch.Tensor, bias) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if compute_dtype(x) != x.dtype:
            b = None if self.bias is None else self.bias.float()
            return self._apply_weight(x.float(), self.weight.float(), b).half()
        return self._apply_weight(x, self.weight, self.bias)


class Conv2d(_CpuHalfAsFloat, nn.Conv2d):
    """`nn.Conv2d` (same keys, same float32/bfloat16 behaviour); CPU float16 computes in float32."""

    def _apply_weight(self, x, weight, bias):
        return self._conv_forward(x, weight, bias)


class Conv3d(_CpuHalfAsFloat, nn.Conv3d):
    """`nn.Conv3d` (same keys, same float32/bfloat16 behaviour); CPU float16 computes in float32."""

    def _apply_weight(self, x, weight, bias):
        return self._conv_forward(x, weight, bias)


class Linear(_CpuHalfAsFloat, nn.Linear):
    """`nn.Linear` (same keys, same float32/bfloat16 behaviour); CPU float16 computes in float32."""

    def _apply_weight(self, x, weight, bias):
        return F.linear(x, weight, bias)


# ------------------------------------------------------------------------ loaded networks


def cast_inputs(module: nn.Module, args: tuple, kwargs: dict):
    """Forward pre-hook (with kwargs): the data input — the first argument of forward — goes to
    the network's device and dtype; other floating tensors (keypoints) only change device."""
    p = next(module.parameters(), None)
    if p is None:
        return None

    def cast(v, data: bool):
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            return v.to(device=p.device, dtype=p.dtype) if data else v.to(device=p.device)
        return v

    data_kw = getattr(module, "_lp_data_arg", None)
    args = tuple(cast(a, i == 0) for i, a in enumerate(args))
    kwargs = {k: cast(v, not args and k == data_kw) for k, v in kwargs.items()}
    return args, kwargs


def _data_arg(module: nn.Module) -> str | None:
    params = list(inspect.signature(type(module).forward).parameters)
    return params[1] if len(params) > 1 else None  # params[0] is self


def inference_setup(module: nn.Module) -> nn.Module:
    """Inference setup of a loaded network: eval mode, no gradients, the `cast_inputs` hook
    (idempotent). Returns `module` itself."""
    module.eval()
    module.requires_grad_(False)
    # A module without its own forward (StitchingRetargeting: .stitching/.eye/.lip) is used
    # through its children, so those get the hook instead.
    own_forward = type(module).forward is not nn.Module.forward
    for m in (module,) if own_forward else tuple(module.children()):
        if not getattr(m, "_lp_cast_hook", False):
            m._lp_data_arg = _data_arg(m)
            m.register_forward_pre_hook(cast_inputs, with_kwargs=True)
            m._lp_cast_hook = True
    return module


def remove_cast_hooks(net: nn.Module) -> None:
    """Drop the `cast_inputs` hooks of `net` and its children (in place): a derived copy is fed
    in its compute dtype by its caller, and the hook would round keypoints to that dtype."""
    for m in net.modules():
        for k, hook in list(m._forward_pre_hooks.items()):
            if hook is cast_inputs:
                del m._forward_pre_hooks[k]
                m._forward_pre_hooks_with_kwargs.pop(k, None)
        if getattr(m, "_lp_cast_hook", False):
            m._lp_cast_hook = False
