"""ONNX Runtime sessions for the face models: CUDA when available, CPU otherwise."""
from __future__ import annotations

import logging
import os
from typing import Optional

from ...errors import WeightsError

log = logging.getLogger("liveportrait")


def onnx_session(path: str, what: str, device: Optional[str] = None, cpu_threads: int = 0):
    """Open `path` with onnxruntime; logs which provider runs it.

    device: None/'auto' → CUDA if onnxruntime offers it, else CPU; 'cpu' forces CPU;
    'cuda' or 'cuda:N' asks for that GPU (CPU fallback when unavailable).
    cpu_threads: intra-op threads on CPU (0 = onnxruntime default).
    """
    if not os.path.isfile(path):
        raise WeightsError(f"{what}: model file not found: {path}")
    try:
        import onnxruntime as ort
    except ImportError as e:  # pragma: no cover - onnxruntime is a requirement
        raise WeightsError(f"{what} needs onnxruntime: pip install onnxruntime "
                           f"(or onnxruntime-gpu)") from e
    available = ort.get_available_providers()
    providers: list = ["CPUExecutionProvider"]
    dev = (device or "auto").lower()
    if dev != "cpu" and "CUDAExecutionProvider" in available:
        gpu = int(dev.split(":")[1]) if dev.startswith("cuda:") else 0
        providers = [("CUDAExecutionProvider", {"device_id": gpu}), "CPUExecutionProvider"]
    opts = ort.SessionOptions()
    if cpu_threads > 0:
        opts.intra_op_num_threads = int(cpu_threads)
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(path, sess_options=opts, providers=providers)
    except Exception as e:  # corrupt / truncated / not an ONNX file
        raise WeightsError(f"{what}: cannot load {path} ({type(e).__name__}: {e}). "
                           f"Delete the file and fetch it again.") from e
    used = sess.get_providers()[0]
    log.info("%s: onnxruntime on %s (%s)", what,
             "CUDA" if used == "CUDAExecutionProvider" else "CPU", os.path.basename(path))
    return sess
