"""Stand-in for ComfyUI's `folder_paths` (ComfyUI 0.33's folder_paths.py).

`reset(base_dir)` points every folder at a fresh ComfyUI-like tree (tests call it per test).
"""
from __future__ import annotations

import os
import time

supported_pt_extensions = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}

base_path = ""
models_dir = ""
output_directory = ""
temp_directory = ""
input_directory = ""
user_directory = ""
folder_names_and_paths: dict[str, tuple[list[str], set[str]]] = {}
filename_list_cache: dict = {}


def reset(base_dir: str) -> None:
    """A fresh ComfyUI layout under `base_dir` with the built-in model folders."""
    global base_path, models_dir, output_directory, temp_directory, input_directory, user_directory
    base_path = os.path.abspath(base_dir)
    models_dir = os.path.join(base_path, "models")
    output_directory = os.path.join(base_path, "output")
    temp_directory = os.path.join(base_path, "temp")
    input_directory = os.path.join(base_path, "input")
    user_directory = os.path.join(base_path, "user")
    for d in (models_dir, output_directory, temp_directory, input_directory, user_directory):
        os.makedirs(d, exist_ok=True)
    folder_names_and_paths.clear()
    filename_list_cache.clear()
    for name in ("checkpoints", "loras", "vae", "upscale_models", "custom_nodes"):
        folder_names_and_paths[name] = ([os.path.join(models_dir, name)], set(supported_pt_extensions))
    folder_names_and_paths["custom_nodes"] = ([os.path.join(base_path, "custom_nodes")], set())


def get_folder_paths(folder_name: str) -> list[str]:
    return folder_names_and_paths[folder_name][0][:]


def add_model_folder_path(folder_name: str, full_folder_path: str, is_default: bool = False) -> None:
    if folder_name in folder_names_and_paths:
        paths, exts = folder_names_and_paths[folder_name]
        if full_folder_path in paths:
            if is_default and paths[0] != full_folder_path:
                paths.remove(full_folder_path)
                paths.insert(0, full_folder_path)
        elif is_default:
            paths.insert(0, full_folder_path)
        else:
            paths.append(full_folder_path)
    else:
        # a new name gets an EMPTY extension set, which means "every file"
        folder_names_and_paths[folder_name] = ([full_folder_path], set())


def filter_files_extensions(files, extensions):
    return sorted(f for f in files if len(extensions) == 0 or os.path.splitext(f)[-1].lower() in extensions)


def recursive_search(directory: str):
    if not os.path.isdir(directory):
        return [], {}
    result, dirs = [], {}
    for root, subdirs, files in os.walk(directory, followlinks=True):
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        for f in files:
            result.append(os.path.relpath(os.path.join(root, f), directory).replace(os.sep, "/"))
        dirs[root] = os.path.getmtime(root)
    return result, dirs


def get_filename_list(folder_name: str) -> list[str]:
    output = []
    paths, exts = folder_names_and_paths[folder_name]
    for x in paths:
        files, _ = recursive_search(x)
        output.extend(filter_files_extensions(files, exts))
    return sorted(set(output))


def get_full_path(folder_name: str, filename: str):
    if folder_name not in folder_names_and_paths:
        return None
    filename = os.path.relpath(os.path.join("/", filename), "/")
    for x in folder_names_and_paths[folder_name][0]:
        full_path = os.path.join(x, filename)
        if os.path.isfile(full_path):
            return full_path
    return None


def get_full_path_or_raise(folder_name: str, filename: str) -> str:
    full_path = get_full_path(folder_name, filename)
    if full_path is None:
        raise FileNotFoundError(f"Model in folder '{folder_name}' with filename '{filename}' not found.")
    return full_path


def get_input_directory():
    return input_directory


def get_output_directory():
    return output_directory


def get_temp_directory():
    return temp_directory


def get_user_directory():
    return user_directory


def get_directory_by_type(type_name: str):
    return {"output": output_directory, "temp": temp_directory, "input": input_directory}.get(type_name)


def annotated_filepath(name: str):
    for suffix, d in ((" [output]", output_directory), (" [input]", input_directory), (" [temp]", temp_directory)):
        if name.endswith(suffix):
            return name[: -len(suffix)], d
    return name, None


def get_annotated_filepath(name: str, default_dir=None) -> str:
    name, base_dir = annotated_filepath(name)
    if base_dir is None:
        base_dir = default_dir if default_dir is not None else input_directory
    filepath = os.path.abspath(os.path.join(base_dir, name))
    # as the real one: names leaving the folder are refused
    if os.path.commonpath((os.path.abspath(base_dir), filepath)) != os.path.abspath(base_dir):
        raise ValueError("Invalid file path: {!r}".format(name))
    return filepath


def exists_annotated_filepath(name) -> bool:
    return os.path.exists(get_annotated_filepath(name))


def get_save_image_path(filename_prefix: str, output_dir: str, image_width=0, image_height=0):
    filename_prefix = filename_prefix.replace("%width%", str(image_width)).replace("%height%", str(image_height))
    subfolder = os.path.dirname(os.path.normpath(filename_prefix))
    filename = os.path.basename(os.path.normpath(filename_prefix))
    full_output_folder = os.path.join(output_dir, subfolder)
    if os.path.commonpath((output_dir, os.path.abspath(full_output_folder))) != output_dir:
        raise Exception("**** ERROR: Saving image outside the output folder is not allowed.")
    os.makedirs(full_output_folder, exist_ok=True)
    counter = 1
    for f in os.listdir(full_output_folder):
        stem = f[: len(filename) + 1]
        if stem == filename + "_":
            digits = f[len(filename) + 1:].split("_")[0]
            if digits.isdigit():
                counter = max(counter, int(digits) + 1)
    return full_output_folder, filename, counter, subfolder, filename_prefix


reset(os.path.join(os.environ.get("TMPDIR", "/tmp"), f"comfy_stub_{os.getpid()}_{int(time.time())}"))
