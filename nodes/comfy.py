"""Everything the pack needs from ComfyUI, in one place (the only module importing ComfyUI).

Model folders (registered at import, cheap: no scanning):
- `liveportrait`: `<models>/liveportrait` plus any `liveportrait:` entries of
  extra_model_paths.yaml (kept first), extensions .safetensors/.pth/.onnx;
- `insightface`: `<models>/insightface` likewise, for the InsightFace detector models.
Devices / memory / progress / cancel wrap `comfy.model_management` and `comfy.utils`.
"""
from __future__ import annotations

import logging
import os
import threading
from typing import Optional

import torch

import comfy.model_management as mm
import comfy.utils
import folder_paths
from comfy_api.latest import ComfyExtension, io, ui  # noqa: F401  (re-exported to the node modules)

log = logging.getLogger(__name__)

LP_FOLDER = "liveportrait"
LP_EXTS = {".safetensors", ".pth", ".onnx"}
INSIGHTFACE_FOLDER = "insightface"
INSIGHTFACE_EXTS = {".onnx"}


def _register_folder(name: str, exts: set) -> None:
    """Add `<models>/<name>` without dropping folders a user set in extra_model_paths.yaml."""
    default = os.path.join(folder_paths.models_dir, name)
    if name in folder_paths.folder_names_and_paths:
        dirs, old_exts = folder_paths.folder_names_and_paths[name]
        if default not in dirs:
            dirs.append(default)
        folder_paths.folder_names_and_paths[name] = (dirs, set(old_exts) | exts)
    else:
        folder_paths.folder_names_and_paths[name] = ([default], set(exts))


def register_model_folders() -> None:
    _register_folder(LP_FOLDER, LP_EXTS)
    _register_folder(INSIGHTFACE_FOLDER, INSIGHTFACE_EXTS)


register_model_folders()


# ---------------------------------------------------------------------------------------- folders
def liveportrait_dirs() -> list[str]:
    return folder_paths.get_folder_paths(LP_FOLDER)


def liveportrait_default_dir() -> str:
    return os.path.join(folder_paths.models_dir, LP_FOLDER)


def liveportrait_files() -> list[str]:
    """Relative paths ('/'-separated) of every weight file in all liveportrait folders."""
    try:
        return folder_paths.get_filename_list(LP_FOLDER)
    except Exception as e:  # a broken extra path must not break node definitions
        log.warning("[LivePortrait] cannot list %s: %s", LP_FOLDER, e)
        return []


def liveportrait_full_path(relative: str) -> Optional[str]:
    return folder_paths.get_full_path(LP_FOLDER, relative)


def insightface_dirs() -> list[str]:
    return folder_paths.get_folder_paths(INSIGHTFACE_FOLDER)


def input_directory() -> str:
    return folder_paths.get_input_directory()


def output_directory() -> str:
    return folder_paths.get_output_directory()


def annotated_input_path(name: str) -> str:
    return folder_paths.get_annotated_filepath(name)


def save_path(prefix: str) -> tuple[str, str, int, str]:
    """(folder, file stem, counter, subfolder) for a new file in the output folder."""
    folder, stem, counter, subfolder, _ = folder_paths.get_save_image_path(prefix, output_directory())
    return folder, stem, counter, subfolder


# ---------------------------------------------------------------------------------------- devices
def compute_device() -> torch.device:
    return mm.get_torch_device()


def intermediate_device() -> torch.device:
    return mm.intermediate_device()


def offload_device() -> torch.device:
    return mm.unet_offload_device()


def choose_dtype(precision: str, device: torch.device) -> torch.dtype:
    """'auto' → fp16 where ComfyUI says fp16 is good on `device`, else bf16 if supported, else fp32."""
    if precision == "fp32":
        return torch.float32
    if precision == "fp16":
        return torch.float16
    if precision == "bf16":
        return torch.bfloat16
    if mm.is_device_cpu(device):
        return torch.float32
    if mm.should_use_fp16(device):
        return torch.float16
    if mm.should_use_bf16(device):
        return torch.bfloat16
    return torch.float32


# Held while LivePortrait networks move between devices and while a live preview renders
# (nodes/routes.py), so a preview never runs on half-moved weights.
MODELS_LOCK = threading.RLock()


def model_patcher(module: torch.nn.Module, size: int = 0):
    """A ComfyUI ModelPatcher for one network: ComfyUI's memory manager then moves it between the
    compute and the offload device, counts it, and unloads it on "Unload models" / `POST /free`."""
    import comfy.model_patcher

    return comfy.model_patcher.CoreModelPatcher(module, load_device=compute_device(),
                                                offload_device=offload_device(), size=int(size))


def load_patchers(patchers: list, memory_required: int) -> None:
    """Load `patchers` fully on the compute device, keeping `memory_required` bytes free beside
    them for activations (ComfyUI unloads other models as needed)."""
    with MODELS_LOCK:  # never while a live preview renders with these networks
        mm.load_models_gpu(list(patchers), memory_required=int(memory_required), force_full_load=True)


def raise_unless_out_of_memory(e: BaseException) -> None:
    """Re-raise `e` unless it is an out-of-memory error of the compute device."""
    mm.raise_non_oom(e)


def soft_empty_cache() -> None:
    mm.soft_empty_cache()


def free_bytes(device: torch.device) -> int:
    return int(mm.get_free_memory(device))


# ---------------------------------------------------------------------------------------- progress
def check_interrupt() -> None:
    """Raise ComfyUI's InterruptProcessingException when the user pressed Cancel (the core's
    cancel contract: pass it as `cancel=`, liveportrait_core/progress.py)."""
    mm.throw_exception_if_processing_interrupted()


class Progress:
    """ComfyUI progress bar on a node, with optional live preview of an IMAGE batch."""

    def __init__(self, total: int, node_id: Optional[str] = None):
        self.bar = comfy.utils.ProgressBar(max(int(total), 1), node_id=node_id)
        self.done = 0

    def update(self, n: int, preview: Optional[torch.Tensor] = None) -> None:
        self.done += int(n)
        check_interrupt()  # throttled updates skip the hook's own check
        self.bar.update_absolute(self.done, preview=_preview(preview) if preview is not None else None)

    def __call__(self, done: int, total: Optional[int] = None) -> None:
        """The core's progress contract (liveportrait_core/progress.py): `done` units so far."""
        self.update(int(done) - self.done)


def _preview(image: torch.Tensor):
    """("JPEG", PIL.Image, max size) of the last frame of an IMAGE [B,H,W,3], as ComfyUI expects."""
    try:
        from PIL import Image
    except ImportError:  # ComfyUI always has pillow; be quiet elsewhere
        return None
    frame = image[-1, ..., :3].detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()
    return ("JPEG", Image.fromarray(frame), 512)


def onnx_device() -> str:
    """Device string for onnxruntime sessions: 'cuda:N' when ComfyUI computes on CUDA, else 'cpu'."""
    d = compute_device()
    return f"cuda:{d.index or 0}" if d.type == "cuda" else "cpu"


# ---------------------------------------------------------------------------------------- server
def prompt_server():
    """ComfyUI's running PromptServer, or None outside a server (tests, CLI)."""
    try:
        from server import PromptServer
    except ImportError:
        return None
    return getattr(PromptServer, "instance", None)


def add_server_routes(register) -> bool:
    """Call `register(routes, aiohttp.web)` with ComfyUI's route table (before the server starts;
    ComfyUI also serves every route under /api). False when there is no server."""
    ps = prompt_server()
    if ps is None or getattr(ps, "routes", None) is None:
        return False
    from aiohttp import web

    register(ps.routes, web)
    return True


def on_free(callback) -> bool:
    """Call `callback()` after every successful POST /free (or /api/free): ComfyUI's "unload models"
    / "free model and node cache". server.py only sets flags there that the prompt worker acts on
    later (unload_all_models); a middleware sees the request itself, without patching ComfyUI."""
    ps = prompt_server()
    if ps is None or getattr(ps, "app", None) is None:
        return False
    from aiohttp import web

    @web.middleware
    async def liveportrait_free_middleware(request, handler):
        response = await handler(request)
        if request.method == "POST" and request.path in ("/free", "/api/free") and response.status < 400:
            try:
                callback()
            except Exception as e:  # never break /free itself
                log.warning("[LivePortrait] freeing the preview cache failed: %s", e)
        return response

    ps.app.middlewares.append(liveportrait_free_middleware)
    return True


def input_files() -> list[str]:
    """Files at the top of ComfyUI's input folder (what LoadImage lists), names only."""
    root = input_directory()
    try:
        return sorted(f for f in os.listdir(root) if os.path.isfile(os.path.join(root, f)))
    except OSError:
        return []
