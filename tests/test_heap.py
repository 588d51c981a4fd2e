"""Scoped glibc heap tuning (liveportrait_core/heap.py)."""
from __future__ import annotations

import ctypes
import threading

from liveportrait_core.heap import _AFTER, _INSIDE, _glibc, keep_freed_memory


class _RecordingLibc:
    def __init__(self):
        self.calls = []

    def mallopt(self, param, value):
        self.calls.append(("mallopt", param.value, value.value))
        return 1

    def malloc_trim(self, pad):
        self.calls.append(("malloc_trim", pad.value))
        return 1


def test_outermost_scope_sets_and_restores_once():
    lib = _RecordingLibc()
    with keep_freed_memory(lib=lib):
        assert lib.calls == [("mallopt", p, v) for p, v in _INSIDE.items()]
        with keep_freed_memory(lib=lib):  # nested: no change
            pass
        assert len(lib.calls) == len(_INSIDE)
    assert lib.calls[len(_INSIDE):] == [("mallopt", p, v) for p, v in _AFTER.items()] + [("malloc_trim", 0)]
    assert _INSIDE[-3] >= 1 << 30 and _AFTER[-3] == 32 << 20  # mmap threshold in / after


def test_disabled_or_no_glibc_changes_nothing():
    lib = _RecordingLibc()
    with keep_freed_memory(enabled=False, lib=lib):
        pass
    assert lib.calls == []


def test_restored_when_the_block_raises_and_across_threads():
    lib = _RecordingLibc()
    inside = threading.Event()
    leave = threading.Event()

    def worker():
        with keep_freed_memory(lib=lib):
            inside.set()
            leave.wait(5)

    t = threading.Thread(target=worker)
    t.start()
    inside.wait(5)
    try:
        with keep_freed_memory(lib=lib):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert len(lib.calls) == len(_INSIDE)  # the other thread's scope is still open
    leave.set()
    t.join()
    assert lib.calls[-1] == ("malloc_trim", 0)


def test_real_glibc_accepts_the_settings():
    lib = _glibc()
    if lib is None:  # not glibc: the scope is a documented no-op
        with keep_freed_memory():
            return
    for p, v in {**_INSIDE, **_AFTER}.items():
        assert lib.mallopt(ctypes.c_int(p), ctypes.c_int(v)) == 1
    with keep_freed_memory():
        buf = bytearray(64 << 20)  # a large block inside the scope works as usual
        assert len(buf) == 64 << 20
