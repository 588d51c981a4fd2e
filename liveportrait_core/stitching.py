"""The stitching and retargeting MLPs applied to keypoints (docs/MOTION.md, "Composition").

Every MLP runs on rows `[x_s flattened (63), ratios…]`, one row at a time as the reference
does (so results do not depend on how many frames are batched), on the MLPs' device and dtype,
and returns float32 CPU deltas.
"""
from __future__ import annotations

import warnings
from typing import Optional

import torch

from .errors import InputError, MotionFileError
from .motion import NUM_KP, Motion


class MissingRatiosError(InputError, MotionFileError):
    """Eye / lip retargeting asked for, but the needed open ratios are unknown."""


def run_mlp(fn, x_s: torch.Tensor, ratio: torch.Tensor, module: torch.nn.Module) -> torch.Tensor:
    """fn (one of module's MLPs) on the rows `[x_s [N,21,3] flattened, ratio [N,k]]` → [N,out] float32."""
    p = next(module.parameters())
    inp = torch.cat([x_s.reshape(x_s.shape[0], -1), ratio], dim=1)
    inp = inp.to(p.device, p.dtype)
    with torch.no_grad():  # row by row, as the reference: results do not depend on batching
        return torch.cat([fn(inp[i:i + 1]) for i in range(inp.shape[0])]).to("cpu", torch.float32)


def stitch_keypoints(mlps, x_s: torch.Tensor, x_d: torch.Tensor) -> torch.Tensor:
    """Stitching: x_d [N,21,3] + the stitching MLP's 63 keypoint deltas (as 21×3), then its two
    last outputs added to every keypoint's x and y. Input rows are [x_s, x_d] (126 values)."""
    delta = run_mlp(mlps.stitching, x_s, x_d.reshape(x_d.shape[0], -1), mlps)
    out = x_d + delta[:, :63].reshape(-1, NUM_KP, 3)
    out[..., 0] += delta[:, 63:64]
    out[..., 1] += delta[:, 64:65]
    return out


def eye_delta(mlps, x_s: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """Eye retargeting delta [N,21,3]; ratio [N,3] = (source left, source right, target)."""
    return run_mlp(mlps.eye, x_s, ratio, mlps).reshape(-1, NUM_KP, 3)


def lip_delta(mlps, x_s: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """Lip retargeting delta [N,21,3]; ratio [N,2] = (source, target)."""
    return run_mlp(mlps.lip, x_s, ratio, mlps).reshape(-1, NUM_KP, 3)


def need_ratios(value: Optional[torch.Tensor], feature: str, what: str, driving: bool = False) -> torch.Tensor:
    """`value`, or MissingRatiosError saying which feature needs which ratios and what to do."""
    if value is not None:
        return value
    if driving:
        raise MissingRatiosError(
            f"{feature} needs the {what}, but the driving motion has none (e.g. a motion template "
            f"saved without ratio lists, like the reference's wink.pkl). Turn {feature} off, or set "
            f"target_{'eye' if 'eye' in feature else 'lip'}_ratio to a fixed value.")
    raise MissingRatiosError(
        f"{feature} needs the {what}, but the source motion has none (they come from the "
        f"source's 203-point landmarks). Turn {feature} off, or extract the source with landmarks.")


def ratio_target_deltas(x_d: torch.Tensor, x_s: torch.Tensor, src: Motion, edits: Motion, mlps) -> torch.Tensor:
    """x_d [N,21,3] plus, for each item of `edits` with an eye / lip open-ratio target
    (Motion.eye_target / lip_target = (ratio, weight), weight > 0), weight × the retargeting
    delta from the source keypoints x_s [N,21,3] and the source's open ratios (src, per item)
    to that ratio. Items without a target are returned bit for bit. No MLPs: a warning."""
    out = x_d
    for kind in ("eye", "lip"):
        tgt = getattr(edits, f"{kind}_target")
        if tgt is None or not bool((tgt[:, 1] > 0).any()):
            continue
        if mlps is None:
            warnings.warn(f"the {kind} open-ratio target is skipped: the stitching/retargeting weights are "
                          "not loaded.", stacklevel=3)
            continue
        rows = (tgt[:, 1] > 0).nonzero().flatten()
        eye = kind == "eye"
        c_s = need_ratios(src.eye_ratio if eye else src.lip_ratio, f"the {kind} open-ratio target",
                          "source eye ratios" if eye else "source lip ratio")
        ratio = torch.cat([c_s[rows], tgt[rows, 0:1]], 1)
        d = (eye_delta if eye else lip_delta)(mlps, x_s[rows], ratio)
        out = out.clone()
        out[rows] = out[rows] + d * tgt[rows, 1].reshape(-1, 1, 1)
    return out
