"""Download LivePortrait weights from the Hugging Face hub (only when asked; never at import).

Two sources:
- layout 'pth': the reference repo `KwaiVGI/LivePortrait` (its files are the `pretrained_weights/`
  tree: `liveportrait/base_models/<net>.pth`, …); they land under `folder` with the same paths.
- layout 'safetensors': the flat conversion `Kijai/LivePortrait_safetensors` (`<net>.safetensors`,
  `landmark.onnx`; animal weights in its `animal/` folder); they land directly in `folder`.
Either result loads with `weights.load_models(folder)` (animal: `folder/liveportrait_animals` or
`folder/animal`).
"""
from __future__ import annotations

import contextlib
import logging
import os
from typing import Callable, Iterator

from .errors import WeightsError, short_reason
from .models import BASE_NETWORKS
from .weights import LANDMARK_FILE, STITCHING_FILE, locate_weights

log = logging.getLogger("liveportrait")

REPOS = {"pth": "KwaiVGI/LivePortrait", "safetensors": "Kijai/LivePortrait_safetensors"}
LAYOUTS = tuple(REPOS)


def repo_files(layout: str = "safetensors", animal: bool = False) -> list[str]:
    """Paths (inside the hub repo, and relative to the target folder) of one weight set."""
    if layout == "pth":
        base = "liveportrait_animals/base_models_v1.1" if animal else "liveportrait/base_models"
        return [f"{base}/{n}.pth" for n in BASE_NETWORKS] + [
            f"liveportrait/retargeting_models/{STITCHING_FILE}.pth", f"liveportrait/{LANDMARK_FILE}"]
    if layout == "safetensors":
        human = [f"{n}.safetensors" for n in (*BASE_NETWORKS, STITCHING_FILE)] + [LANDMARK_FILE]
        # Animals use the human stitching file (as the reference does), so the human set is
        # fetched too: load_models(folder/animal) finds it one folder up.
        return [f"animal/{n}.safetensors" for n in BASE_NETWORKS] + human if animal else human
    raise WeightsError(f"layout must be one of {LAYOUTS}, got {layout!r}.")


def _complete(folder: str, animal: bool) -> bool:
    """True when load_models would find a full set (4 networks, stitching, landmark) in folder."""
    for sub in (("liveportrait_animals", "animal") if animal else ("",)):
        try:
            files = locate_weights(os.path.join(folder, sub))
        except WeightsError:
            continue
        if files.stitching and files.landmark and (files.variant == "animal") == animal:
            return True
    return False


def missing_files(folder: str, layout: str = "auto", animal: bool = False) -> list[str]:
    """Files (relative to `folder`) that download_models(folder, layout) would fetch; [] when
    `folder` already holds a complete weight set in any accepted layout.

    layout 'auto' picks the layout with the most files already present (ties: 'safetensors')."""
    if _complete(folder, animal):
        return []
    layouts = LAYOUTS if layout == "auto" else (layout,)
    best: list[str] | None = None
    for lay in sorted(layouts, key=lambda lay: lay != "safetensors"):
        wanted = repo_files(lay, animal)
        miss = [f for f in wanted if not os.path.isfile(os.path.join(folder, f))]
        if best is None or len(miss) < len(best):
            best = miss
    return best or []


@contextlib.contextmanager
def quiet_hub() -> Iterator[None]:
    """Silence huggingface_hub's own log lines for the duration: offline, it logs every retry
    of every request (twice when the root logger prints too), 20+ lines before failing. The
    caller logs one progress line before and reports the final outcome once. (Its loggers
    inherit the level of the `huggingface_hub` logger, whatever handlers it adds meanwhile.)"""
    try:  # its logging module configures (handler + level) when first imported: do it first
        import huggingface_hub.utils.logging  # noqa: F401
    except ImportError:
        pass
    hub_log = logging.getLogger("huggingface_hub")
    old_level = hub_log.level
    hub_log.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        hub_log.setLevel(old_level)


def _manual_instructions(repo: str, files: list[str], folder: str) -> str:
    lines = [f"  https://huggingface.co/{repo}/resolve/main/{f}  ->  {os.path.join(folder, f)}"
             for f in files]
    return (f"Download these files by hand and put them in {folder} (keep the sub-folders):\n"
            + "\n".join(lines))


def download_models(folder: str, layout: str = "safetensors", progress: bool = True,
                    animal: bool = False, callback: Callable[[int, int, str], None] | None = None,
                    ) -> str:
    """Fetch the missing files of one weight set into `folder`; returns `folder`.

    progress: show huggingface_hub's per-file progress bars. callback(done, total, filename) is
    called before each file and once at the end (e.g. for a ComfyUI progress bar).
    Offline, huggingface_hub missing, or any download failure → WeightsError listing the exact
    files still missing, their URLs and where to put them. huggingface_hub's retry messages
    are replaced by one line (see `quiet_hub`).
    """
    from .weights import _weights_path

    folder = _weights_path(folder, "weights folder")
    if layout not in REPOS:
        raise WeightsError(f"layout must be one of {LAYOUTS}, got {layout!r}.")
    repo = REPOS[layout]
    folder = os.path.abspath(os.path.expanduser(str(folder)))
    todo = missing_files(folder, layout, animal)
    if not todo:
        return folder
    try:
        import huggingface_hub  # lazily: optional dependency, and no network work at import
        from huggingface_hub.utils import (are_progress_bars_disabled, disable_progress_bars,
                                           enable_progress_bars)
    except ImportError:
        raise WeightsError("LivePortrait weights are missing and huggingface_hub is not installed "
                           "(pip install huggingface_hub). "
                           + _manual_instructions(repo, todo, folder)) from None
    was_disabled = are_progress_bars_disabled()
    if not progress:
        disable_progress_bars()
    done: list[str] = []
    try:
        os.makedirs(folder, exist_ok=True)
        # the one progress line (huggingface_hub's per-file bars follow when online)
        log.warning("LivePortrait: downloading %d file(s) from huggingface.co/%s into %s …",
                    len(todo), repo, folder)
        with quiet_hub():
            for i, name in enumerate(todo):
                if callback is not None:
                    callback(i, len(todo), name)
                log.info("LivePortrait: downloading %s from %s into %s", name, repo, folder)
                huggingface_hub.hf_hub_download(repo_id=repo, filename=name, local_dir=folder)
                done.append(name)
        if callback is not None:
            callback(len(todo), len(todo), "")
    except Exception as e:  # offline, HTTP error, disk full, …: one actionable message
        left = [f for f in todo if f not in done]
        raise WeightsError(f"Could not download LivePortrait weights from huggingface.co/{repo} "
                           f"({type(e).__name__}: {short_reason(e)}). "
                           + _manual_instructions(repo, left, folder)) from None
    finally:
        if not progress and not was_disabled:
            enable_progress_bars()
    return folder
