"""Face crops → `Motion`: the motion extractor M in batches, plus eye/lip ratios from landmarks.

Shared by the CLI and the ComfyUI ExtractMotion node, for source and driving sides alike.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional

import torch

from .errors import InputError
from .face.crops import FaceCrops
from .images import crops_to_input
from .progress import CancelFn, ProgressFn, check_cancel


@torch.inference_mode()
def run_motion_extractor(models, crops, batch_size: int = 8,
                         progress: Optional[ProgressFn] = None,
                         cancel: Optional[CancelFn] = None) -> Dict[str, torch.Tensor]:
    """Raw M outputs for RGB crops `[N,256,256,3]` (uint8 or float 0..1), concatenated on dim 0.

    Returns the MotionExtractor dict (pitch/yaw/roll `[N,66]`, t `[N,3]`, exp `[N,63]`,
    scale `[N,1]`, kp `[N,63]`) as float32 CPU tensors. Always float32 (M is cheap and the
    keypoints feed every later step).
    """
    x = crops_to_input(crops)
    if x.shape[0] == 0:
        raise InputError("no face crops to extract motion from.")
    device = torch.device(getattr(models, "device", "cpu"))
    net = models.motion_extractor.eval()
    parts: List[Dict[str, torch.Tensor]] = []
    bs = max(1, int(batch_size))
    for i in range(0, x.shape[0], bs):
        check_cancel(cancel, "Motion extraction")
        out = net(x[i:i + bs].to(device, next(net.parameters()).dtype))
        parts.append({k: v.float().cpu() for k, v in out.items()})
        if progress is not None:
            progress(min(x.shape[0], i + bs), x.shape[0])
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def extract_motion(models, crops, fps: float = 25.0, batch_size: int = 8,
                   eye_ratio: Optional[torch.Tensor] = None, lip_ratio: Optional[torch.Tensor] = None,
                   progress: Optional[ProgressFn] = None,
                   cancel: Optional[CancelFn] = None):
    """`Motion` of N face crops.

    crops: `FaceCrops` (its 203-point landmarks, when present, give the eye/lip ratios and its
           frame_index / face_id are carried over) or RGB crops `[N,256,256,3]`.
    eye_ratio `[N,2]` / lip_ratio `[N,1]`: explicit ratios (override the landmarks), e.g.
           from landmarks computed elsewhere; without either the Motion has no ratios.
    """
    from .motion import Motion, eye_lip_ratios

    raw = run_motion_extractor(models, crops, batch_size, progress, cancel)
    n = raw["kp"].shape[0]
    if isinstance(crops, FaceCrops) and crops.landmarks is not None and (eye_ratio is None or lip_ratio is None):
        e, l = eye_lip_ratios(torch.as_tensor(crops.landmarks, dtype=torch.float32))
        eye_ratio = e if eye_ratio is None else eye_ratio
        lip_ratio = l if lip_ratio is None else lip_ratio
    for name, r, w in (("eye_ratio", eye_ratio, 2), ("lip_ratio", lip_ratio, 1)):
        if r is not None and tuple(torch.as_tensor(r).reshape(-1, w).shape) != (n, w):
            raise InputError(f"{name} must have {n}×{w} values (one row per crop), got shape {tuple(torch.as_tensor(r).shape)}.")
    eye = None if eye_ratio is None else torch.as_tensor(eye_ratio, dtype=torch.float32).reshape(n, 2)
    lip = None if lip_ratio is None else torch.as_tensor(lip_ratio, dtype=torch.float32).reshape(n, 1)
    motion = Motion.from_extractor(raw, eye_ratio=eye, lip_ratio=lip, fps=float(fps))
    if isinstance(crops, FaceCrops):
        motion = dataclasses.replace(motion, frame_index=crops.frame_index.clone(), face_id=crops.face_id.clone())
    return motion
