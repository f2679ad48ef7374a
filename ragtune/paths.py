"""Checking, before any work, that an output path can be written; and writing files through a temporary name.

Every command that writes a file or a folder calls :func:`check_writable_file` or
:func:`check_writable_folder` on it before the expensive part (loading a model, training), so that a
path that cannot be written is one :class:`~ragtune.errors.RagtuneError` naming the flag, the path
and the reason, e.g.::

    --output out/p.csv: cannot create its parent folder: out is a file, not a folder

The checks: the path (or, when it does not exist yet, the nearest folder above it that does) is a
folder and writable (``os.access``), each new name is at most ``PC_NAME_MAX`` bytes (255 where the
system does not say), and a file output is not an existing folder. A write can still fail later (a
full disk): :func:`write_atomically` writes through a temporary sibling ``.NAME.tmp-PID``, removes
it on any failure, and turns an ``OSError`` into a RagtuneError naming the flag and path.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from ragtune.errors import RagtuneError

DEFAULT_NAME_MAX = 255


def _name_max(folder: Path) -> int:
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return DEFAULT_NAME_MAX


def reason(exc: OSError) -> str:
    """A short reason for ``exc``: its strerror ("No space left on device"), else its text."""
    if exc.errno == errno.ENOSPC:
        return "no space left on device"
    return (exc.strerror or str(exc) or type(exc).__name__).rstrip(".")


def _nearest_existing(path: Path) -> tuple[Path, list[str]]:
    """The nearest existing path at or above ``path``, and the names below it that do not exist yet."""
    missing: list[str] = []
    current = path
    while not os.path.lexists(current):
        if current.parent == current:
            break
        missing.append(current.name)
        current = current.parent
    return current, missing[::-1]


def _check_creatable(path: Path, flag: str) -> None:
    """``path`` does not exist (or exists): the folders above it must exist or be creatable, and be writable."""
    anchor, missing = _nearest_existing(path)
    if anchor != path and not os.path.isdir(anchor):
        raise RagtuneError(f"{flag} {path}: cannot create its parent folder: {anchor} is a file, not a folder")
    limit_folder = anchor if os.path.isdir(anchor) else anchor.parent
    limit = _name_max(limit_folder)
    for name in missing:
        size = len(os.fsencode(name))
        if size > limit:
            shown = name if len(name) <= 40 else f"{name[:20]}...{name[-12:]}"
            raise RagtuneError(f"{flag} {path}: the name {shown!r} is {size} bytes long, over the file system's "
                               f"limit of {limit} bytes; choose a shorter name")
    if anchor != path and not os.access(anchor, os.W_OK | os.X_OK):
        raise RagtuneError(f"{flag} {path}: the folder {anchor} is not writable (permission denied); "
                           "choose another place or change its permissions")


def check_writable_file(path: str | Path, flag: str) -> Path:
    """Raise a RagtuneError naming ``flag`` unless the file ``path`` can be (re)written; returns it as a Path.

    Whether an existing file may be replaced (``--overwrite``) is the caller's question."""
    given = str(path)
    path = Path(path)
    if given.endswith(("/", os.sep)) or os.path.isdir(path):
        raise RagtuneError(f"{flag} {given} is a folder, not a file; give a file name (e.g. one inside that folder)")
    _check_creatable(path, flag)
    if os.path.lexists(path) and not os.access(path.parent, os.W_OK | os.X_OK):
        raise RagtuneError(f"{flag} {path}: the folder {path.parent} is not writable (permission denied); "
                           "choose another place or change its permissions")
    return path


def check_writable_folder(path: str | Path, flag: str) -> Path:
    """Raise a RagtuneError naming ``flag`` unless the folder ``path`` exists and is writable, or can be
    created (with its parents); returns it as a Path."""
    path = Path(path)
    if os.path.lexists(path) and not os.path.isdir(path):
        raise RagtuneError(f"{flag} {path} is a file, not a folder; give a folder")
    _check_creatable(path, flag)
    if os.path.isdir(path) and not os.access(path, os.W_OK | os.X_OK):
        raise RagtuneError(f"{flag} {path}: the folder is not writable (permission denied); "
                           "choose another place or change its permissions")
    return path


def temp_path(path: Path) -> Path:
    """The temporary sibling a file is written to before it is renamed to ``path``: ``.NAME.tmp-PID``, or
    ``.ragtune.tmp-PID`` where that would be a name too long for the file system."""
    name = f".{path.name}.tmp-{os.getpid()}"
    if len(os.fsencode(name)) > DEFAULT_NAME_MAX:
        name = f".ragtune.tmp-{os.getpid()}"
    return path.with_name(name)


@contextlib.contextmanager
def os_errors(path: str | Path, flag: str | None = None) -> Iterator[None]:
    """Turn an ``OSError`` raised in the block into a RagtuneError naming ``flag`` and ``path``."""
    try:
        yield
    except OSError as exc:
        where = f"{flag} {path}" if flag else str(path)
        raise RagtuneError(f"{where}: cannot write it ({reason(exc)})") from exc


def write_atomically(path: str | Path, write: Callable[[Path], object], flag: str | None = None) -> None:
    """``write(tmp)`` to a temporary sibling, then rename it onto ``path``: a failure leaves neither a
    half-written ``path`` nor the temporary file, and an ``OSError`` becomes a RagtuneError."""
    path = Path(path)
    tmp = temp_path(path)
    with os_errors(path, flag):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            write(tmp)
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(OSError):
                if os.path.lexists(tmp):
                    tmp.unlink()
