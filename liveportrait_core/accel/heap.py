"""Scoped glibc heap tuning for CPU rendering: keep freed large blocks for reuse.

A frame of W+G allocates and frees about a hundred tensors of 10-70 MB. With glibc's defaults
every block above its mmap threshold (≤ 32 MiB) is a fresh `mmap` that the kernel zero-fills
page by page and unmaps again on free, so the same memory is faulted in over and over (see
benchmarks/animate.py for the effect on a frame). Inside `keep_freed_memory()` large blocks come
from the heap and freed ones stay there for the next layer.

Putting things back. glibc has no getter for these settings, so the values in force before the
scope are known from what set them:

* the process's environment at start (glibc reads it once, before any Python code runs):
  `MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`, `MALLOC_TOP_PAD_`, and the same three in
  `GLIBC_TUNABLES` (`glibc.malloc.mmap_threshold=…`, which wins over the plain variables);
  read from `/proc/self/environ` (the start environment), else `os.environ`;
* `set_heap_option()` — code in this process that changes a setting through this module;
* otherwise glibc's own dynamic policy. Any `mallopt` of these parameters switches that policy
  off for good, so a parameter nobody set is put back to the value the dynamic policy converges
  to for large allocations (mmap threshold 32 MiB, trim threshold 64 MiB, top pad 128 KiB).

Every exit of the outermost scope — normal, exception, a generator closed early (cancel) —
restores those values and calls `malloc_trim(0)`, which hands the kept memory back to the OS.
Elsewhere than glibc (macOS, Windows, musl) this is a no-op.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import threading
from typing import Dict, Iterator, Mapping, Optional

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
_INSIDE = {M_MMAP_THRESHOLD: 1 << 30, M_TRIM_THRESHOLD: 1 << 30, M_TOP_PAD: 1 << 28}
_AFTER = {M_MMAP_THRESHOLD: 32 << 20, M_TRIM_THRESHOLD: 64 << 20, M_TOP_PAD: 128 << 10}
# parameter → (plain environment variable, GLIBC_TUNABLES name)
ENV_NAMES = {M_MMAP_THRESHOLD: ("MALLOC_MMAP_THRESHOLD_", "glibc.malloc.mmap_threshold"),
             M_TRIM_THRESHOLD: ("MALLOC_TRIM_THRESHOLD_", "glibc.malloc.trim_threshold"),
             M_TOP_PAD: ("MALLOC_TOP_PAD_", "glibc.malloc.top_pad")}

_lock = threading.Lock()
_depth = 0
_set_by_process: Dict[int, int] = {}  # parameter → value set through set_heap_option


@functools.lru_cache(maxsize=None)
def _glibc():
    """The C library when it is glibc (it has `mallopt` and `gnu_get_libc_version`), else None."""
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return lib if all(hasattr(lib, f) for f in ("gnu_get_libc_version", "mallopt", "malloc_trim")) else None


def _parse_size(text: str) -> Optional[int]:
    try:
        value = int(text.strip(), 0)  # glibc accepts decimal and 0x hex
    except ValueError:
        return None
    return value if value >= 0 else None


@functools.lru_cache(maxsize=1)
def start_environment() -> Mapping[str, str]:
    """The environment the process started with (what glibc read), else the current one."""
    try:
        with open("/proc/self/environ", "rb") as f:
            items = f.read().split(b"\0")
        env = dict(i.decode("utf-8", "replace").split("=", 1) for i in items if b"=" in i)
        return env
    except OSError:
        return dict(os.environ)


def settings_from_environment(environ: Mapping[str, str]) -> Dict[int, int]:
    """parameter → value that `environ` makes glibc use at start (GLIBC_TUNABLES wins)."""
    out: Dict[int, int] = {}
    for param, (plain, _) in ENV_NAMES.items():
        v = _parse_size(environ.get(plain, "")) if plain in environ else None
        if v is not None:
            out[param] = v
    tunables = dict(t.split("=", 1) for t in environ.get("GLIBC_TUNABLES", "").split(":") if "=" in t)
    for param, (_, name) in ENV_NAMES.items():
        v = _parse_size(tunables[name]) if name in tunables else None
        if v is not None:
            out[param] = v
    return out


def settings_before(environ: Optional[Mapping[str, str]] = None) -> Dict[int, int]:
    """The value of each parameter this module changes, as in force outside its scopes."""
    env = settings_from_environment(start_environment() if environ is None else environ)
    return {p: _set_by_process.get(p, env.get(p, _AFTER[p])) for p in _INSIDE}


def _apply(lib, settings: dict) -> None:
    for param, value in settings.items():
        lib.mallopt(ctypes.c_int(param), ctypes.c_int(value))


def set_heap_option(param: int, value: int, lib: Optional[object] = None) -> bool:
    """`mallopt(param, value)` remembered as the value to restore after every scope (for code of
    this process that wants its own setting). Returns glibc's success flag."""
    lib = lib if lib is not None else _glibc()
    with _lock:
        _set_by_process[param] = int(value)
        if lib is None or _depth > 0:  # inside a scope: applied when the scope ends
            return lib is not None
        return bool(lib.mallopt(ctypes.c_int(param), ctypes.c_int(int(value))))


@contextlib.contextmanager
def keep_freed_memory(enabled: bool = True, lib: Optional[object] = None,
                      environ: Optional[Mapping[str, str]] = None) -> Iterator[None]:
    """Within the block, large allocations reuse freed heap memory (see module doc).

    Nests and is thread-safe (the process-wide setting is changed by the outermost scope only).
    `lib` replaces the C library and `environ` the start environment (tests).
    """
    global _depth
    lib = lib if lib is not None else (_glibc() if enabled else None)
    if not enabled or lib is None:
        yield
        return
    with _lock:
        _depth += 1
        if _depth == 1:
            try:
                _apply(lib, _INSIDE)
            except BaseException:
                _depth -= 1
                _apply(lib, settings_before(environ))
                raise
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _apply(lib, settings_before(environ))
                lib.malloc_trim(ctypes.c_size_t(0))


def return_freed_memory() -> bool:
    """Give the heap's free pages back to the operating system (glibc `malloc_trim(0)`).

    Freed tensors of 10-70 MB stay in the heap (glibc raises its mmap threshold after the first
    large free), so a process that dropped its networks would keep their RSS; hosts call this
    after releasing models (nodes/loaders.py does when ComfyUI frees the weights). True when
    something was returned; a no-op elsewhere than glibc.
    """
    lib = _glibc()
    return bool(lib.malloc_trim(ctypes.c_size_t(0))) if lib is not None else False
