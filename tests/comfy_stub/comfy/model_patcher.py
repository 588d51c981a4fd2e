"""Stand-in for `comfy.model_patcher`: wraps an nn.Module with its load/offload devices."""
from __future__ import annotations

import torch


def module_size(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


class ModelPatcher:
    def __init__(self, model, load_device, offload_device, size: int = 0, weight_inplace_update=False):
        self.model = model
        self.load_device = torch.device(load_device)
        self.offload_device = torch.device(offload_device)
        self.size = size or (module_size(model) if isinstance(model, torch.nn.Module) else 0)
        self.loaded = False

    def model_size(self) -> int:
        return self.size

    def load(self):  # called by model_management.load_models_gpu
        if isinstance(self.model, torch.nn.Module):
            self.model.to(self.load_device)
        self.loaded = True

    def unpatch_model(self, device_to=None, unpatch_weights=True):
        if isinstance(self.model, torch.nn.Module):
            self.model.to(device_to or self.offload_device)
        self.loaded = False


CoreModelPatcher = ModelPatcher
