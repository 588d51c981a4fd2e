"""LivePortrait core library: networks, weights, faces, motion math, rendering, video I/O.

A plain library: it imports no ComfyUI module and is usable from its own CLI
(`python -m liveportrait_core --help`) and from tests. Importing it is cheap: heavy
sub-modules are imported where they are used.
"""

__version__ = "0.1.0"
