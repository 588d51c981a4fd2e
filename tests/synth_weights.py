"""Deterministic synthetic LivePortrait weights (shared/spec/WEIGHTS_RULE.md), for tests only.

`state_dicts(seed)` returns {network: {key: tensor}} in the upstream key layout
(stitching: {'retarget_shoulder': {'module.mlp.0.weight': …}, …}); `write_folder` writes the
upstream `.pth` layout or the flat `.safetensors` layout.
"""
from __future__ import annotations

import json
import os
import zlib
from functools import lru_cache

import numpy as np
import torch

KEYS_JSON = os.path.join(os.path.dirname(__file__), "fixtures", "state_dict_keys.json")
BASE_MODELS = ("appearance_feature_extractor", "motion_extractor", "warping_module", "spade_generator")
SUBDICTS = ("retarget_shoulder", "retarget_mouth", "retarget_eye")


@lru_cache(maxsize=1)
def key_doc() -> dict:
    with open(KEYS_JSON) as f:
        return json.load(f)


def _tensor(rule_key: str, shape, dtype: str, seed: int) -> np.ndarray:
    shape = tuple(shape)
    if dtype == "int64":
        return np.zeros(shape, dtype=np.int64)
    rng = np.random.default_rng(zlib.crc32(rule_key.encode("utf-8")) + 1000003 * seed)
    n = rng.standard_normal(shape, dtype=np.float64)
    leaf = rule_key.rsplit(".", 1)[-1]
    if leaf in ("weight_u", "weight_v"):
        v = n / np.linalg.norm(n)
    elif leaf == "running_mean":
        v = 0.1 * n
    elif leaf == "running_var":
        v = 1.0 + 0.1 * np.abs(n)
    elif leaf in ("bias", "beta"):
        v = 0.01 * n
    elif leaf == "gamma":
        v = 0.1 * n
    elif len(shape) == 1:
        v = 1.0 + 0.1 * n
    else:
        v = n / np.sqrt(float(np.prod(shape[1:])))
    return v.astype(np.float32)


def _group(entries, seed: int) -> dict:
    out = {e["key"]: _tensor(e["rule_key"], e["shape"], e["dtype"], seed) for e in entries}
    for k in list(out):
        if k.endswith(".weight_u"):  # u = normalize(W v) so that sigma = |W v| > 0
            base = k[: -len("weight_u")]
            w = out[base + "weight_orig"].astype(np.float64)
            wv = w.reshape(w.shape[0], -1) @ out[base + "weight_v"].astype(np.float64)
            out[k] = (wv / np.linalg.norm(wv)).astype(np.float32)
    return {k: torch.from_numpy(np.array(v)) for k, v in out.items()}


@lru_cache(maxsize=2)
def state_dicts(seed: int = 0) -> dict:
    doc = key_doc()
    sds = {name: _group(doc[name]["keys"], seed) for name in BASE_MODELS}
    subs = doc["stitching_retargeting_module"]["sub_dicts"]
    sds["stitching_retargeting_module"] = {s: _group(subs[s]["keys"], seed) for s in SUBDICTS}
    return sds


def write_folder(out_dir: str, seed: int = 0, layout: str = "upstream-pth",
                 dtype: torch.dtype = torch.float32) -> str:
    """Write a weight folder; returns out_dir. layout: 'upstream-pth' or 'safetensors-flat'."""
    sds = state_dicts(seed)

    def cast(t):
        return t.to(dtype) if t.is_floating_point() else t

    if layout == "upstream-pth":
        base = os.path.join(out_dir, "liveportrait", "base_models")
        ret = os.path.join(out_dir, "liveportrait", "retargeting_models")
        os.makedirs(base, exist_ok=True)
        os.makedirs(ret, exist_ok=True)
        for name in BASE_MODELS:
            torch.save({k: cast(v) for k, v in sds[name].items()}, os.path.join(base, name + ".pth"))
        stitch = {s: {k: cast(v) for k, v in d.items()} for s, d in sds["stitching_retargeting_module"].items()}
        torch.save(stitch, os.path.join(ret, "stitching_retargeting_module.pth"))
    elif layout == "safetensors-flat":
        from safetensors.torch import save_file

        os.makedirs(out_dir, exist_ok=True)
        for name in BASE_MODELS:
            save_file({k: cast(v).contiguous() for k, v in sds[name].items()},
                      os.path.join(out_dir, name + ".safetensors"))
        flat = {f"{s}_{k}": cast(v) for s, d in sds["stitching_retargeting_module"].items() for k, v in d.items()}
        save_file(flat, os.path.join(out_dir, "stitching_retargeting_module.safetensors"))
    else:
        raise ValueError(layout)
    return out_dir
