"""Process-wide CPU state scopes: glibc heap tuning (accel/heap.py) and flush-to-zero
(accel/denormal.py) are put back exactly after every exit path."""
from __future__ import annotations

import ctypes
import threading

import pytest
import torch

from liveportrait_core.accel import heap
from liveportrait_core.accel.heap import (_AFTER, _INSIDE, M_MMAP_THRESHOLD, M_TOP_PAD, M_TRIM_THRESHOLD, _glibc,
                                          keep_freed_memory)


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


# ------------------------------------------------------------------ what "before" is, exit paths

USER_ENV = {"MALLOC_TRIM_THRESHOLD_": "1048576", "MALLOC_MMAP_THRESHOLD_": "65536",
            "GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=0x20000:glibc.other=1"}
USER = {M_MMAP_THRESHOLD: 0x20000, M_TRIM_THRESHOLD: 1048576, M_TOP_PAD: _AFTER[M_TOP_PAD]}


def _last_settings(lib) -> dict:
    """parameter → the value of the last mallopt call for it."""
    return {c[1]: c[2] for c in lib.calls if c[0] == "mallopt"}


def test_user_environment_settings_are_what_is_restored():
    assert heap.settings_from_environment(USER_ENV) == {M_MMAP_THRESHOLD: 0x20000, M_TRIM_THRESHOLD: 1048576}
    assert heap.settings_from_environment({"MALLOC_TOP_PAD_": "junk"}) == {}
    lib = _RecordingLibc()
    with keep_freed_memory(lib=lib, environ=USER_ENV):
        assert _last_settings(lib) == _INSIDE
    assert _last_settings(lib) == USER and lib.calls[-1] == ("malloc_trim", 0)


def test_a_setting_made_through_the_module_is_restored(monkeypatch):
    monkeypatch.setattr(heap, "_set_by_process", {})
    lib = _RecordingLibc()
    assert heap.set_heap_option(M_TOP_PAD, 4096, lib=lib)
    with keep_freed_memory(lib=lib, environ=USER_ENV):
        assert heap.set_heap_option(M_TOP_PAD, 8192, lib=lib)  # inside: remembered, applied after
        assert _last_settings(lib)[M_TOP_PAD] == _INSIDE[M_TOP_PAD]
    assert _last_settings(lib) == {**USER, M_TOP_PAD: 8192}


def _scoped_generator(lib):
    with keep_freed_memory(lib=lib, environ=USER_ENV):
        yield 1
        yield 2


@pytest.mark.parametrize("path", ["normal", "exception", "closed early", "abandoned"])
def test_heap_restored_after_every_exit_path(path):
    lib = _RecordingLibc()
    gen = _scoped_generator(lib)
    assert next(gen) == 1 and _last_settings(lib) == _INSIDE
    if path == "normal":
        assert list(gen) == [2]
    elif path == "exception":
        with pytest.raises(RuntimeError):
            gen.throw(RuntimeError("boom"))
    elif path == "closed early":
        gen.close()
    else:
        del gen  # dropped without closing (CPython closes it at once)
    assert _last_settings(lib) == USER and lib.calls[-1] == ("malloc_trim", 0) and heap._depth == 0


def _tiny_render_models():
    from test_render import _tiny_models

    return _tiny_models()


@pytest.mark.parametrize("path", ["normal", "exception", "closed early", "cancelled"])
def test_render_leaves_heap_and_flush_to_zero_as_they_were(monkeypatch, path):
    """Through the real Animator: after each way a render can end, the heap settings are the
    user's and every thread's flush-to-zero state is what it was before."""
    from test_render import _crops, _tiny_plan

    from liveportrait_core.accel import denormal
    from liveportrait_core.progress import Cancelled
    from liveportrait_core.render import Animator

    lib = _RecordingLibc()
    monkeypatch.setattr(heap, "_glibc", lambda: lib)
    monkeypatch.setattr(heap, "start_environment", lambda: USER_ENV)
    before = denormal.thread_states()
    calls = []

    def cancel():
        calls.append(1)
        if path == "exception" and len(calls) == 3:
            raise RuntimeError("boom")
        return path == "cancelled" and len(calls) == 3

    chunks = Animator(_tiny_render_models(), batch_size=2).iter_render(_tiny_plan(6, 1), _crops(1), cancel=cancel)
    if path == "normal":
        assert len(list(chunks)) == 3
    elif path == "closed early":
        next(chunks)
        assert _last_settings(lib) == _INSIDE  # the scope spans the yields
        chunks.close()
    else:
        with pytest.raises(RuntimeError if path == "exception" else Cancelled):
            list(chunks)
    assert _last_settings(lib) == USER and lib.calls[-1] == ("malloc_trim", 0) and heap._depth == 0
    assert denormal.thread_states() == before


# ----------------------------------------------------------------------------- flush to zero


def _flush_generator():
    from liveportrait_core.accel.denormal import flush_denormal

    with flush_denormal():
        yield 1
        yield 2


@pytest.mark.parametrize("path", ["normal", "exception", "closed early"])
@pytest.mark.parametrize("was_on", [False, True])
def test_flush_to_zero_put_back_after_every_exit_path(path, was_on):
    from liveportrait_core.accel import denormal

    torch.set_flush_denormal(was_on)
    try:
        before = denormal.thread_states()
        assert before[0] is was_on
        gen = _flush_generator()
        next(gen)
        assert denormal.flush_active()
        if path == "normal":
            list(gen)
        elif path == "exception":
            with pytest.raises(RuntimeError):
                gen.throw(RuntimeError("boom"))
        else:
            gen.close()
        assert denormal.thread_states() == before
    finally:
        torch.set_flush_denormal(False)


def test_flush_to_zero_restores_each_team_thread_as_it_was():
    """A team whose threads differ (caller on, workers off) gets exactly that back."""
    from liveportrait_core.accel import denormal

    t = denormal.team()
    if t is None:
        pytest.skip("the OpenMP runtime is not libgomp: only the calling thread is switched")
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    t.set({0: True, 1: False})  # thread 0 (the caller) on, the other off
    try:
        before = denormal.thread_states()
        assert before[0] and before[1][0] and not all(before[1].values())
        with denormal.flush_denormal():
            assert all(denormal.thread_states()[1].values())
        assert denormal.thread_states() == before
    finally:
        t.set({0: False, 1: False})
        torch.set_flush_denormal(False)
        torch.set_num_threads(threads)
