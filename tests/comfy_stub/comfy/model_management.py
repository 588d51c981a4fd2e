"""Stand-in for `comfy.model_management` (ComfyUI 0.33's comfy/model_management.py): a CPU-only ComfyUI.

Tests can inspect `calls` (free_memory / load_models_gpu requests) and trigger Cancel with
`interrupt_current_processing()`.
"""
from __future__ import annotations

import torch

calls: list = []
_interrupted = False
FREE_MEMORY = 8 * 1024 ** 3


class InterruptProcessingException(BaseException):
    """Raised when the user pressed Cancel. A BaseException: never catch it."""


OOM_EXCEPTION = torch.cuda.OutOfMemoryError


def get_torch_device():
    return torch.device("cpu")


def intermediate_device():
    return torch.device("cpu")


def intermediate_dtype():
    return torch.float32


def unet_offload_device():
    return torch.device("cpu")


def text_encoder_device():
    return torch.device("cpu")


def text_encoder_offload_device():
    return torch.device("cpu")


def vae_device():
    return torch.device("cpu")


def is_device_cpu(device) -> bool:
    return torch.device(device).type == "cpu"


def should_use_fp16(device=None, model_params=0, prioritize_performance=True, manual_cast=False) -> bool:
    return device is not None and not is_device_cpu(device)


def should_use_bf16(device=None, model_params=0, prioritize_performance=True, manual_cast=False) -> bool:
    return False


def get_free_memory(dev=None, torch_free_too=False):
    return (FREE_MEMORY, FREE_MEMORY) if torch_free_too else FREE_MEMORY


def free_memory(memory_required, device, keep_loaded=()):
    calls.append(("free_memory", int(memory_required), str(device)))


def load_models_gpu(models, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                    force_full_load=False):
    calls.append(("load_models_gpu", len(models), int(memory_required)))
    for m in models:
        m.load()


def load_model_gpu(model):
    return load_models_gpu([model])


def soft_empty_cache(force=False):
    calls.append(("soft_empty_cache",))


def interrupt_current_processing(value=True):
    global _interrupted
    _interrupted = value


def processing_interrupted() -> bool:
    return _interrupted


def throw_exception_if_processing_interrupted():
    global _interrupted
    if _interrupted:
        _interrupted = False
        raise InterruptProcessingException()


def raise_non_oom(e):
    if not isinstance(e, OOM_EXCEPTION):
        raise e
