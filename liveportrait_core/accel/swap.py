"""Module swapping for derived copies: replace submodules of a network in place."""
from __future__ import annotations

from typing import Callable, Optional

from torch import nn


def swap_modules(net: nn.Module, make: Callable[[nn.Module], Optional[nn.Module]]) -> int:
    """Replace each submodule `m` of `net` (in place, one pass over the current modules) by
    `make(m)` when that is not None. Returns the number replaced."""
    n = 0
    for parent in list(net.modules()):
        for name, child in list(parent._modules.items()):
            new = make(child) if child is not None else None
            if new is not None:
                parent._modules[name] = new
                n += 1
    return n
