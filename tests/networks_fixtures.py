"""Reference data for the network parity tests: full upstream fixtures or their compact copies.

`reference(name)` returns the *compact view* of a parity fixture (the arrays the tests always
check) — computed from the full file in ../shared when present, else read from
tests/fixtures/networks_<name>.npz (written by tests/fixtures/make_compact_networks.py with the
same view functions) — plus the full file (or None) for the extra full-size checks.

Reductions (what the compact files keep):
* inputs are kept whole (images uint8; G's float16 input split into its two byte planes, which
  zlib compresses ~20 % better — lossless). W's float16 input is not stored: it is exactly
  F(F's input) rounded to float16 (checked by the full-mode tests), so the tests recompute it.
* outputs are sub-sampled with strides coprime to 2 (so every pixel-shuffle phase and both
  parities of every up/down-sampling are sampled) plus float64 mean / population std of the
  full arrays.
"""
from __future__ import annotations

import numpy as np

from conftest import compact_file, parity_file

NAMES = ("appearance_feature_extractor", "motion_extractor", "warping_module", "spade_generator",
         "stitching_retargeting")


def stats(a: np.ndarray, axes=None) -> tuple[np.ndarray, np.ndarray]:
    """float64 mean and population std (ddof=0) of float32 data."""
    a = np.asarray(a, dtype=np.float64)
    return a.mean(axis=axes), a.std(axis=axes)


def f16_to_planes(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.astype(np.float16).view(np.uint8).reshape(-1, 2).T)


def planes_to_f16(planes: np.ndarray, shape) -> np.ndarray:
    return np.ascontiguousarray(planes.T).view(np.float16).reshape(shape)


def _view_f(d) -> dict:
    m, s = stats(d["output"])
    return {"input_u8": d["input_u8"], "output_sub": d["output"][:, :, ::3, ::5, ::5],
            "output_mean": m, "output_std": s}


def _view_m(d) -> dict:
    return {k: d[k] for k in d.files if k == "input_u8" or k.startswith("raw_")}


def _view_w(d) -> dict:
    m, s = stats(d["out"])
    return {
        "kp_source": d["kp_source"], "kp_driving": d["kp_driving"],
        "out_sub": d["out"][:, ::2, ::5, ::5], "out_mean": m, "out_std": s,
        "occlusion_map": d["occlusion_map"],
        "deformation_sub": d["deformation"][:, ::3, ::5, ::5],
        "dm_mask_sub2": d["dm_mask_sub"][:, :, ::2, ::3, ::3],   # mask[:, :, ::4, ::12, ::12]
        "dm_hourglass_input_sub2": d["dm_hourglass_input_sub"][:, :, ::3, ::3, ::3],
        "b2_kp_source": d["b2_kp_source"], "b2_kp_driving": d["b2_kp_driving"],
        "b2_out_sub": d["b2_out_sub2"][:, ::4, ::3, ::3],        # out[:, ::4, ::6, ::6]
        "b2_out_mean": d["b2_out_mean"], "b2_out_std": d["b2_out_std"],
        "b2_occlusion_map": d["b2_occlusion_map"], "b2_deformation_sub": d["b2_deformation_sub"],
    }


def _view_g(d) -> dict:
    m, s = stats(d["output"])
    return {"feature_f16_planes": f16_to_planes(d["feature_f16"]),
            "feature_shape": np.array(d["feature_f16"].shape),
            "output_sub": d["output"][:, :, ::5, ::5], "output_mean": m, "output_std": s,
            "sn_names": d["sn_names"], "sn_sigma": d["sn_sigma"],
            "sn_up_1_conv_1_weight_eval_sub": d["sn_up_1_conv_1_weight_eval"][::2, ::2]}


def _view_s(d) -> dict:
    return {k: d[k] for k in d.files if k != "meta_json"}


VIEWS = {"appearance_feature_extractor": _view_f, "motion_extractor": _view_m,
         "warping_module": _view_w, "spade_generator": _view_g,
         "stitching_retargeting": _view_s}


def compact_name(name: str) -> str:
    return f"networks_{name}.npz"


def reference(name: str):
    """(compact view dict, full NpzFile or None) for parity fixture `name`."""
    path = parity_file(f"{name}.npz")
    if path is not None:
        full = np.load(path)
        return VIEWS[name](full), full
    with np.load(compact_file(compact_name(name))) as c:
        return {k: c[k] for k in c.files}, None
