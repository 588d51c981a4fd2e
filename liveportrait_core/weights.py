"""Find, read, check and load LivePortrait weights: `load_models(path, device, dtype)`.

Accepted folders (`path`):
- the reference `pretrained_weights/` tree: `liveportrait/base_models/<net>.pth`,
  `liveportrait/retargeting_models/stitching_retargeting_module.pth`, `liveportrait/landmark.onnx`;
- its `liveportrait/` folder, or `liveportrait/base_models/` itself;
- the animal weights: `liveportrait_animals/` (prefers `base_models_v1.1/` over `base_models/`) or
  either of those folders; the stitching file comes from the human folder, as in the reference;
- flat files `<net>.safetensors` (fp32/fp16/bf16; e.g. ComfyUI `models/liveportrait/`, or its
  `animal/` sub-folder), stitching keys `retarget_shoulder_module.mlp.0.weight` etc.
  (`<net>.pth` flat files also work). Where both exist, `.safetensors` wins.
`.pth` files are read with `torch.load(weights_only=True)` only: nothing pickled is executed.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn

from .accel.half import inference_setup
from .errors import WeightsError, short_reason
from .models import BASE_NETWORKS, SUPPORTED_DTYPES, LivePortraitModels, network_dtype

log = logging.getLogger("liveportrait")

STITCHING_FILE = "stitching_retargeting_module"  # file stem, in both layouts
LANDMARK_FILE = "landmark.onnx"  # the 203-point landmark model, found next to the weights
SUBDICTS = ("retarget_shoulder", "retarget_mouth", "retarget_eye")
EXTENSIONS = (".safetensors", ".pth")
_MAX_LISTED = 5  # keys shown per category in an error message


@dataclass(frozen=True)
class WeightFiles:
    """Where each file of one weight set is. networks: base network name → file path."""

    source: str
    base_dir: str
    networks: dict[str, str]
    stitching: str | None
    landmark: str | None
    variant: str  # 'human' | 'animal'


# ----------------------------------------------------------------------------------- locating

def _find(folder: str, stem: str) -> str | None:
    for ext in EXTENSIONS:
        p = os.path.join(folder, stem + ext)
        if os.path.isfile(p):
            return p
    return None


def _base_dir_candidates(root: str) -> list[str]:
    subs = ("", "base_models_v1.1", "base_models", os.path.join("liveportrait", "base_models"),
            "liveportrait", os.path.join("pretrained_weights", "liveportrait", "base_models"))
    return [os.path.normpath(os.path.join(root, s)) for s in subs]


def _ancestors(folder: str, levels: int = 2) -> list[str]:
    out = [folder]
    for _ in range(levels):
        parent = os.path.dirname(out[-1])
        if parent == out[-1]:
            break
        out.append(parent)
    return out


def _side_dirs(base_dir: str, variant: str) -> list[str]:
    """Folders searched (in order) for the stitching file and landmark.onnx."""
    anc = _ancestors(base_dir)
    subs = ("", "retargeting_models", os.path.join("liveportrait", "retargeting_models"), "liveportrait")
    dirs: list[str] = []
    for a in anc:
        for s in subs:
            d = os.path.normpath(os.path.join(a, s))
            if d not in dirs:
                dirs.append(d)
    if variant == "animal":
        # Reference: animals use the *human* stitching/retargeting file. Prefer non-animal folders.
        top = anc[-1]
        def is_animal(d: str) -> bool:
            rel = os.path.relpath(d, top)
            return any("animal" in part.lower() for part in rel.split(os.sep) if part != ".")
        dirs = [d for d in dirs if not is_animal(d)] + [d for d in dirs if is_animal(d)]
    return dirs


def _variant(base_dir: str) -> str:
    parts = os.path.normpath(base_dir).split(os.sep)[-3:]
    return "animal" if any("animal" in p.lower() for p in parts) else "human"


def expected_layout_text(folder: str) -> str:
    """Human-readable list of the files load_models looks for under `folder`."""
    flat = ", ".join(f"{n}.safetensors" for n in (*BASE_NETWORKS, STITCHING_FILE))
    ref = ", ".join(f"liveportrait/base_models/{n}.pth" for n in BASE_NETWORKS)
    return (f"Put either the flat files {flat} and landmark.onnx (https://huggingface.co/"
            f"Kijai/LivePortrait_safetensors) directly in {folder}, or the reference tree {ref}, "
            f"liveportrait/retargeting_models/{STITCHING_FILE}.pth and liveportrait/landmark.onnx "
            f"(https://huggingface.co/KwaiVGI/LivePortrait) under it. To fetch them, run: "
            f"python -m liveportrait_core download-weights --weights {folder}")


def locate_weights(path: str) -> WeightFiles:
    """Resolve a user-given folder (str or os.PathLike) to the files of one weight set (see the
    module docstring)."""
    path = os.path.abspath(os.path.expanduser(_weights_path(path, "weights folder")))
    if os.path.isfile(path):  # a weight file was given: use the set in its folder
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        raise WeightsError(f"LivePortrait weights folder {path} does not exist. "
                           f"{expected_layout_text(path)}")
    for base in _base_dir_candidates(path):
        found = {n: _find(base, n) for n in BASE_NETWORKS}
        if any(found.values()):
            break
    else:
        raise WeightsError(f"No LivePortrait weights found in {path}. {expected_layout_text(path)}")
    missing = [n for n, f in found.items() if f is None]
    if missing:
        have = ", ".join(os.path.basename(f) for f in found.values() if f)
        raise WeightsError(
            f"Incomplete LivePortrait weights in {base}: found {have} but not "
            f"{', '.join(missing)} (.safetensors or .pth). All four base networks must be in the "
            f"same folder; download the missing files into {base}.")
    variant = _variant(base)
    side = _side_dirs(base, variant)
    stitching = next((f for d in side if (f := _find(d, STITCHING_FILE))), None)
    landmark = next((p for d in side if os.path.isfile(p := os.path.join(d, LANDMARK_FILE))), None)
    return WeightFiles(path, base, dict(found), stitching, landmark, variant)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ reading

def _weights_path(path, what: str) -> str:
    from .paths import as_path

    try:
        return as_path(path, what)
    except Exception as e:  # InputError → the weights family, same text
        raise WeightsError(f"{e} For the LivePortrait weights give the folder that holds them "
                           "(e.g. models/liveportrait or pretrained_weights).") from None


def _looks_like_pickle_code(text: str) -> bool:
    """torch's weights_only refusal of a real pickle that references Python callables (the only
    case that is a code-execution risk), as opposed to bytes that are no pickle at all."""
    low = text.lower()
    return "unsupported global" in low or "unsupported class" in low or "is blocked" in low


def read_weights_file(path: str) -> dict:
    """Read a `.safetensors` or `.pth` file into a dict on the CPU (tensors keep the file's
    dtype). Unreadable, truncated or unsafe files raise WeightsError naming the file."""
    path = _weights_path(path, "weights file")
    if os.path.isdir(path):
        raise WeightsError(f"Weights file {path} is a folder; give a .safetensors or .pth file.")
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise WeightsError(f"Cannot open weights file {path}: {short_reason(e)}") from None
    redo = f"Delete it and download it again (or copy a complete file to {path})."
    if size == 0:
        raise WeightsError(f"Weights file {path} is empty (0 bytes), probably an interrupted "
                           f"download. {redo}")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            return load_file(path, device="cpu")
        except Exception as e:  # safetensors raises its own error types for bad headers/sizes
            raise WeightsError(f"Weights file {path} ({size} bytes) is truncated or not a valid "
                               f".safetensors file ({short_reason(e)}). {redo}") from None
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):  # legacy (non-zip) torch.save format: retry without mmap
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        text = str(e)
        if _looks_like_pickle_code(text):
            raise WeightsError(
                f"Weights file {path} contains Python objects besides tensors; it is not loaded "
                f"because that could run arbitrary code (only torch.load(weights_only=True) is "
                f"used). Use the original LivePortrait .pth files or .safetensors files.") from None
        raise WeightsError(f"Weights file {path} ({size} bytes) is not a PyTorch checkpoint, or it is "
                           f"corrupted or truncated. {redo}") from None
    if not isinstance(obj, Mapping):
        raise WeightsError(f"Weights file {path} holds a {type(obj).__name__}, not a state dict "
                           f"of named tensors; it is not a LivePortrait weights file.")
    return dict(obj)


def stitching_state_dict(raw: Mapping, path: str = "") -> dict:
    """Normalise a stitching file (either layout) to StitchingRetargeting keys
    `retarget_shoulder.mlp.0.weight`, … . `.pth`: {'retarget_shoulder': {'module.mlp.0.weight': …},
    …} (other top-level entries are ignored, as upstream does); flat `.safetensors`:
    'retarget_shoulder_module.mlp.0.weight'. Every 'module.' is removed (upstream str.replace)."""
    out: dict = {}
    if any(isinstance(raw.get(s), Mapping) for s in SUBDICTS):
        for s in SUBDICTS:
            for k, v in (raw.get(s) or {}).items():
                out[f"{s}.{str(k).replace('module.', '')}"] = v
        return out
    for k, v in raw.items():
        sub = next((s for s in SUBDICTS if str(k).startswith(s)), None)
        if sub is None:
            out[k] = v  # reported as unexpected by the key check
        else:
            rest = str(k)[len(sub):].lstrip("_.").replace("module.", "")
            out[f"{sub}.{rest}"] = v
    return out


# ----------------------------------------------------------------------------------- checking

def _network_class(name: str) -> type[nn.Module]:
    # Imported here so that importing this module stays cheap.
    if name == "appearance_feature_extractor":
        from .networks.appearance_feature_extractor import AppearanceFeatureExtractor as cls
    elif name == "motion_extractor":
        from .networks.motion_extractor import MotionExtractor as cls
    elif name == "warping_module":
        from .networks.warping_module import WarpingModule as cls
    elif name == "spade_generator":
        from .networks.spade_generator import SPADEGenerator as cls
    elif name in ("stitching_retargeting", STITCHING_FILE):
        from .networks.stitching_retargeting import StitchingRetargeting as cls
    else:
        raise KeyError(name)
    return cls


@lru_cache(maxsize=None)
def expected_keys(name: str) -> dict[str, tuple[int, ...]]:
    """key → shape of network `name`'s state dict (built on the meta device: no memory, fast)."""
    cls = _network_class(name)
    try:
        with torch.device("meta"):
            module = cls()
    except Exception:  # a constructor that cannot run on meta: build it for real once
        module = cls()
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _ignorable(key: str) -> bool:
    # BatchNorm's batch counter: only used in training; third-party conversions may drop it.
    return key.endswith("num_batches_tracked")


def _looks_like(keys: set[str], name: str) -> str | None:
    """Name of the other network whose key set this file matches best (> half), if any."""
    best, best_score = None, 0.5
    for other in (*BASE_NETWORKS, "stitching_retargeting"):
        if other == name:
            continue
        exp = {k for k in expected_keys(other) if not _ignorable(k)}
        score = len(keys & exp) / max(len(keys | exp), 1)
        if score > best_score:
            best, best_score = other, score
    return best


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED])
    return shown + (f", … ({len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else "")


def check_state_dict(sd: Mapping, name: str, path: str) -> dict:
    """Strict key/shape check of file contents `sd` against network `name`; returns the dict to
    load (without num_batches_tracked). Raises one WeightsError listing the first
    missing/unexpected keys and shape mismatches."""
    expected = expected_keys(name)
    bad_types = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad_types:
        raise WeightsError(f"Weights file {path} does not fit the {name} network: entries that are "
                           f"not tensors: {_listing(sorted(map(str, bad_types)))}.")
    present = {k for k in sd if not _ignorable(k)}
    wanted = {k for k in expected if not _ignorable(k)}
    missing = [k for k in expected if k in wanted and k not in present]  # network order
    unexpected = sorted(present - wanted)
    shapes = [f"{k} (file {list(sd[k].shape)}, network {list(expected[k])})"
              for k in expected if k in present and tuple(sd[k].shape) != expected[k]]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {_listing(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {_listing(unexpected)}")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatch(es): {_listing(shapes)}")
        other = _looks_like(present, name)
        hint = (f" Its keys look like the {other} weights: the file seems misnamed or misplaced."
                if other else " It is not (a complete copy of) the LivePortrait file for this "
                "network.")
        raise WeightsError(f"Weights file {path} does not fit the {name} network: "
                           f"{'; '.join(parts)}.{hint} Replace it with the right file.")
    return {k: v for k, v in sd.items() if k in wanted}


# ------------------------------------------------------------------------------------ loading

def _empty_network(name: str) -> nn.Module:
    """The network with uninitialised CPU storage (skips the ~2 s of random init that loading
    overwrites anyway). Falls back to a normal build if the network holds tensors that no state
    dict fills (non-persistent buffers, plain tensor attributes)."""
    cls = _network_class(name)
    try:
        with torch.device("meta"):
            module = cls()
    except Exception:
        return cls()
    keys = set(module.state_dict())
    hidden = any(n not in keys for n, _ in module.named_buffers()) or any(
        isinstance(v, torch.Tensor) for m in module.modules() for v in vars(m).values())
    return cls() if hidden else module.to_empty(device="cpu")


def load_network(name: str, path: str) -> nn.Module:
    """Load one network (`BASE_NETWORKS` name or 'stitching_retargeting') from a file (str or
    os.PathLike), strictly checked, float32, on the CPU, in eval mode without gradients."""
    valid = (*BASE_NETWORKS, "stitching_retargeting")
    if not isinstance(name, str) or name not in (*valid, STITCHING_FILE):
        raise WeightsError(f"network {name!r} is not a LivePortrait network; use one of {', '.join(valid)}.")
    raw = read_weights_file(path)
    if name in ("stitching_retargeting", STITCHING_FILE):
        name, raw = "stitching_retargeting", stitching_state_dict(raw, path)
    sd = check_state_dict(raw, name, path)
    for k in expected_keys(name):
        if _ignorable(k):  # always reset the (training-only) batch counters to 0
            sd[k] = torch.zeros((), dtype=torch.int64)
    module = _empty_network(name)
    module.load_state_dict(sd, strict=True)  # copies (and upcasts fp16/bf16 files) into float32
    del raw, sd
    return inference_setup(module)


def load_models(path: str, device: torch.device | str = "cpu",
                dtype: torch.dtype = torch.float32) -> LivePortraitModels:
    """Load the LivePortrait networks from a weights folder (layouts: see the module docstring).

    dtype float32 / float16 / bfloat16 applies to F, W, G; the motion extractor and stitching
    MLPs stay float32 (see models.FLOAT32_NETWORKS). A missing stitching file is allowed
    (stitching_retargeting=None, logged); anything missing, truncated or mismatched among the four
    base networks raises WeightsError naming the file.
    """
    if dtype not in SUPPORTED_DTYPES:
        raise WeightsError(f"dtype must be float32, float16 or bfloat16, got {dtype}.")
    path = _weights_path(path, "weights folder")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise WeightsError(f"device {device!r} is not a torch device (use 'cpu', 'cuda', 'cuda:N' or 'mps').") from None
    files = locate_weights(path)
    t0 = time.perf_counter()
    nets: dict[str, nn.Module | None] = {}
    for name in BASE_NETWORKS:
        nets[name] = load_network(name, files.networks[name]).to(device, network_dtype(name, dtype))
    used = dict(files.networks)
    if files.stitching:
        nets["stitching_retargeting"] = load_network("stitching_retargeting", files.stitching).to(
            device, network_dtype("stitching_retargeting", dtype))
        used["stitching_retargeting"] = files.stitching
    else:
        nets["stitching_retargeting"] = None
        log.warning("LivePortrait: no %s.safetensors/.pth found near %s: stitching and eye/lip "
                    "retargeting are off.", STITCHING_FILE, files.base_dir)
    if files.landmark is None:
        log.info("LivePortrait: no %s found near %s.", LANDMARK_FILE, files.base_dir)
    log.info("LivePortrait: loaded %s weights from %s (%s) in %.1f s; stitching: %s",
             files.variant, files.base_dir, dtype, time.perf_counter() - t0,
             files.stitching or "none")
    return LivePortraitModels(
        appearance_feature_extractor=nets["appearance_feature_extractor"],
        motion_extractor=nets["motion_extractor"],
        warping_module=nets["warping_module"],
        spade_generator=nets["spade_generator"],
        stitching_retargeting=nets["stitching_retargeting"],
        landmark_path=files.landmark, device=device, dtype=dtype, source=files.source,
        files=used, variant=files.variant)
