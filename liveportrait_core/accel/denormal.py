"""Scoped flush-denormals-to-zero for CPU inference, on every intra-op thread.

`torch.set_flush_denormal` sets the FTZ/DAZ bits of the *calling* thread only, while torch's
convolutions run on the OpenMP worker threads. `flush_denormal()` therefore also runs the
setting once on each thread of the calling thread's OpenMP team (through libgomp's
`GOMP_parallel`, which torch ships). When the OpenMP runtime is not libgomp, only the calling
thread is switched (still correct, just less effective).

Putting things back: on entering the outermost scope of a thread, the state of that thread and
of each thread of its team is read (a subnormal input reads as zero when flushing is on), and on
every exit — normal, exception, a generator closed early (cancel) — each thread gets back
exactly the state it had, whatever happened in between; a thread that already flushed is left
flushing. Scopes nest per thread; other threads' scopes are independent.

Flushing changes nothing visible here: values below 1.2e-38 become 0 (identical output images;
the warping module runs faster in float32, see benchmarks/networks.py).
"""
from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import threading
from typing import Callable, Dict, Iterator, Optional

import torch

_probe_lock = threading.Lock()
_team: Optional["_Team"] = None
_team_probe_done = False
_local = threading.local()  # depth and saved state of the scopes of each thread


def flush_active() -> bool:
    """Is FTZ/DAZ active on the calling thread? (a subnormal input then reads as zero)."""
    x = torch.tensor([1e-39], dtype=torch.float32)
    return bool((x * 1.0).item() == 0.0)


class _Team:
    """Runs a function once on every thread of the calling thread's OpenMP team (libgomp)."""

    def __init__(self, gomp):
        self.gomp = gomp
        fn_type = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
        gomp.GOMP_parallel.argtypes = [fn_type, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
        gomp.GOMP_parallel.restype = None
        gomp.omp_get_thread_num.restype = ctypes.c_int
        self._fn: Callable[[int], None] = lambda i: None
        self._body = fn_type(self._run_one)  # kept alive as long as the team runner

    def _run_one(self, _arg) -> None:  # on every team thread (ctypes takes the GIL)
        self._fn(int(self.gomp.omp_get_thread_num()))

    def run(self, fn: Callable[[int], None], threads: int) -> None:
        self._fn = fn
        try:
            self.gomp.GOMP_parallel(self._body, None, max(1, threads), 0)
        finally:
            self._fn = lambda i: None

    def states(self) -> Dict[int, bool]:
        """thread number → is flushing on, for each thread of the team."""
        out: Dict[int, bool] = {}
        self.run(lambda i: out.__setitem__(i, flush_active()), torch.get_num_threads())
        return out

    def set(self, states: Dict[int, bool]) -> None:
        """Set each team thread to its state in `states` (threads not listed: off)."""
        self.run(lambda i: torch.set_flush_denormal(states.get(i, False)), max(len(states), 1))


def _make_team() -> Optional[_Team]:
    libs = glob.glob(os.path.join(os.path.dirname(torch.__file__), "lib", "libgomp*.so*"))
    if not libs:
        return None
    try:
        return _Team(ctypes.CDLL(libs[0]))
    except (OSError, AttributeError):
        return None


def team() -> Optional[_Team]:
    """The libgomp team runner, or None when the OpenMP runtime is not libgomp."""
    global _team, _team_probe_done
    with _probe_lock:
        if not _team_probe_done:
            _team, _team_probe_done = _make_team(), True
    return _team


def thread_states() -> tuple:
    """(calling thread's state, {team thread number: state}) — what a scope saves."""
    t = team()
    return flush_active(), (t.states() if t is not None else {})


def _restore(saved: tuple) -> None:
    caller, team_states = saved
    t = team()
    if t is not None and team_states:
        t.set(team_states)
    torch.set_flush_denormal(caller)  # last: thread 0 of the team is the calling thread


@contextlib.contextmanager
def flush_denormal(enabled: bool = True) -> Iterator[None]:
    """Flush denormals to zero on the CPU inside the block; put back each thread's state after."""
    if not enabled:
        yield
        return
    depth = getattr(_local, "depth", 0)
    if depth == 0:
        saved = thread_states()
        try:
            if not (saved[0] and all(saved[1].values())):  # not all on already
                t = team()
                torch.set_flush_denormal(True)
                if t is not None:
                    t.set({i: True for i in range(max(len(saved[1]), torch.get_num_threads()))})
        except Exception:  # noqa: BLE001 - unsupported CPU: run without (and leave it as it was)
            _restore(saved)
        _local.saved = saved
    _local.depth = depth + 1
    try:
        yield
    finally:
        _local.depth -= 1
        if _local.depth == 0:
            saved, _local.saved = _local.saved, None
            _restore(saved)
