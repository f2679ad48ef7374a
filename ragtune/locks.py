"""One writer per output folder: the lock the writing commands (run, tune, index, export) share.

``with folder_lock(out): ...`` creates ``OUT.lock`` beside the folder, atomically
(``O_CREAT | O_EXCL``), before anything is written, and removes it when the block ends, also on an
error or Ctrl-C. The lock is a sibling, not a file inside, so that it never ends up in what the
folder holds (an index's manifest, an export's checksums) and survives ``--overwrite`` replacing
the folder. It holds JSON: the PID, the host name, the command and when it started. A second
process finds it and stops with a :class:`RagtuneError` (exit 2) naming the folder and the PID;
a lock whose PID is no longer alive on this host (a process that was killed) is taken over with a
warning; processes that find the same stale lock take it over one at a time (an ``flock`` on the
parent folder), so exactly one of them gets it. A lock from another host is never taken over (its
PID cannot be checked from here).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from ragtune.errors import RagtuneError
from ragtune.paths import check_writable_folder, reason

log = logging.getLogger(__name__)

UNREADABLE_GRACE_S = 30.0  # an empty or garbled lock this old is a crash between creating and writing it


def lock_path(folder: Path) -> Path:
    folder = Path(folder).resolve()
    return folder.with_name(folder.name + ".lock")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    except OSError:
        return False
    return True


def _read(path: Path) -> dict | None:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and isinstance(info.get("pid"), int) else None


def holder(folder: Path) -> dict | None:
    """The lock's JSON (PID, host, command, started) while a live process of this host holds ``folder``'s
    lock; None when nobody does (no lock, or a stale one a killed process left)."""
    info = _read(lock_path(folder))
    if info is None or info.get("host") != socket.gethostname() or not _pid_alive(info["pid"]):
        return None
    return info


def _stale(path: Path, info: dict | None) -> bool:
    if info is None:  # being written right now, or left half-written by a crash
        try:
            return time.time() - path.stat().st_mtime > UNREADABLE_GRACE_S
        except FileNotFoundError:
            return False
    return info.get("host") == socket.gethostname() and not _pid_alive(info["pid"])


def _describe(info: dict | None) -> str:
    if info is None:
        return "another process (its lock file is still being written)"
    return (f"PID {info['pid']} on {info.get('host', '?')}"
            + (f" ({info['command']})" if info.get("command") else "")
            + (f", since {info['started']}" if info.get("started") else ""))


@contextlib.contextmanager
def _takeover_guard(parent: Path) -> Iterator[None]:
    """An exclusive ``flock`` on the lock's parent folder while a stale lock is re-read and removed.

    Without it two processes that both found the same stale lock could both remove "it", the second
    removing the first one's fresh lock, and both would write the folder. Where ``fcntl`` is missing
    (Windows) the takeover is unguarded."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    fd = os.open(parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the flock


@contextlib.contextmanager
def folder_lock(folder: Path, command: str | None = None, flag: str = "--out") -> Iterator[Path]:
    """Hold ``FOLDER.lock`` while the block writes ``folder``; yields the lock file's path.

    First checks that ``folder`` can be written (:func:`ragtune.paths.check_writable_folder`; a
    RagtuneError naming ``flag``, the folder and the reason), so a command fails before its work."""
    check_writable_folder(folder, flag)
    path = lock_path(folder)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a parent is a file, or not writable
        raise RagtuneError(f"{folder}: cannot create its parent folder {path.parent} ({exc.strerror or exc})") from None
    mine = {"pid": os.getpid(), "host": socket.gethostname(),
            "command": command if command is not None else " ".join(["ragtune", *sys.argv[1:]]),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"), "token": uuid.uuid4().hex}
    for _ in range(5):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            info = _read(path)
            if not _stale(path, info):
                raise RagtuneError(
                    f"{Path(folder)} is being written by {_describe(info)}; wait for it to finish or choose "
                    f"another folder (if no such process is running, delete the lock file {path})") from None
            with _takeover_guard(path.parent):  # one process at a time re-checks and removes a stale lock
                if _read(path) != info or not _stale(path, info):
                    continue  # another process took it over first: try again (and find its live lock)
                log.warning("taking over the stale lock %s of %s, which is no longer running", path, _describe(info))
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            continue
        except OSError as exc:  # a name too long once ".lock" is added, a read-only file system, ...
            raise RagtuneError(f"{flag} {Path(folder)}: cannot create its lock file {path} ({reason(exc)})") from None
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(mine, f)
        break
    else:
        raise RagtuneError(f"could not take the lock {path} for {Path(folder)}; another process keeps taking it")
    try:
        yield path
    finally:
        held = _read(path)
        if held is not None and held.get("token") == mine["token"]:  # never remove another process's lock
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
