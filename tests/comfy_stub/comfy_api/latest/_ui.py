"""Stand-in for `comfy_api/latest/_ui.py`: UI outputs saved into the temp/output folders."""
from __future__ import annotations

import os
import random

import numpy as np

import folder_paths
from ._io import FolderType


class SavedResult(dict):
    def __init__(self, filename: str, subfolder: str, type: FolderType):
        super().__init__(filename=filename, subfolder=subfolder,
                         type=type.value if isinstance(type, FolderType) else type)


class _UIOutput:
    def as_dict(self) -> dict:
        raise NotImplementedError


def _save_temp_images(images, prefix="ComfyUI_temp"):
    from PIL import Image as PILImage
    out_dir = folder_paths.get_temp_directory()
    prefix = prefix + "_" + "".join(random.choice("abcdefghijklmnopqrstupvxyz") for _ in range(5))
    full, filename, counter, subfolder, _ = folder_paths.get_save_image_path(prefix, out_dir)
    results = []
    for i, img in enumerate(images):
        arr = np.clip(255.0 * img.detach().cpu().float().numpy(), 0, 255).astype(np.uint8)
        name = f"{filename}_{counter + i:05}_.png"
        PILImage.fromarray(arr).save(os.path.join(full, name))
        results.append(SavedResult(name, subfolder, FolderType.temp))
    return results


class PreviewImage(_UIOutput):
    def __init__(self, image, animated: bool = False, cls=None, **kwargs):
        if image.ndim != 4:
            raise ValueError(f"PreviewImage expects an IMAGE [B,H,W,C], got {tuple(image.shape)}")
        self.values = _save_temp_images(image)
        self.animated = animated

    def as_dict(self):
        return {"images": self.values, "animated": (self.animated,)}


class PreviewMask(PreviewImage):
    def __init__(self, mask, animated: bool = False, cls=None, **kwargs):
        m = mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1])).movedim(1, -1).expand(-1, -1, -1, 3)
        super().__init__(m, animated, cls, **kwargs)


class PreviewText(_UIOutput):
    def __init__(self, value: str, **kwargs):
        self.value = value

    def as_dict(self):
        return {"text": (self.value,)}


class PreviewVideo(_UIOutput):
    def __init__(self, values, **kwargs):
        self.values = values

    def as_dict(self):
        return {"images": self.values, "animated": (True,)}
