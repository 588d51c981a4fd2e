"""Path checks shared by every command and function that reads or writes files.

* `as_path(value, what)`: a `str | os.PathLike` argument as a str, or one `InputError`
  naming the argument (None, numbers, tensors… are refused, never turned into "./None").
* `check_distinct(output, inputs)`: refuse an output that *is* one of the inputs (same file
  through a symlink, a relative path or another spelling such as `./x/../x`), before anything
  is read, so no input is ever replaced by its own animation.
* `probe_output(output)`: find an output that cannot be written (missing folder, an existing
  folder as the name, a read-only or virtual file system such as /proc) *before* any work, by
  creating and deleting a temporary file in the real destination folder.
* `temp_path_for` / `write_bytes_atomic`: outputs are written to a hidden temporary file in the
  destination folder and moved over the final name with `os.replace`, so an existing file is
  only ever replaced by a complete one.
"""
from __future__ import annotations

import os
import tempfile
from typing import Mapping, Optional

from .errors import InputError, VideoError

TEMP_MARK = ".part"  # every temporary output name contains it (tests and cleanup look for it)


def as_path(value, what: str) -> str:
    """`value` (str or os.PathLike) as a str; InputError naming `what` for anything else."""
    if isinstance(value, (str, os.PathLike)):
        path = os.fspath(value)
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if not path.strip():
            raise InputError(f"{what}: the path is empty; give a file name.")
        return path
    raise InputError(f"{what}: expected a file path (str or os.PathLike), got "
                     f"{'None' if value is None else type(value).__name__}. Pass the path of the file.")


def _real(path: str) -> str:
    return os.path.normcase(os.path.realpath(os.path.abspath(os.path.expanduser(path))))


def same_file(a: str, b: str) -> bool:
    """True when `a` and `b` name the same file (links, relative paths and `..` resolved;
    hard links too when both exist)."""
    if _real(a) == _real(b):
        return True
    try:
        return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)
    except OSError:
        return False


def check_distinct(output: str, inputs: Mapping[str, Optional[str]], out_name: str = "output") -> None:
    """InputError when `output` is the same file as one of `inputs` (name → path; None skipped).

    A folder input (image sequence) is also protected against an output written inside it.
    """
    for name, path in inputs.items():
        if path is None:
            continue
        if same_file(output, path):
            raise InputError(
                f"{out_name} '{output}' is the same file as the {name} '{path}': writing it would "
                f"destroy the {name}. Choose another {out_name} name.")
        if os.path.isdir(path) and _real(os.path.dirname(os.path.abspath(output))) == _real(path):
            raise InputError(
                f"{out_name} '{output}' is inside the {name} folder '{path}', which is read as an image "
                f"sequence: the output would become one of its frames. Choose another folder for the {out_name}.")


def probe_output(output: str, out_name: str = "output") -> bool:
    """Check that `output` can be written, before any work. Returns True when it already exists
    (it will be replaced by a complete file at the end).

    Raises VideoError: the folder does not exist, `output` is an existing folder, or a file
    cannot be created in the folder (read-only, no permission, a virtual file system…).
    """
    folder = os.path.dirname(os.path.abspath(output))
    if os.path.isdir(output):
        raise VideoError(f"{out_name} '{output}' is an existing folder; give a file name inside it, "
                         f"e.g. '{os.path.join(output, 'out' + (os.path.splitext(output)[1] or '.mp4'))}'.")
    if not os.path.isdir(folder):
        raise VideoError(f"{out_name} folder '{folder}' does not exist. Create it or choose another {out_name}.")
    try:
        os.remove(temp_path_for(output))  # (temp_path_for removes its file itself if interrupted)
    except OSError as e:
        raise VideoError(f"cannot write {out_name} '{output}': {e.strerror or e} in folder '{folder}'. "
                         f"Choose a folder you can write to.") from None
    exists = os.path.lexists(output)
    if exists and not os.path.isfile(output):
        raise VideoError(f"{out_name} '{output}' exists and is not a regular file; choose another name.")
    return exists


def temp_path_for(path: str) -> str:
    """A new empty hidden file `.<name>.<random>.part<ext>` next to `path` (same folder, so
    `os.replace` is atomic), with the permissions of a normal new file."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    name = os.path.basename(path)
    base, ext = os.path.splitext(name)
    if base.lower().endswith(".lpmotion"):  # keep double extensions readable
        base, ext = base[:-len(".lpmotion")], ".lpmotion" + ext
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=f"{TEMP_MARK}{ext}", dir=folder)
    try:  # a signal (SIGTERM → exception) between here and the caller's cleanup must not leave it
        os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        try:
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the final file normal permissions
        except OSError:
            pass
    except BaseException:
        os.remove(tmp)
        raise
    return tmp


def write_bytes_atomic(path: str, data: bytes) -> str:
    """Write `data` to `path` through a temporary file in the same folder + os.replace; the
    temporary file is removed on any failure (also KeyboardInterrupt / SystemExit)."""
    tmp = temp_path_for(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path
