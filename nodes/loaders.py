"""Loader nodes: LivePortrait weights (LP_MODELS) and face detectors (LP_FACE_DETECTOR)."""
from __future__ import annotations

import logging
import os
import weakref
from typing import Optional

import torch

from . import comfy as C
from .comfy import io
from .types import CATEGORY, LPFaceDetector, LPModels

log = logging.getLogger(__name__)

AUTO = "auto"
PRECISIONS = ["auto", "fp32", "fp16", "bf16"]
DOWNLOAD = {"Kijai/LivePortrait_safetensors": "safetensors", "KwaiVGI/LivePortrait": "pth", "never": None}
_NETWORK_FILES = tuple(f"appearance_feature_extractor{e}" for e in (".safetensors", ".pth"))

# Loaded weights by (folder, files' mtimes, dtype). Weak: ComfyUI's output cache of the loader node
# holds the models, so "Unload models" / POST /free (which drop that cache) free them; while they
# are alive, two loader nodes of the same weights share one copy. Never filled at import.
_MODELS_CACHE: "weakref.WeakValueDictionary" = weakref.WeakValueDictionary()


def weight_sets() -> dict[str, str]:
    """Weight sets found in the liveportrait folders: label (folder relative to its models
    folder, '.' for the folder itself) → absolute folder holding the four base networks."""
    sets: dict[str, str] = {}
    for rel in C.liveportrait_files():
        if not rel.endswith(_NETWORK_FILES) or os.path.basename(rel) not in _NETWORK_FILES:
            continue
        label = os.path.dirname(rel) or "."
        full = C.liveportrait_full_path(rel)
        if full and label not in sets:
            sets[label] = os.path.dirname(full)
    return dict(sorted(sets.items(), key=lambda kv: ("animal" in kv[0].lower(), kv[0] != ".", kv[0])))


def _signature(folder: str) -> tuple:
    """(file, mtime) of every weight file load_models would read from `folder`."""
    from ..liveportrait_core.weights import locate_weights

    files = locate_weights(folder)
    paths = [*files.networks.values(), files.stitching, files.landmark]
    return tuple((p, os.path.getmtime(p)) for p in paths if p)


def _missing_weights_message(choice: str) -> str:
    from ..liveportrait_core.weights import expected_layout_text

    dirs = C.liveportrait_dirs()
    where = " or ".join(dirs)
    what = "No LivePortrait weights were found" if choice == AUTO else f"The weights '{choice}' were not found"
    return (f"LoadLivePortraitModels: {what} in {where}. {expected_layout_text(C.liveportrait_default_dir())} "
            "Or set 'download_from_hub' to fetch them, then press Refresh.")


def resolve_weights(choice: str, download: str, progress: Optional[C.Progress] = None) -> str:
    """Folder of the chosen weight set; downloads into <models>/liveportrait when allowed."""
    from ..liveportrait_core.errors import WeightsError

    sets = weight_sets()
    if choice != AUTO:
        if choice in sets:
            return sets[choice]
        raise WeightsError(_missing_weights_message(choice))
    humans = [f for label, f in sets.items() if "animal" not in label.lower()]
    if humans or sets:
        return (humans or list(sets.values()))[0]
    layout = DOWNLOAD.get(download)
    if layout is None:
        raise WeightsError(_missing_weights_message(choice))
    from ..liveportrait_core.hub import download_models

    def cb(done: int, total: int, name: str) -> None:
        if progress is not None:
            progress.bar.update_absolute(done, total)
        C.check_interrupt()

    folder = download_models(C.liveportrait_default_dir(), layout=layout, progress=True, callback=cb)
    sets = weight_sets()
    return next(iter(sets.values()), folder)


def load_cached(folder: str, dtype: torch.dtype):
    """LivePortraitModels for (folder, dtype), loaded on the offload device; ComfyUI's memory
    manager moves the networks to the compute device when a node needs them (nodes/memory.py)."""
    from ..liveportrait_core.weights import load_models

    key = (os.path.realpath(folder), _signature(folder), str(dtype))
    models = _MODELS_CACHE.get(key)
    if models is None:
        models = load_models(folder, device=C.offload_device(), dtype=dtype)
        _MODELS_CACHE[key] = models
        weakref.finalize(models, _return_memory_soon)
    return models


def _return_memory_soon() -> None:
    """When ComfyUI dropped the weights: return the freed heap to the OS, a moment later (the
    finalizer runs before the networks' own tensors are freed)."""
    import threading

    from ..liveportrait_core.accel.heap import return_freed_memory

    for delay in (0.5, 3.0):
        t = threading.Timer(delay, return_freed_memory)
        t.daemon = True
        t.start()


class LoadLivePortraitModels(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LoadLivePortraitModels",
            display_name="Load LivePortrait Models",
            category=CATEGORY,
            description=(
                "Loads the five LivePortrait networks and the 203-point landmark model from "
                "models/liveportrait (or a 'liveportrait:' entry of extra_model_paths.yaml). Accepts "
                "the reference .pth tree (liveportrait/base_models/…) and flat .safetensors files. "
                "ComfyUI's model manager moves them to its device when a node needs them and frees them on "
                "'Unload models'."),
            inputs=[
                io.Combo.Input("weights", options=[AUTO, *weight_sets().keys()], default=AUTO,
                               tooltip="Which weight set in models/liveportrait: 'auto' takes the first "
                                       "human set found (and downloads one if there is none and "
                                       "download_from_hub allows it); otherwise the folder holding the networks."),
                io.Combo.Input("precision", options=PRECISIONS, default="auto",
                               tooltip="Weights dtype. auto: fp32 on CPU; fp16 (or bf16) where ComfyUI "
                                       "reports the device supports it. The motion extractor and the "
                                       "stitching MLPs always stay fp32."),
                io.Combo.Input("download_from_hub", options=list(DOWNLOAD), default="Kijai/LivePortrait_safetensors",
                               tooltip="When no weights are found: Hugging Face repo to download them from into "
                                       "models/liveportrait (progress on the node), or 'never'. Offline, the "
                                       "error lists the files to put there by hand."),
            ],
            outputs=[LPModels.Output(display_name="models",
                                     tooltip="The LivePortrait networks (LP_MODELS) for the other LivePortrait nodes.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def fingerprint_inputs(cls, weights: str = AUTO, **_):
        """Re-run when the chosen weight files change on disk (never downloads)."""
        try:
            sets = weight_sets()
            folder = sets.get(weights) if weights != AUTO else next(iter(sets.values()), None)
            return (folder, _signature(folder)) if folder else "no weights"
        except Exception:
            return "no weights"

    @classmethod
    def execute(cls, weights: str, precision: str, download_from_hub: str) -> io.NodeOutput:
        device = C.compute_device()
        folder = resolve_weights(weights, download_from_hub, C.Progress(1, cls.hidden.unique_id))
        models = load_cached(folder, C.choose_dtype(precision, device))
        return io.NodeOutput(models)


DETECTOR_BACKENDS = ["offline", "insightface", "yunet"]
_BACKEND_HELP = (
    "offline: no download, works offline — dlib's HOG detector when dlib is installed, else OpenCV's "
    "bundled Haar cascade (coarser boxes; BSD/Apache licences, free for any use). "
    "insightface: buffalo_l det_10g + 2d106det, the reference's choice and the best boxes, from "
    "models/insightface/models/buffalo_l or models/insightface/buffalo_l — the InsightFace models are "
    "licensed for NON-COMMERCIAL research use only. "
    "yunet: OpenCV Zoo's YuNet ONNX detector (MIT licence, commercial use fine), downloaded into "
    "models/liveportrait on first use."
)
_DEFAULT_THRESHOLDS = {"insightface": 0.15, "yunet": 0.6, "offline": 0.2}


def _buffalo_l_folder() -> str:
    """First insightface folder holding buffalo_l's det_10g.onnx (the layouts other packs use)."""
    from ..liveportrait_core.errors import WeightsError

    tried = []
    for d in C.insightface_dirs():
        for sub in (os.path.join("models", "buffalo_l"), "buffalo_l", ""):
            folder = os.path.normpath(os.path.join(d, sub))
            tried.append(folder)
            if os.path.isfile(os.path.join(folder, "det_10g.onnx")):
                return folder
    raise WeightsError(
        "LivePortraitLoadFaceDetector: InsightFace buffalo_l (det_10g.onnx, 2d106det.onnx) not found in "
        + "; ".join(tried) + ". Put the two files in models/insightface/models/buffalo_l/, or choose the "
        "'offline' or 'yunet' backend. The InsightFace models are for non-commercial use only.")


def _yunet_folder() -> str:
    for d in C.liveportrait_dirs():
        for sub in ("", "yunet", "facedetection"):
            if os.path.isdir(os.path.join(d, sub)) and any(
                    f.startswith("face_detection_yunet") and f.endswith(".onnx") for f in os.listdir(os.path.join(d, sub))):
                return os.path.join(d, sub)
    return C.liveportrait_default_dir()


class LivePortraitLoadFaceDetector(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LivePortraitLoadFaceDetector",
            display_name="LivePortrait Face Detector",
            category=CATEGORY,
            description=(
                "Chooses the face detector LivePortrait Crop Face uses to find faces; the 203-point "
                "landmark model of the LivePortrait weights then refines every face. Mind the "
                "licence of each backend (see the backend tooltip)."),
            inputs=[
                io.Combo.Input("backend", options=DETECTOR_BACKENDS, default="offline", tooltip=_BACKEND_HELP),
                io.Float.Input("threshold", default=-1.0, min=-1.0, max=1.0, step=0.01,
                               tooltip="Detection score threshold; lower finds more (smaller, partly hidden) faces. "
                                       "-1 = the backend's default (insightface 0.15 as the reference, yunet 0.6, "
                                       "dlib 0.2; OpenCV's cascade has none)."),
                io.Int.Input("max_side", default=640, min=128, max=4096, step=32,
                             tooltip="offline/yunet: frames are scaled to at most this side for detection (speed); "
                                     "boxes are mapped back to full resolution. insightface always uses 512."),
            ],
            outputs=[LPFaceDetector.Output(display_name="detector",
                                           tooltip="The face detector (LP_FACE_DETECTOR) for LivePortrait Crop Face.")],
        )

    @classmethod
    def execute(cls, backend: str, threshold: float, max_side: int) -> io.NodeOutput:
        from ..liveportrait_core.face.detectors import make_detector

        thresh = _DEFAULT_THRESHOLDS.get(backend, 0.5) if threshold < 0 else threshold
        if backend == "insightface":
            det = make_detector("insightface", _buffalo_l_folder(), det_thresh=thresh, device=C.onnx_device())
        elif backend == "yunet":
            det = make_detector("yunet", _yunet_folder(), det_thresh=thresh, max_side=max_side)
        else:
            from ..liveportrait_core.face.detectors.dlib_hog import dlib_available

            opts = {"det_thresh": thresh} if dlib_available() else {}
            det = make_detector("offline", max_side=max_side, **opts)
        return io.NodeOutput(det)
